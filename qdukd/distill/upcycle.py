"""DUKD's upcycled inputs: zoom-in tiles cut from the HR patch, zoom-out copies of the LR patch.

Zoom-in: the HR patch is an ``s x s`` grid of LR-sized tiles of real high-frequency content;
fed to both networks, the teacher's output is the target. Zoom-out: the LR patch downscaled
by ``s`` is an input whose ground truth is the LR patch itself.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..resize import imresize_torch

__all__ = ["cut_cells", "zoom_in_cells", "zoom_in_count", "zoom_out"]

# Tiles per sample in the reference configurations; an x2 grid has only 4 tiles, x4 has 16.
_REFERENCE_ZOOM_IN = {2: 2, 3: 1, 4: 1}


def zoom_in_count(scale: int, requested: int = 0) -> int:
    """Zoom-in tiles per sample.

    Args:
        scale: Upscaling factor.
        requested: Explicit count; 0 selects the reference's 2 / 1 / 1 for x2 / x3 / x4
            (1 for other scales).

    Returns:
        The number of tiles to cut from each HR patch.
    """
    if requested < 0:
        raise ValueError(f"zoom-in count must be >= 0 (0 = reference default), got {requested}")
    return requested or _REFERENCE_ZOOM_IN.get(scale, 1)


def zoom_in_cells(scale: int, n: int, generator: torch.Generator) -> list[int]:
    """Draw ``n`` distinct cells of the ``scale x scale`` grid (row-major indices).

    Args:
        scale: Upscaling factor.
        n: Tiles per sample, ``1 <= n <= scale**2``.
        generator: Draws the positions (without replacement).

    Raises:
        ValueError: If ``n`` is out of range.
    """
    if not 1 <= n <= scale * scale:
        raise ValueError(f"zoom-in needs 1 <= n <= {scale * scale} tiles at x{scale}, got {n}")
    return torch.randperm(scale * scale, generator=generator, device=generator.device)[:n].tolist()


def cut_cells(x: Tensor, scale: int, cells: list[int]) -> Tensor:
    """Cut the given cells of the ``scale x scale`` grid from every image of a batch.

    The same cells are cut from every sample, as in the reference code. Cutting the HR patch
    gives the zoom-in tiles (LR-sized); cutting the teacher's output of the whole HR patch with
    the same cells gives their cached targets.

    Args:
        x: Batch ``(N, C, H, W)`` with H and W divisible by ``scale``.
        scale: Upscaling factor (grid size).
        cells: Row-major grid indices from :func:`zoom_in_cells`.

    Returns:
        ``(len(cells) * N, C, H / scale, W / scale)``, position-major: rows ``k*N .. (k+1)*N - 1``
        are the k-th cell of every sample.

    Raises:
        ValueError: If H or W is not divisible by ``scale``.
    """
    big_h, big_w = x.shape[-2:]
    if big_h % scale or big_w % scale:
        raise ValueError(f"patch {big_h}x{big_w} is not divisible by scale {scale}")
    h, w = big_h // scale, big_w // scale
    # Only the drawn cells are copied (n is 1 or 2 in practice, out of scale**2).
    return torch.cat([x[..., (c // scale) * h:(c // scale + 1) * h, (c % scale) * w:(c % scale + 1) * w]
                      for c in cells])


def zoom_out(lr: Tensor, scale: int) -> Tensor:
    """Downscale the LR batch by ``scale`` (MATLAB bicubic with antialiasing), clamped to [0, 1].

    The clamp removes bicubic overshoot so the input stays in the range the networks see.

    Args:
        lr: LR batch ``(N, C, h, w)``.
        scale: Upscaling factor.

    Returns:
        ``(N, C, ceil(h / scale), ceil(w / scale))``, differentiable with respect to ``lr``.
    """
    return imresize_torch(lr, 1.0 / scale).clamp(0.0, 1.0)
