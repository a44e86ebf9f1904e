"""Reading and writing images: any common format in, 8-bit RGB numpy arrays out.

Arrays are HxWx3 uint8 RGB; tensors are float32 NCHW RGB in [0, 1].
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

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
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
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


def read_image(path: str | Path) -> np.ndarray:
    """Read an image as HxWx3 uint8 RGB.

    Grayscale becomes 3 channels, alpha is dropped (warned once), 16-bit becomes 8-bit.

    Args:
        path: PNG, JPEG, BMP, WebP or TIFF file.

    Raises:
        QdukdError: the file is missing, unreadable or corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise QdukdError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            return _to_rgb8(img, path)
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise QdukdError(f"cannot read image {path}: {e} (is the file corrupt or truncated?)") from None


def write_image(path: str | Path, img: np.ndarray) -> None:
    """Write an HxWx3 uint8 image atomically (temp file, then rename)."""
    with atomic_path(path) as tmp:
        # The temp name ends in .tmp, so name the format explicitly.
        Image.fromarray(img).save(tmp, format=Image.registered_extensions().get(Path(path).suffix.lower()))


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
