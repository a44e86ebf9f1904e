"""PSNR and SSIM with the SR literature's conventions (BasicSR / RCAN MATLAB scripts).

Both take uint8 HxWx3 RGB images (the SR output already rounded to uint8), crop ``crop_border``
pixels from every side, and work on RGB or on the BT.601 luma Y (16-235 range).

Two Y conventions are in use and differ by 0.01-0.02 dB on Set5 x4:

- ``"float"``: Y computed in floating point from the uint8 RGB and not rounded (RCAN's MATLAB
  ``rgb2ycbcr(im2double(img))``, BasicSR, PAN's logs, IMDN's paper). The default.
- ``"uint8"``: Y rounded to an integer, as MATLAB ``rgb2ycbcr`` on a uint8 image (older papers).
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

Convention = Literal["float", "uint8"]
CONVENTIONS: tuple[str, ...] = ("float", "uint8")


def rgb_to_y(img: np.ndarray, convention: Convention = "float") -> np.ndarray:
    """BT.601 luma in [16, 235] (float64) of an HxWx3 uint8 RGB image."""
    if convention not in CONVENTIONS:
        raise ValueError(f"unknown Y convention {convention!r}; use one of {CONVENTIONS}")
    rgb = img.astype(np.float64) / 255.0
    y = rgb @ np.array([65.481, 128.553, 24.966]) + 16.0
    # MATLAB's uint8 rgb2ycbcr rounds half away from zero; y > 0 so floor(y + 0.5) does that.
    return np.floor(y + 0.5) if convention == "uint8" else y


def _prepare(sr: np.ndarray, hr: np.ndarray, crop_border: int, test_y_channel: bool,
             convention: Convention) -> tuple[np.ndarray, np.ndarray]:
    if sr.shape != hr.shape:
        raise ValueError(f"image shapes differ: {sr.shape} vs {hr.shape}")
    if sr.dtype != np.uint8 or hr.dtype != np.uint8:
        raise ValueError("metrics take uint8 images (round the SR output first)")
    if crop_border:
        sr = sr[crop_border:-crop_border, crop_border:-crop_border]
        hr = hr[crop_border:-crop_border, crop_border:-crop_border]
    if test_y_channel:
        return rgb_to_y(sr, convention)[..., None], rgb_to_y(hr, convention)[..., None]
    return sr.astype(np.float64), hr.astype(np.float64)


def psnr(sr: np.ndarray, hr: np.ndarray, crop_border: int = 0, test_y_channel: bool = True,
         convention: Convention = "float") -> float:
    """Peak signal-to-noise ratio in dB (peak 255).

    Args:
        sr: HxWx3 uint8 super-resolved image.
        hr: HxWx3 uint8 ground truth of the same size.
        crop_border: pixels removed from each side before measuring (the SR scale, by convention).
        test_y_channel: measure on Y (BT.601) instead of RGB.
        convention: ``"float"`` or ``"uint8"`` Y (see the module docstring).
    """
    a, b = _prepare(sr, hr, crop_border, test_y_channel, convention)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


SSIM_WINDOW = 11  # side of SSIM's Gaussian window: the smallest image (after border cropping) it measures


def _gaussian_1d(size: int = SSIM_WINDOW, sigma: float = 1.5) -> torch.Tensor:
    ax = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(ax**2) / (2 * sigma**2))
    return g / g.sum()


def _ssim_channel(a: torch.Tensor, b: torch.Tensor) -> float:
    """MATLAB ssim_index: 11x11 Gaussian (sigma 1.5), 'valid' filtering, K = (0.01, 0.03).

    The 2-D Gaussian is the outer product of a 1-D one, so each of the five local means is a
    column pass then a row pass (22 instead of 121 multiply-adds per pixel), all five at once
    as the channels of one grouped convolution.
    """
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    g = _gaussian_1d()
    stack = torch.stack([a, b, a * a, b * b, a * b])[None]  # 1x5xHxW
    m = F.conv2d(F.conv2d(stack, g.view(1, 1, -1, 1).expand(5, 1, -1, 1), groups=5),
                 g.view(1, 1, 1, -1).expand(5, 1, 1, -1), groups=5)[0]
    mu_x, mu_y = m[0], m[1]
    sxx, syy, sxy = m[2] - mu_x**2, m[3] - mu_y**2, m[4] - mu_x * mu_y
    ssim_map = ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))
    return float(ssim_map.mean())


def ssim(sr: np.ndarray, hr: np.ndarray, crop_border: int = 0, test_y_channel: bool = True,
         convention: Convention = "float") -> float:
    """Structural similarity (Wang et al. 2004, the MATLAB reference); channel mean on RGB.

    Args:
        sr: HxWx3 uint8 super-resolved image.
        hr: HxWx3 uint8 ground truth of the same size.
        crop_border: pixels removed from each side before measuring.
        test_y_channel: measure on Y (BT.601) instead of RGB.
        convention: ``"float"`` or ``"uint8"`` Y (see the module docstring).
    """
    a, b = _prepare(sr, hr, crop_border, test_y_channel, convention)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    return float(np.mean([_ssim_channel(ta[..., c], tb[..., c]) for c in range(a.shape[2])]))
