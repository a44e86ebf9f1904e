"""Tests for qdukd.resize: MATLAB-compatible bicubic resize (numpy and torch paths)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from qdukd.resize import bicubic_weight_matrix, imresize, imresize_torch

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BENCH = DATA / "benchmarks"


def keys_cubic(x: float, a: float = -0.5) -> float:
    """Keys (1981) cubic convolution kernel, written out independently of qdukd.resize."""
    t = abs(x)
    if t <= 1:
        return (a + 2) * t**3 - (a + 3) * t**2 + 1
    if t < 2:
        return a * t**3 - 5 * a * t**2 + 8 * a * t - 4 * a
    return 0.0


def modcrop(img: np.ndarray, s: int) -> np.ndarray:
    h, w = img.shape[:2]
    return img[: h - h % s, : w - w % s]


# ---------------------------------------------------------------- MATLAB ground truth


def _matlab_cases() -> list:
    cases = []
    for set_name in ("Set5", "Set14"):
        for s in (2, 3, 4):
            cases.append(pytest.param(set_name, s, id=f"{set_name}-x{s}"))
    return cases


@pytest.mark.parametrize(("set_name", "s"), _matlab_cases())
def test_matches_matlab_lr_files(set_name: str, s: int) -> None:
    from PIL import Image

    hr_dir = BENCH / set_name / "HR"
    lr_dir = BENCH / set_name / "LR_bicubic" / f"X{s}"
    for path in (hr_dir, lr_dir):
        if not path.is_dir():
            pytest.skip(f"reference data missing: {path}")
    hr_files = sorted(hr_dir.glob("*.png"))
    assert hr_files, f"no PNGs in {hr_dir}"
    for hr_path in hr_files:
        lr_path = lr_dir / f"{hr_path.stem}x{s}.png"
        if not lr_path.is_file():
            pytest.skip(f"reference data missing: {lr_path}")
        hr = np.asarray(Image.open(hr_path).convert("RGB"))
        lr = np.asarray(Image.open(lr_path).convert("RGB"))
        out = imresize(modcrop(hr, s), 1 / s)
        assert out.dtype == np.uint8
        assert out.shape == lr.shape, hr_path.name
        n_diff = int(np.any(out != lr, axis=-1).sum())
        assert n_diff == 0, f"{hr_path.name} x{s}: {n_diff} pixels differ from MATLAB"


# ---------------------------------------------------------------- torch vs numpy


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 2, 4])
def test_torch_matches_numpy_float(scale: float) -> None:
    rng = np.random.default_rng(0)
    x = rng.random((3, 2, 25, 38))  # batched, non-square, not a multiple of the scale
    out_t = imresize_torch(torch.from_numpy(x), scale)
    assert out_t.dtype == torch.float64
    assert out_t.shape == (3, 2, math.ceil(25 * scale), math.ceil(38 * scale))
    for n in range(x.shape[0]):
        ref = imresize(np.moveaxis(x[n], 0, -1), scale)  # HxWxC
        assert ref.dtype == np.float64
        np.testing.assert_allclose(
            out_t[n].numpy(), np.moveaxis(ref, -1, 0), rtol=0, atol=1e-10
        )
    # unbatched (C, H, W) gives the same as batched
    single = imresize_torch(torch.from_numpy(x[1]), scale)
    torch.testing.assert_close(single, out_t[1], rtol=0, atol=1e-12)


def test_torch_float32_and_gradients() -> None:
    x = torch.rand(2, 3, 48, 40, dtype=torch.float32, requires_grad=True)
    y = imresize_torch(x, 1 / 4)
    assert y.dtype == torch.float32 and y.shape == (2, 3, 12, 10)
    y.square().sum().backward()
    assert x.grad is not None and x.grad.shape == x.shape
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # gradcheck in float64 on a tiny input, down and up
    for scale in (1 / 2, 2):
        xd = torch.rand(1, 1, 6, 5, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda t, s=scale: imresize_torch(t, s), (xd,))


@pytest.mark.parametrize(("h", "w", "scale"), [(7, 11, 1 / 2), (13, 9, 1 / 3), (5, 6, 4), (10, 10, 0.3)])
def test_output_shapes(h: int, w: int, scale: float) -> None:
    expect = (math.ceil(h * scale), math.ceil(w * scale))
    assert imresize(np.zeros((h, w), np.uint8), scale).shape == expect
    assert imresize(np.zeros((h, w, 3), np.float32), scale).shape == (*expect, 3)
    assert imresize_torch(torch.zeros(2, 3, h, w), scale).shape == (2, 3, *expect)


def test_dtypes_preserved() -> None:
    img = np.full((8, 8, 3), 100, np.uint8)
    assert imresize(img, 0.5).dtype == np.uint8
    assert imresize(img.astype(np.float32), 0.5).dtype == np.float32
    assert imresize(img.astype(np.float64), 0.5).dtype == np.float64


# ---------------------------------------------------------------- independent checks


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 2, 3, 4])
def test_constant_image_stays_constant(scale: float) -> None:
    img = np.full((17, 12, 3), 173, np.uint8)
    out = imresize(img, scale)
    assert (out == 173).all()
    imgf = np.full((17, 12), 0.37)
    np.testing.assert_allclose(imresize(imgf, scale), 0.37, rtol=0, atol=1e-12)
    t = torch.full((1, 2, 17, 12), -1.5, dtype=torch.float64)
    torch.testing.assert_close(
        imresize_torch(t, scale), torch.full_like(imresize_torch(t, scale), -1.5)
    )


@pytest.mark.parametrize("scale", [1 / 2, 1 / 3, 1 / 4, 0.7, 2, 4])
@pytest.mark.parametrize("n", [1, 2, 5, 16, 37])
def test_weight_rows_sum_to_one(n: int, scale: float) -> None:
    mat = bicubic_weight_matrix(n, scale)
    assert mat.shape == (math.ceil(n * scale), n)
    np.testing.assert_allclose(mat.sum(axis=1), 1.0, rtol=0, atol=1e-12)


def test_half_scale_interior_weights_hand_derived() -> None:
    # Downscale by 2 with antialiasing: kernel h(t) = 0.5 * cubic(0.5 * t), width 8.
    # Output sample o (0-based) sits at input coordinate 2*o + 0.5 (0-based), i.e. between
    # inputs 2o and 2o+1, so input j gets weight 0.5 * cubic((j - 2o - 0.5) / 2).
    # Offsets +-0.5, +-1.5, +-2.5, +-3.5 -> cubic at 0.25, 0.75, 1.25, 1.75.
    expected_half = [0.5 * keys_cubic(d / 2) for d in (0.5, 1.5, 2.5, 3.5)]
    assert expected_half == pytest.approx([0.43359375, 0.11328125, -0.03515625, -0.01171875])
    expected = expected_half[::-1] + expected_half  # inputs 2o-3 .. 2o+4
    assert sum(expected) == pytest.approx(1.0)

    n = 20
    mat = bicubic_weight_matrix(n, 0.5)
    for o in (2, 4, 6):  # far enough from both borders
        row = np.zeros(n)
        row[2 * o - 3 : 2 * o + 5] = expected
        np.testing.assert_allclose(mat[o], row, rtol=0, atol=1e-15)

    # Same thing seen through imresize: an impulse at input row 9 reaches output row o with
    # weight 0.5 * cubic((9 - (2o + 0.5)) / 2), nonzero for o = 3..6 only.
    img = np.zeros((n, 1))
    img[9, 0] = 1.0
    col = imresize(img, 0.5)[:, 0]
    for o in range(2, 8):
        d = 9 - (2 * o + 0.5)
        assert col[o] == pytest.approx(0.5 * keys_cubic(d / 2), abs=1e-15)


def test_half_scale_border_symmetric_padding_hand_derived() -> None:
    # First output sample (0-based o=0) sits at 0-based coordinate 0.5; its taps reach
    # coordinates -3..4, and MATLAB mirrors -1 -> 0, -2 -> 1, -3 -> 2 (edge repeated).
    # Direct taps: input j at offset |j - 0.5|; mirrored tap -k-1 lands on input k at
    # offset k + 1.5 (tap -4 is at offset 4.5, outside the kernel's support of 4).
    expected = np.zeros(10)
    for j in range(0, 5):
        expected[j] += 0.5 * keys_cubic(abs(j - 0.5) / 2)
    for k in range(0, 3):
        expected[k] += 0.5 * keys_cubic((k + 1.5) / 2)
    assert expected.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(bicubic_weight_matrix(10, 0.5)[0], expected, rtol=0, atol=1e-15)


def test_upscale_x2_interior_weights_hand_derived() -> None:
    # Upscale by 2: plain cubic kernel; output o (0-based) sits at input coordinate o/2 - 0.25.
    n = 12
    mat = bicubic_weight_matrix(n, 2)
    for o in (6, 7):
        u = o / 2 - 0.25
        row = np.array([keys_cubic(u - j) for j in range(n)])
        np.testing.assert_allclose(mat[o], row, rtol=0, atol=1e-15)


def test_uint8_rounds_and_clips_each_pass() -> None:
    # A step edge overshoots (negative cubic lobes): uint8 output must be clipped, and the
    # result equals the float result rounded+clipped after each pass (MATLAB semantics).
    img = np.zeros((16, 16), np.uint8)
    img[:, 8:] = 255
    out = imresize(img, 2)
    assert out.dtype == np.uint8
    f = imresize(img.astype(np.float64), 2)
    assert f.max() > 255 and f.min() < 0
    assert out.max() == 255 and out.min() == 0


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("scale", [0, -0.5, float("nan"), float("inf")])
def test_bad_scale_raises(scale: float) -> None:
    with pytest.raises(ValueError, match="scale"):
        imresize(np.zeros((4, 4), np.uint8), scale)
    with pytest.raises(ValueError, match="scale"):
        imresize_torch(torch.zeros(1, 1, 4, 4), scale)


def test_bad_shapes_raise() -> None:
    with pytest.raises(ValueError, match="empty"):
        imresize(np.zeros((0, 4, 3), np.uint8), 0.5)
    with pytest.raises(ValueError, match="HxW"):
        imresize(np.zeros((4,), np.uint8), 0.5)
    with pytest.raises(ValueError, match="HxW"):
        imresize(np.zeros((1, 4, 4, 3), np.uint8), 0.5)
    with pytest.raises(ValueError, match="dtype"):
        imresize(np.zeros((4, 4), bool), 0.5)
    with pytest.raises(ValueError, match="shape"):
        imresize_torch(torch.zeros(4, 4), 0.5)
    with pytest.raises(ValueError, match="empty"):
        imresize_torch(torch.zeros(1, 3, 0, 4), 0.5)
    with pytest.raises(ValueError, match="floating"):
        imresize_torch(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), 0.5)
