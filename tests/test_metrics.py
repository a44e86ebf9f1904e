import math

import numpy as np
import pytest
from PIL import Image

from conftest import DEMO
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


# SSIM of distorted demo validation images against the originals, computed once without qdukd by
# scikit-image 0.26 (structural_similarity(sr, hr, gaussian_weights=True, sigma=1.5,
# use_sample_covariance=False, data_range=255): an 11x11 window, mean over the pixels the window
# fits around, K = (0.01, 0.03)) on float BT.601 Y (rgb / 255 @ (65.481, 128.553, 24.966) + 16) with
# 4 border pixels cropped, and per RGB channel (averaged) with none cropped. BasicSR's _ssim (cv2
# Gaussian 11 / 1.5, filter2D, [5:-5, 5:-5]) gives the same numbers to 1e-13.
SSIM_REFERENCE = {  # (image, distortion): (SSIM_Y crop 4, SSIM_RGB crop 0)
    ("astronaut_40_160", "shift"): (0.861459910480, 0.825316085800),
    ("astronaut_40_160", "posterize"): (0.915788410043, 0.788206130506),
    ("chelsea_80_40", "shift"): (0.856036591856, 0.837369326388),
    ("chelsea_80_40", "posterize"): (0.907980428332, 0.787766762387),
    ("rocket_200_400", "shift"): (0.855192068256, 0.802031793937),
    ("rocket_200_400", "posterize"): (0.927145445307, 0.880451940348),
}
DISTORTIONS = {"shift": lambda hr: np.roll(hr, 1, axis=1), "posterize": lambda hr: hr // 32 * 32 + 16}


@pytest.mark.parametrize(("name", "distortion"), list(SSIM_REFERENCE))
def test_ssim_matches_the_reference_implementation(name, distortion):
    hr = np.asarray(Image.open(DEMO / "val" / f"{name}.png").convert("RGB"))
    sr = DISTORTIONS[distortion](hr)
    y, rgb = SSIM_REFERENCE[name, distortion]
    # 1e-9: float64 rounding differs by ~1e-13; K1 = 0.011 instead of 0.01 moves SSIM_Y by 8e-9 to 1e-5.
    assert ssim(sr, hr, crop_border=4) == pytest.approx(y, abs=1e-9)
    assert ssim(sr, hr, crop_border=0, test_y_channel=False) == pytest.approx(rgb, abs=1e-9)


def test_rejects_mismatched_or_float_inputs():
    sr, hr = _pair()
    with pytest.raises(ValueError, match="shapes"):
        psnr(sr[:-1], hr)
    with pytest.raises(ValueError, match="uint8"):
        psnr(sr.astype(float), hr)
