"""DUKD's upcycled inputs: zoom-in tiles cut from the HR patch, zoom-out copies of the LR patch.

Zoom-in: the HR patch is an ``s x s`` grid of LR-sized tiles of real high-frequency content;
fed to both networks, the teacher's output is the target. Zoom-out: the LR patch downscaled
by ``s`` is an input whose ground truth is the LR patch itself.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..resize import imresize_torch

__all__ = ["zoom_in_count", "zoom_in_tiles", "zoom_out"]

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


def zoom_in_tiles(hr: Tensor, scale: int, n: int, generator: torch.Generator) -> Tensor:
    """Cut ``n`` distinct tiles from the ``scale x scale`` grid of each HR patch.

    The same grid positions are used for every sample in the batch, as in the reference code.
    The tile size is the LR size ``(H / scale, W / scale)``.

    Args:
        hr: HR batch ``(N, C, H, W)`` with H and W divisible by ``scale``.
        scale: Upscaling factor.
        n: Tiles per sample, ``1 <= n <= scale**2``.
        generator: Draws the grid positions (without replacement).

    Returns:
        Tiles ``(n * N, C, H / scale, W / scale)``, position-major: rows ``k*N .. (k+1)*N - 1``
        are the k-th drawn position of every sample.

    Raises:
        ValueError: If H or W is not divisible by ``scale`` or ``n`` is out of range.
    """
    big_h, big_w = hr.shape[-2:]
    if big_h % scale or big_w % scale:
        raise ValueError(f"HR patch {big_h}x{big_w} is not divisible by scale {scale}")
    if not 1 <= n <= scale * scale:
        raise ValueError(f"zoom-in needs 1 <= n <= {scale * scale} tiles at x{scale}, got {n}")
    h, w = big_h // scale, big_w // scale
    cells = torch.randperm(scale * scale, generator=generator, device=generator.device)[:n].tolist()
    # Only the drawn tiles are copied (n is 1 or 2 in practice, out of scale**2).
    return torch.cat([hr[..., (c // scale) * h:(c // scale + 1) * h, (c % scale) * w:(c % scale + 1) * w]
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
