"""Pure image math for the report's side-by-side crops (uint8 HxWx3 arrays in, arrays out).

Every panel of one image shows the same region: a box in HR pixels whose corner and size are
multiples of the scale, so the LR crop (upsampled by pixel repetition) covers exactly the pixels
the HR crop does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_GAIN = 64


@dataclass(frozen=True)
class Box:
    """A region in HR pixels: rows ``top:top+size``, columns ``left:left+size``."""

    top: int
    left: int
    size: int

    def lr(self, scale: int) -> "Box":
        """The same region in LR pixels (the box is scale-aligned)."""
        return Box(self.top // scale, self.left // scale, self.size // scale)


def crop(img: np.ndarray, box: Box) -> np.ndarray:
    """``img[top:top+size, left:left+size]`` (a view); the box must lie inside the image."""
    h, w = img.shape[:2]
    if box.top < 0 or box.left < 0 or box.top + box.size > h or box.left + box.size > w:
        raise ValueError(f"{box} is outside a {h}x{w} image")
    return img[box.top:box.top + box.size, box.left:box.left + box.size]


def nearest_upsample(img: np.ndarray, scale: int) -> np.ndarray:
    """Every pixel repeated ``scale`` x ``scale`` times (nearest neighbour, no new values)."""
    return np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)


def lr_panel(lr: np.ndarray, box: Box, scale: int) -> np.ndarray:
    """The LR pixels under ``box`` (an HR-pixel box), shown at HR size by nearest upsampling."""
    return nearest_upsample(crop(lr, box.lr(scale)), scale)


def error_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel ``max_channel |a - b|`` in levels, as int32 HxW."""
    return np.abs(a.astype(np.int32) - b.astype(np.int32)).max(axis=2)


def worst_box(error: np.ndarray, size: int, scale: int) -> Box:
    """The scale-aligned ``size`` x ``size`` box with the largest summed ``error`` (HxW); the first
    such box in row-major order on ties (the top-left corner when ``error`` is all zero).

    ``size`` is rounded down to a multiple of ``scale`` and shrunk to fit the image.
    """
    h, w = error.shape
    size = min(size, h - h % scale, w - w % scale)
    size -= size % scale
    if size <= 0:
        raise ValueError(f"a {h}x{w} image holds no {scale}-aligned box")
    integral = np.zeros((h + 1, w + 1), np.int64)
    integral[1:, 1:] = error.astype(np.int64).cumsum(0).cumsum(1)
    tops = np.arange(0, h - size + 1, scale)
    lefts = np.arange(0, w - size + 1, scale)
    t, l = tops[:, None], lefts[None, :]
    sums = integral[t + size, l + size] - integral[t, l + size] - integral[t + size, l] + integral[t, l]
    i, j = np.unravel_index(int(np.argmax(sums)), sums.shape)
    return Box(int(tops[i]), int(lefts[j]), size)


def amplification(levels: float) -> int:
    """The largest power of two (1 to 64) by which a difference of ``levels`` still fits in +-127
    grey levels around mid-grey (64 when nothing differs); larger differences saturate."""
    gain = 1
    while gain < MAX_GAIN and 2 * gain * levels <= 127:
        gain *= 2
    return gain


def saturation(gain: int) -> int:
    """The smallest difference, in levels, that a map amplified by ``gain`` shows as black or white."""
    return -(-127 // gain)


def difference_map(a: np.ndarray, b: np.ndarray, gain: int) -> np.ndarray:
    """``128 + gain * (a - b)`` per channel, clipped to 0..255 (uint8): mid-grey where equal,
    brighter where ``a`` is larger; a colour tint shows which channels differ."""
    return np.clip(128 + gain * (a.astype(np.int32) - b.astype(np.int32)), 0, 255).astype(np.uint8)
