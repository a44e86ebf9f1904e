import math

import numpy as np
import pytest

from qdukd.metrics import psnr, rgb_to_y, ssim


def _pair(seed=0, shape=(32, 40, 3)):
    rng = np.random.default_rng(seed)
    hr = rng.integers(0, 256, shape, dtype=np.uint8)
    sr = np.clip(hr.astype(int) + rng.integers(-3, 4, shape), 0, 255).astype(np.uint8)
    return sr, hr


def test_psnr_rgb_matches_the_definition():
    sr, hr = _pair()
    mse = np.mean((sr.astype(float) - hr.astype(float)) ** 2)
    assert psnr(sr, hr, 0, test_y_channel=False) == pytest.approx(10 * math.log10(255**2 / mse), abs=1e-12)
    assert psnr(hr, hr) == math.inf


def test_crop_border_ignores_the_border():
    sr, hr = _pair()
    sr = hr.copy()
    sr[:2] = 0
    sr[:, -2:] = 255
    assert psnr(sr, hr, crop_border=2) == math.inf
    assert psnr(sr, hr, crop_border=1) < 40


def test_y_conventions():
    # White, black and pure primaries: BT.601 studio range, by hand.
    img = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 255, 0]]], np.uint8)
    y = rgb_to_y(img, "float")[0]
    assert y == pytest.approx([16 + 65.481 + 128.553 + 24.966, 16, 16 + 65.481, 16 + 128.553])
    assert rgb_to_y(img, "uint8")[0].tolist() == [235, 16, 81, 145]  # 81.481 -> 81, 144.553 -> 145
    sr, hr = _pair(3)
    assert abs(psnr(sr, hr, 4, convention="float") - psnr(sr, hr, 4, convention="uint8")) > 1e-4


def test_ssim_properties():
    sr, hr = _pair(4, (48, 48, 3))
    assert ssim(hr, hr) == pytest.approx(1.0)
    assert 0 < ssim(sr, hr) < 1
    assert ssim(sr, hr) == pytest.approx(ssim(hr, sr))  # symmetric
    flat = np.full((24, 24, 3), 100, np.uint8)
    # Constant images: SSIM reduces to the luminance term (2ab + C1) / (a^2 + b^2 + C1).
    c1 = (0.01 * 255) ** 2
    a, b = rgb_to_y(flat)[0, 0], rgb_to_y(flat + 10)[0, 0]
    assert ssim(flat, flat + 10) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1))


def test_rejects_mismatched_or_float_inputs():
    sr, hr = _pair()
    with pytest.raises(ValueError, match="shapes"):
        psnr(sr[:-1], hr)
    with pytest.raises(ValueError, match="uint8"):
        psnr(sr.astype(float), hr)
