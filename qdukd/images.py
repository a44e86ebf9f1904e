"""Reading and writing images: any common format in, 8-bit RGB numpy arrays out.

Arrays are HxWx3 uint8 RGB; tensors are float32 NCHW RGB in [0, 1].
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .atomic import atomic_path
from .errors import QdukdError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")

_warned_alpha = False


def list_images(folder: str | Path) -> list[Path]:
    """Sorted image files directly inside ``folder``.

    Raises:
        QdukdError: the folder is missing or holds no image.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise QdukdError(f"image folder not found: {folder} (pass an existing directory)")
    # A folder named like an image is not one; a broken link still is listed, to be reported as missing.
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and not p.is_dir())
    if not files:
        raise QdukdError(f"no images in {folder} (expected {', '.join(IMAGE_SUFFIXES)} files)")
    return files


def _to_rgb8(img: Image.Image, path: Path) -> np.ndarray:
    global _warned_alpha
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16-bit grayscale: keep the top 8 bits, as PIL itself does for 16-bit RGB.
        arr = (np.clip(np.asarray(img, dtype=np.int64), 0, 65535) >> 8).astype(np.uint8)
        return np.repeat(arr[..., None], 3, axis=2)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        if not _warned_alpha:
            warnings.warn(f"{path}: alpha channel dropped (qdukd works on RGB)", stacklevel=3)
            _warned_alpha = True
    return np.array(img.convert("RGB"), dtype=np.uint8)


def set_max_pixels(limit: int) -> None:
    """Set the largest image, in pixels, that :func:`read_image` and :func:`image_size` accept.

    This is Pillow's guard against decompression bombs (``PIL.Image.MAX_IMAGE_PIXELS``, by default
    89,478,485 pixels, about 9500x9500): a small crafted file can decode to gigabytes. Over it a
    file is refused with a message that names the ``--max-pixels`` option, the name every qdukd
    CLI that calls this uses for it.

    Args:
        limit: the most pixels (width x height) an image may have; 0 = no limit.

    Raises:
        QdukdError: ``limit`` is negative.
    """
    if limit < 0:
        raise QdukdError(f"--max-pixels must be >= 0 (0 = no limit), got {limit}")
    Image.MAX_IMAGE_PIXELS = limit or None


def _too_many_pixels(path: Path, error: Exception) -> str:
    # Pillow does not attach the size to the error, only to its message ("Image size (N pixels) ...").
    found = re.search(r"\((\d+) pixels\)", str(error))
    pixels = f"{int(found.group(1)):,} pixels" if found else "more pixels"
    return (f"{path} has {pixels}, over the limit of {Image.MAX_IMAGE_PIXELS:,} that guards against "
            "decompression bombs; if you trust the file, raise it with --max-pixels N (0 = no limit)")


@contextmanager
def _open(path: str | Path) -> Iterator[Image.Image]:
    """Pillow's image at ``path``; any failure, in opening or in the block, is one QdukdError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise QdukdError(f"image not found: {path}")
    try:
        with warnings.catch_warnings():
            # Pillow only warns between its limit and twice that; refuse the whole range alike.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as img:
                yield img
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise QdukdError(_too_many_pixels(path, e)) from None
    except MemoryError:
        raise QdukdError(f"not enough memory to read image {path}") from None
    except Exception as e:  # Pillow's format plugins raise many types on a malformed file
        if isinstance(e, OSError) and e.errno is not None:  # the file system's error (permission, I/O), not the data's
            raise QdukdError(f"cannot read image {path}: {e.strerror}") from None
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise QdukdError(f"cannot read image {path}: {reason} (damaged or incomplete? copy it again)") from None


def image_size(path: str | Path) -> tuple[int, int]:
    """An image's (width, height), from its header only: a quick check before a long batch.

    Args:
        path: PNG, JPEG, BMP, WebP or TIFF file.

    Raises:
        QdukdError: the file is missing, not an image, or over the pixel limit (:func:`set_max_pixels`).
            Truncated pixel data is only found by :func:`read_image`.
    """
    with _open(path) as img:
        return img.size


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as HxWx3 uint8 RGB.

    Grayscale becomes 3 channels, alpha is dropped (warned once), 16-bit becomes 8-bit.

    Args:
        path: PNG, JPEG, BMP, WebP or TIFF file.

    Raises:
        QdukdError: the file is missing, unreadable, corrupt, truncated or over the pixel limit
            (:func:`set_max_pixels`).
    """
    with _open(path) as img:
        img.load()
        return _to_rgb8(img, Path(path))


def write_image(path: str | Path, img: np.ndarray | Image.Image) -> None:
    """Write an image atomically (temp file, then rename), in the format its suffix names.

    Args:
        path: the file; its folder is created if missing.
        img: HxWx3 uint8 RGB, or a Pillow image (saved as it is, without a copy).
    """
    if isinstance(img, np.ndarray):
        img = Image.fromarray(img)
    with atomic_path(path) as tmp:
        # The temp name ends in .tmp, so name the format explicitly.
        img.save(tmp, format=Image.registered_extensions().get(Path(path).suffix.lower()))


def modcrop(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop H and W down to multiples of ``scale`` (top-left anchored, as MATLAB's modcrop)."""
    h, w = img.shape[:2]
    return img[: h - h % scale, : w - w % scale]


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 1x3xHxW float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float().div_(255.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """1x3xHxW (or 3xHxW) float in [0, 1] -> HxWx3 uint8, clamped and rounded."""
    if x.dim() == 4:
        x = x[0]
    return x.detach().float().clamp(0, 1).mul(255.0).round().byte().permute(1, 2, 0).cpu().numpy()
