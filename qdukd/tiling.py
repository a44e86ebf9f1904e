"""Whole-image super-resolution in overlapping tiles: bounded memory, same result as one pass.

Each tile carries ``overlap`` LR pixels of context on every side; that context is cut from its
output, so with an overlap of at least the network's receptive field the tiled result equals the
whole-image one up to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["tiled_forward"]


def tiled_forward(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, scale: int, tile: int,
                  overlap: int) -> np.ndarray:
    """Run an SR function on a ``(1, C, h, w)`` float array, tile by tile when it is large.

    Args:
        fn: the network as an NCHW float32 function.
        x: the input image.
        scale: the network's upscaling factor.
        tile: the largest LR tile side (0 = never tile).
        overlap: LR pixels of context added on each side of a tile and cut from its output.

    Returns:
        ``(1, C, h * scale, w * scale)`` float32.
    """
    h, w = x.shape[-2:]
    if tile <= 0 or (h <= tile and w <= tile):
        return fn(x)
    out = np.zeros((*x.shape[:-2], h * scale, w * scale), np.float32)
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            ya, xa = max(y0 - overlap, 0), max(x0 - overlap, 0)
            sr = fn(x[..., ya:min(y1 + overlap, h), xa:min(x1 + overlap, w)])
            oy, ox = (y0 - ya) * scale, (x0 - xa) * scale
            out[..., y0 * scale:y1 * scale, x0 * scale:x1 * scale] = \
                sr[..., oy:oy + (y1 - y0) * scale, ox:ox + (x1 - x0) * scale]
    return out
