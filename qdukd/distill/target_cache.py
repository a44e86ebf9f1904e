"""Teacher-target cache: the frozen teacher's output of every whole training image, computed once.

The teacher never changes, so its output on a patch could be a crop of its output on the whole
image (which differs only near the patch border, where the teacher sees more context). Outputs
are kept as float16 HxWx3 arrays. With a cache folder each one is also written there as an
``.npy`` file named by a hash of everything it depends on (teacher architecture, arguments and
weights, scale, input pixels) and read back memory-mapped, so runs with other seeds or methods,
resumed runs and several processes share one pass instead of repeating it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ..atomic import atomic_path
from ..images import to_tensor
from ..tiling import tiled_forward

__all__ = ["teacher_key", "teacher_outputs"]

# Bounds the teacher's memory on large inputs (an x4 output of a 512-pixel tile has ~4M pixels per
# channel). The overlap is context at the seams, not a full receptive field (PAN's is wider): near
# a seam the output may differ slightly from a whole-image pass, as it does at patch borders anyway.
TILE, OVERLAP = 512, 24


def teacher_key(model: str, args: dict[str, Any], weights: str | Path, scale: int) -> str:
    """A digest naming one teacher: architecture, constructor arguments, weight file bytes, scale."""
    h = hashlib.sha256(json.dumps([model, args, scale], sort_keys=True).encode())
    with open(weights, "rb") as f:
        h.update(hashlib.file_digest(f, "sha256").digest())
    return h.hexdigest()


def _file(folder: Path, key: str, kind: str, image: np.ndarray) -> Path:
    h = hashlib.sha256(f"{key}/{kind}/{image.shape}".encode())
    h.update(np.ascontiguousarray(image).data)
    return folder / f"{kind}-{h.hexdigest()[:32]}.npy"


def _load(path: Path, shape: tuple[int, ...]) -> np.ndarray | None:
    try:
        out = np.load(path, mmap_mode="r")
    except (OSError, ValueError):  # absent, or not a whole .npy file: compute it again
        return None
    return out if out.shape == shape and out.dtype == np.float16 else None


def teacher_outputs(teacher: Callable[[torch.Tensor], torch.Tensor], images: list[np.ndarray], scale: int,
                    kind: str, key: str = "", folder: str | Path = "", device: str | torch.device = "cpu",
                    progress: bool = True) -> list[np.ndarray]:
    """The teacher's output of every image, float16 ``(h*scale)x(w*scale)x3``.

    Args:
        teacher: the frozen teacher (an NCHW tensor function).
        images: HxWx3 uint8 inputs (whole LR images, or whole HR images for zoom-in targets).
        scale: the teacher's upscaling factor.
        kind: what the inputs are (``"lr"``, ``"hr"``): part of the file names.
        key: :func:`teacher_key` of the teacher; needed with a folder.
        folder: where outputs are stored and looked up; ``""`` keeps them in memory only.
        device: where the teacher runs.
        progress: show a progress bar.
    """
    store = Path(folder) if folder else None
    if store is not None and not key:
        raise ValueError("a teacher-target cache folder needs the teacher's key")

    def run(x: np.ndarray) -> np.ndarray:
        return teacher(torch.from_numpy(x).to(device)).cpu().numpy()

    outputs = []
    for img in tqdm(images, desc=f"teacher cache ({kind})", disable=not progress, leave=False):
        shape = (img.shape[0] * scale, img.shape[1] * scale, 3)
        path = _file(store, key, kind, img) if store is not None else None
        cached = _load(path, shape) if path is not None else None
        if cached is None:
            out = tiled_forward(run, to_tensor(img).numpy(), scale, TILE, OVERLAP)
            cached = out[0].transpose(1, 2, 0).astype(np.float16)
            if path is not None:
                with atomic_path(path) as tmp, open(tmp, "wb") as f:
                    np.save(f, cached)
                cached = np.load(path, mmap_mode="r")
        outputs.append(cached)
    return outputs
