"""Quantizer math: grids, bit-exact fake quantization, the LSQ / PACT gradients, range choices."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import shared_path
from PIL import Image

from qdukd.errors import QdukdError
from qdukd.quant import (
    FakeQuantizer,
    choose_scale,
    dequantize,
    fake_quantize,
    grid,
    max_scale,
    mse_scale,
    percentile_scale,
    quantize,
)

BITS = range(2, 9)
CASES = [(b, signed, axis) for b in BITS for signed in (True, False) for axis in (None, 0)]


def _scale(x: torch.Tensor, bits: int, signed: bool, axis: int | None) -> torch.Tensor:
    """A step a bit under the max, so that some values clip."""
    qmin, qmax = grid(bits, signed)
    return max_scale(x, qmin, qmax, axis) * 0.8


def test_grids_are_zero_point_0_and_fit_int8():
    for b in BITS:
        assert grid(b, True) == (-(2 ** (b - 1) - 1), 2 ** (b - 1) - 1)
        assert grid(b, False) == (0, min(2**b - 1, 127))
    for bad in (1, 9, 16):
        with pytest.raises(QdukdError, match="2..8"):
            grid(bad, True)


@pytest.mark.parametrize("bits,signed,axis", CASES)
def test_fake_quant_is_dequantize_of_quantize_exactly(bits, signed, axis):
    gen = torch.Generator().manual_seed(bits)
    x = torch.randn(8, 5, 7, 7, generator=gen) * torch.rand(8, 1, 1, 1, generator=gen) * 4
    s = _scale(x, bits, signed, axis)
    qmin, qmax = grid(bits, signed)
    # exact ties (k + 0.5) * s exercise round-half-to-even
    ties = (torch.arange(-3, 4, dtype=torch.float32) + 0.5)
    x[0, 0, 0, :7] = ties * (s if axis is None else s[0])
    q = quantize(x, s, qmin, qmax, axis)
    assert q.dtype == torch.int32 and int(q.min()) >= qmin and int(q.max()) <= qmax
    assert torch.equal(fake_quantize(x, s, qmin, qmax, axis), dequantize(q, s, axis))
    assert torch.equal(fake_quantize(torch.zeros(3), s.max(), qmin, qmax), torch.zeros(3))  # zero point 0


def test_exact_on_a_real_image():
    path = shared_path("benchmarks", "Set5", "HR", "baby.png")
    x = torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)
    x = (x - 0.45) * 255.0  # the mean-shifted range EDSR/RCAN compute in
    for bits, signed, axis in CASES:
        s = _scale(x, bits, signed, axis)
        qmin, qmax = grid(bits, signed)
        assert torch.equal(fake_quantize(x, s, qmin, qmax, axis), dequantize(quantize(x, s, qmin, qmax, axis), s, axis))


def test_module_output_is_exact_and_positive_scale():
    q = FakeQuantizer(3, signed=True, channels=4)
    w = torch.randn(4, 2, 3, 3)
    q.set_scale(torch.tensor([0.1, 0.2, 0.3, 0.4]))
    with torch.no_grad():
        q.scale[1] = -0.2  # an optimizer overshooting: the effective step stays positive
    s = q.effective_scale().detach()
    assert bool((s > 0).all()) and float(s[1]) == pytest.approx(0.2)
    assert torch.equal(q(w), dequantize(quantize(w, s, q.qmin, q.qmax, 0), s, 0))


def test_uncalibrated_quantizer_refuses_to_run():
    with pytest.raises(QdukdError, match="calibrate"):
        FakeQuantizer(4)(torch.ones(3))


# --- gradients, derived from the papers (not from the code under test) ---------------------

V = [-3.3, -1.6, -0.74, 0.2, 0.55, 0.74, 1.3, 2.9, 4.1]
W = [0.3, -1.0, 0.5, 2.0, -0.7, 1.1, -0.2, 0.9, 0.4]  # dL/dy for L = sum(W * y)


def _lsq_reference(v: list[float], w: list[float], s: float, qn: int, qp: int) -> tuple[float, list[float]]:
    """LSQ (Esser et al. 2020), eq. 3 and the STE, with g = 1 / sqrt(N * Qp) (section 2.2)."""
    g = 1.0 / math.sqrt(len(v) * qp)
    ds, dv = 0.0, []
    for vi, wi in zip(v, w, strict=True):
        r = vi / s
        if r <= -qn:
            ds, inside = ds + wi * -qn, 0.0
        elif r >= qp:
            ds, inside = ds + wi * qp, 0.0
        else:
            ds, inside = ds + wi * (round(r) - r), 1.0  # no exact ties in V / s
        dv.append(wi * inside)
    return ds * g, dv


@pytest.mark.parametrize("bits,signed", [(2, True), (3, True), (4, True), (2, False), (4, False), (8, True)])
def test_lsq_step_gradient_matches_the_paper(bits, signed):
    s = 0.5
    q = FakeQuantizer(bits, signed=signed, learnable="lsq")
    q.set_scale(torch.tensor(s))
    x = torch.tensor(V, requires_grad=True)
    (q(x) * torch.tensor(W)).sum().backward()
    qmin, qmax = grid(bits, signed)
    ds, dv = _lsq_reference(V, W, s, -qmin, qmax)
    assert float(q.scale.grad) == pytest.approx(ds, rel=1e-5, abs=1e-7)
    assert x.grad.tolist() == pytest.approx(dv)


def test_lsq_per_channel_gradient_uses_each_channels_count():
    s = [0.5, 0.25]
    q = FakeQuantizer(3, signed=True, channels=2)
    q.set_scale(torch.tensor(s))
    x = torch.tensor([V[:4], V[4:8]])
    w = torch.tensor([W[:4], W[4:8]])
    (q(x) * w).sum().backward()
    for c in range(2):
        ds, _ = _lsq_reference(x[c].tolist(), w[c].tolist(), s[c], 3, 3)
        assert float(q.scale.grad[c]) == pytest.approx(ds, rel=1e-5)


def test_pact_gradient_is_one_per_clipped_element():
    # PACT (Choi et al. 2018): y = clip(x, 0, alpha) quantized; dy/dalpha = 1 where x >= alpha.
    bits, alpha = 4, 1.5
    q = FakeQuantizer(bits, signed=False, learnable="pact")
    qmax = grid(bits, False)[1]
    q.set_scale(torch.tensor(alpha / qmax))
    x = torch.tensor(V, requires_grad=True)
    (q(x) * torch.tensor(W)).sum().backward()
    d_alpha = sum(w for v, w in zip(V, W, strict=True) if v >= alpha)
    assert float(q.scale.grad) == pytest.approx(d_alpha * qmax, rel=1e-5)  # d/ds = qmax * d/dalpha
    assert x.grad.tolist() == pytest.approx([w if 0 < v < alpha else 0.0 for v, w in zip(V, W, strict=True)])


def test_fixed_range_gets_no_gradient():
    q = FakeQuantizer(4, learnable="none")
    q.set_scale(torch.tensor(0.5))
    x = torch.tensor(V, requires_grad=True)
    q(x).sum().backward()
    assert not q.scale.requires_grad and x.grad is not None


# --- range choices ------------------------------------------------------------------------

def test_ranges_max_percentile_mse():
    x = torch.randn(200_000, generator=torch.Generator().manual_seed(1))
    x[0] = 40.0  # one outlier
    qmin, qmax = grid(4, True)
    s_max = max_scale(x, qmin, qmax)
    assert float(s_max) == pytest.approx(40.0 / 7)
    s_pct = percentile_scale(x, qmin, qmax, percentile=99.9)
    assert float(s_pct) == pytest.approx(float(x.abs().quantile(0.999)) / 7, rel=1e-4)
    s_mse = mse_scale(x, qmin, qmax)

    def err(s):
        return float((fake_quantize(x, s, qmin, qmax) - x).pow(2).mean())

    assert err(s_mse) < err(s_pct) < err(s_max)
    assert torch.equal(choose_scale(x, "mse", qmin, qmax), s_mse)


def test_ranges_per_channel_and_unsigned():
    w = torch.randn(3, 4, 3, 3)
    w[1] *= 10
    s = max_scale(w, *grid(8, True), axis=0)
    assert s.shape == (3,) and torch.allclose(s, w.abs().amax(dim=(1, 2, 3)) / 127)
    assert mse_scale(w, *grid(4, True), axis=0).shape == (3,)
    relu = torch.relu(torch.randn(1000)) + 0.0
    assert float(max_scale(relu, *grid(4, False))) == pytest.approx(float(relu.max()) / 15)
