"""Whole-image super-resolution in overlapping tiles: bounded memory, same result as one pass.

Each tile carries ``overlap`` LR pixels of context on every side; that context is cut from its
output, so with an overlap of at least the network's receptive field the tiled result equals the
whole-image one up to float rounding.

:func:`tile_outputs` does the geometry and runs the network; the caller assembles the pieces in
the type it needs: :func:`tiled_forward` into a float array, :func:`qdukd.upscale.upscale` into an
8-bit image, so that only one tile at a time is ever float.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np

from .errors import QdukdError

__all__ = ["tile_outputs", "tiled_forward"]


def tile_outputs(fn: Callable[[slice, slice], np.ndarray], h: int, w: int, scale: int, tile: int,
                 overlap: int) -> Iterator[tuple[slice, slice, np.ndarray]]:
    """Run an SR function over an ``h`` x ``w`` image tile by tile; yield each tile's output and its place.

    Args:
        fn: runs the network on the LR rows and columns it is given (a window of the image, context
            included) and returns ``(N, C, rows * scale, cols * scale)`` floats.
        h: the image's height (LR pixels).
        w: the image's width.
        scale: the network's upscaling factor.
        tile: the largest LR tile side (0 = the whole image in one call).
        overlap: LR pixels of context added on each side of a tile and cut from its output.

    Yields:
        ``(rows, cols, sr)``: where the piece goes in the ``h * scale`` x ``w * scale`` output, and
        the piece, ``(N, C, rows, cols)`` (a view of ``fn``'s result, context cut off).

    Raises:
        QdukdError: ``fn`` returned a shape other than ``scale`` x its input.
    """
    tile = tile if tile > 0 else max(h, w, 1)
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            ya, xa = max(y0 - overlap, 0), max(x0 - overlap, 0)
            yb, xb = min(y1 + overlap, h), min(x1 + overlap, w)
            sr = fn(slice(ya, yb), slice(xa, xb))
            if sr.ndim != 4 or sr.shape[-2:] != ((yb - ya) * scale, (xb - xa) * scale):
                raise QdukdError(f"the model returned {'x'.join(map(str, sr.shape))} for a {yb - ya}x{xb - xa} "
                                 f"input, not x{scale} of it")
            oy, ox = (y0 - ya) * scale, (x0 - xa) * scale
            yield (slice(y0 * scale, y1 * scale), slice(x0 * scale, x1 * scale),
                   sr[..., oy:oy + (y1 - y0) * scale, ox:ox + (x1 - x0) * scale])


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
    out = np.empty((*x.shape[:-2], h * scale, w * scale), np.float32)
    for rows, cols, sr in tile_outputs(lambda r, c: fn(x[..., r, c]), h, w, scale, tile, overlap):
        out[..., rows, cols] = sr
    return out
