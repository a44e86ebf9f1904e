"""Datasets: HR-only folders and BasicSR-layout sets, benchmark loading, training patches.

A *set* is either an HR folder (LR made with MATLAB bicubic) or a BasicSR-layout folder
``ROOT/HR/<name>.png`` + ``ROOT/LR_bicubic/X{s}/<name>x{s}.png`` (LR files used when present).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from .errors import QdukdError
from .images import list_images, modcrop, read_image
from .resize import imresize


@dataclass(frozen=True)
class ImagePair:
    """One HR image and, if the set provides it, its LR file."""

    name: str
    hr_path: Path
    lr_path: Path | None


def read_set_file(path: Path) -> list[Path]:
    """The HR images a set file lists: one path per line, relative to the file; ``#`` comments.

    Raises:
        QdukdError: the file is empty, or lists an image that does not exist.
    """
    lines = [line.split("#", 1)[0].strip() for line in path.read_text(encoding="utf-8").splitlines()]
    files = [(path.parent / line).resolve() for line in lines if line]
    if not files:
        raise QdukdError(f"set file {path} lists no images (one image path per line, relative to the file)")
    missing = next((f for f in files if not f.is_file()), None)
    if missing is not None:
        raise QdukdError(f"set file {path} lists {missing}, which does not exist")
    return files


def find_pairs(root: str | Path, scale: int) -> list[ImagePair]:
    """List the images of a set: an HR folder, a BasicSR layout, or a set file (``.txt``).

    Args:
        root: an HR folder, a folder with ``HR/`` (and optionally ``LR_bicubic/X{scale}/``), or a
            ``.txt`` file listing HR images (see :func:`read_set_file`; LR made by MATLAB bicubic).
        scale: SR scale; selects the LR subfolder.

    Raises:
        QdukdError: missing or empty folder, or an LR folder that lacks some images.
    """
    root = Path(root)
    if root.is_file() and root.suffix == ".txt":
        return [ImagePair(f.stem, f, None) for f in read_set_file(root)]
    if not root.is_dir():
        raise QdukdError(f"data folder {root} is a file; pass a folder of images" if root.exists()
                         else f"data folder not found: {root}")
    hr_dir = root / "HR" if (root / "HR").is_dir() else root
    lr_dir = root / "LR_bicubic" / f"X{scale}"
    has_lr = hr_dir != root and lr_dir.is_dir()
    pairs = []
    for hr in list_images(hr_dir):
        lr = None
        if has_lr:
            lr = lr_dir / f"{hr.stem}x{scale}{hr.suffix}"
            if not lr.is_file():
                raise QdukdError(f"LR image missing: {lr} (for {hr}); add it or remove {lr_dir} "
                                 "to make LR with MATLAB bicubic")
        pairs.append(ImagePair(hr.stem, hr, lr))
    return pairs


def load_pair(pair: ImagePair, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """(LR, HR) uint8 arrays: HR mod-cropped to the scale, LR read or made by MATLAB bicubic.

    Raises:
        QdukdError: unreadable image, or an LR file whose size is not HR / scale.
    """
    hr = read_image(pair.hr_path)
    if min(hr.shape[:2]) < scale:
        raise QdukdError(f"{pair.hr_path} is {hr.shape[1]}x{hr.shape[0]}, smaller than the x{scale} scale: "
                         "remove it from the set")
    hr = modcrop(hr, scale)
    if pair.lr_path is None:
        return imresize(hr, 1.0 / scale), hr
    lr = read_image(pair.lr_path)
    want = (hr.shape[0] // scale, hr.shape[1] // scale)
    if lr.shape[:2] != want:
        raise QdukdError(f"{pair.lr_path} is {lr.shape[1]}x{lr.shape[0]} but HR {pair.hr_path} "
                         f"needs {want[1]}x{want[0]} at x{scale}: wrong --scale or wrong LR folder?")
    return lr, hr


def set_name(root: str | Path) -> str:
    """A set's display name: its folder name (the parent's, for a bare ``HR/`` folder; the stem of
    a set file)."""
    root = Path(root).resolve()
    return root.parent.name if root.name == "HR" else root.stem if root.suffix == ".txt" else root.name


def load_set(root: str | Path, scale: int, progress: bool = False) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """Every (name, LR, HR) of a set, in file-name order."""
    pairs = find_pairs(root, scale)
    it = tqdm(pairs, desc=f"load {set_name(root)}", leave=False, disable=not progress)
    return [(p.name, *load_pair(p, scale)) for p in it]


def random_crop_flip(lr: np.ndarray, hr: np.ndarray, scale: int, patch: int, rng: np.random.Generator,
                     augment: bool = True, aligned: tuple[np.ndarray, ...] = ()
                     ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...]]:
    """Aligned random crop (``patch`` LR pixels) with flips and 90-degree rotations.

    Args:
        lr: HxWx3 LR image.
        hr: (H*scale)x(W*scale)x3 HR image.
        scale: SR scale.
        patch: LR patch size; the HR patch is ``patch * scale``.
        rng: the source of randomness (reproducible per sample).
        augment: apply a random horizontal flip, vertical flip and transpose.
        aligned: more arrays k times the LR image's size, for any integer k (cached teacher
            outputs: k = scale for the LR image's, scale**2 for the HR image's), cut and flipped
            exactly like ``hr``.

    Returns:
        (LR patch, HR patch, the ``aligned`` patches).
    """
    h, w = lr.shape[:2]
    top, left = int(rng.integers(0, h - patch + 1)), int(rng.integers(0, w - patch + 1))
    big = []
    for a in (hr, *aligned):
        k = a.shape[0] // h
        if a.shape[:2] != (h * k, w * k):
            raise ValueError(f"array of shape {a.shape[:2]} is not a multiple of the LR image's {(h, w)}")
        big.append(a[top * k : (top + patch) * k, left * k : (left + patch) * k])
    lr = lr[top : top + patch, left : left + patch]
    if augment:
        hflip, vflip, rot = rng.random(3) < 0.5
        if hflip:
            lr, big = lr[:, ::-1], [a[:, ::-1] for a in big]
        if vflip:
            lr, big = lr[::-1], [a[::-1] for a in big]
        if rot:
            lr, big = lr.transpose(1, 0, 2), [a.transpose(1, 0, 2) for a in big]
    return lr, big[0], tuple(big[1:])


def _hwc_to_chw(img: np.ndarray) -> torch.Tensor:
    """HxWx3 uint8 -> 3xHxW float32 in [0, 1]; float arrays (cached float16 targets) keep their
    dtype: the losses cast the parts they use, so a zoom-in target is not converted whole."""
    t = torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))
    return t.float().div_(255.0) if img.dtype == np.uint8 else t


class TrainPatches(Dataset):
    """Random LR/HR training patches from one or more sets; LR made once and kept in memory.

    Sample ``i`` is a pure function of ``(seed, i)``, so a run resumed at step k, or sharded
    across processes, draws exactly the patches an uninterrupted run would.

    Args:
        roots: HR folders, BasicSR-layout sets or set files.
        scale: SR scale.
        patch: LR patch size in pixels.
        seed: seed of the patch stream.
        augment: random flips / transposes.
        progress: show a progress bar while loading.
        holdout: sets whose images are never trained on (a validation split of ``roots``).
    """

    def __init__(self, roots: list[str | Path], scale: int, patch: int, seed: int = 0,
                 augment: bool = True, progress: bool = True, holdout: list[str | Path] = ()) -> None:
        pairs = [p for root in roots for p in find_pairs(root, scale)]
        held = {p.hr_path.resolve() for root in holdout for p in find_pairs(root, scale)}
        stray = held - {p.hr_path.resolve() for p in pairs}
        if stray:
            raise QdukdError(f"data.holdout lists {sorted(stray)[0]}, which is not among the training images: "
                             "a holdout is a part of data.train")
        pairs = [p for p in pairs if p.hr_path.resolve() not in held]
        if not pairs:
            raise QdukdError("data.holdout holds out every training image")
        self.scale, self.patch, self.seed, self.augment = scale, patch, seed, augment
        self.names: list[str] = []
        self.lrs: list[np.ndarray] = []
        self.hrs: list[np.ndarray] = []
        # Precomputed teacher outputs per image (float16 HxWx3, an integer multiple of the LR
        # size), cut with each patch; keys are qdukd.distill.TARGET_KEYS ("kd", "zoom_in").
        self.targets: dict[str, list[np.ndarray]] = {}
        for pair in tqdm(pairs, desc="load training images", disable=not progress, leave=False):
            lr, hr = load_pair(pair, scale)
            if min(lr.shape[:2]) < patch:
                raise QdukdError(f"{pair.hr_path} is {hr.shape[1]}x{hr.shape[0]}, smaller than the "
                                 f"{patch * scale}px HR patch: remove it or lower the patch size")
            self.names.append(pair.name)
            self.lrs.append(lr)
            self.hrs.append(hr)

    def __len__(self) -> int:
        # The stream is endless; the length only bounds one pass of a sampler.
        return len(self.lrs)

    def image_index(self, i: int, stream: int = 0) -> int:
        """Which image sample ``i`` comes from: a fresh permutation every pass over the set."""
        n = len(self.lrs)
        perm = np.random.default_rng([self.seed, stream, i // n, 1]).permutation(n)
        return int(perm[i % n])

    def sample(self, i: int, stream: int = 0) -> dict[str, torch.Tensor | int]:
        """Sample ``i`` of an independent patch stream (0 = training, others e.g. calibration)."""
        k = self.image_index(i, stream)
        rng = np.random.default_rng([self.seed, stream, i])
        extra = tuple(t[k] for t in self.targets.values())
        lr, hr, cut = random_crop_flip(self.lrs[k], self.hrs[k], self.scale, self.patch, rng, self.augment, extra)
        return {"lr": _hwc_to_chw(lr), "hr": _hwc_to_chw(hr), "image": k,
                **{name: _hwc_to_chw(c) for name, c in zip(self.targets, cut)}}

    def __getitem__(self, i: int) -> dict[str, torch.Tensor | int]:
        return self.sample(i)


def calibration_batches(data: TrainPatches, batch: int, count: int) -> list[torch.Tensor]:
    """``count`` LR batches for quantization calibration, from a stream training never draws."""
    return [torch.stack([data.sample(i, stream=1)["lr"] for i in range(k * batch, (k + 1) * batch)])
            for k in range(count)]
