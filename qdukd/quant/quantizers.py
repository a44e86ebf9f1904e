"""Fake quantization onto zero-point-0 integer grids: the math (pure functions) and one module.

Grids (both fit INT8 with zero point 0, the only activation format TensorRT runs inside a network):

- signed ``[-(2^(b-1) - 1), 2^(b-1) - 1]``: symmetric, so ``x`` and ``-x`` quantize alike and
  TensorRT's INT8 code -128 is never produced;
- unsigned ``[0, min(2^b - 1, 127)]`` for non-negative tensors. At 8 bits it stops at 127,
  not 255: UINT8 exists in TensorRT only at network inputs/outputs, and activation codes <= 127
  also keep ONNX Runtime's u8s8 AVX2 kernels from saturating.

:func:`fake_quantize` runs torch's fused ``fake_quantize_per_*_affine`` kernels, which compute
``q = clamp(round_half_even(x * (1 / s)), qmin, qmax)`` with ``1 / s`` rounded to float32 first
(a multiply, not ``x / s``) and ``x_hat = q * s``; :func:`quantize` / :func:`dequantize` do the
same arithmetic, so ``fake_quantize(x) == dequantize(quantize(x))`` exactly.
The backward pass is LSQ's (Esser et al., "Learned step size quantization", ICLR 2020):
a straight-through estimator for ``x`` and, for the step ``s``,
``d x_hat / d s = round(x / s) - x / s`` inside the range and ``qmin`` / ``qmax`` where clipped,
times the gradient scale ``g = 1 / sqrt(numel * qmax)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
from torch import nn

from ..errors import QdukdError

Learnable = Literal["lsq", "pact", "none"]

BITS = range(2, 9)
# TensorRT needs strictly positive scales; also keeps 1 / s finite for all-zero tensors.
MIN_SCALE = 1e-8


def grid(bits: int, signed: bool) -> tuple[int, int]:
    """``(qmin, qmax)`` of the ``bits``-bit grid (see the module docstring).

    Args:
        bits: 2..8.
        signed: symmetric signed grid, or the unsigned grid for non-negative tensors.
    """
    if bits not in BITS:
        raise QdukdError(f"quantization bit width must be 2..8, got {bits!r} (TensorRT runs at most INT8)")
    if signed:
        return -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
    return 0, min(2**bits - 1, 127)


def weight_learnable(learnable: Learnable) -> Learnable:
    """How a weight step learns under ``learnable``: PACT clips activations, so weights use LSQ."""
    return "none" if learnable == "none" else "lsq"


def lsq_grad_scale(numel: int, qmax: int) -> float:
    """LSQ's step-size gradient scale ``1 / sqrt(numel * qmax)``.

    Args:
        numel: elements that share the step (the whole tensor, or one output channel).
        qmax: the grid's positive end.
    """
    return 1.0 / math.sqrt(numel * qmax)


def _along(scale: torch.Tensor, x: torch.Tensor, axis: int | None) -> torch.Tensor:
    """``scale`` shaped to broadcast against ``x``: per tensor, or per index of ``axis``."""
    if axis is None:
        return scale
    shape = [1] * x.dim()
    shape[axis] = -1
    return scale.reshape(shape)


def quantize(x: torch.Tensor, scale: torch.Tensor, qmin: int, qmax: int, axis: int | None = None) -> torch.Tensor:
    """Integer codes of ``x`` (int32) on the zero-point-0 grid ``[qmin, qmax]``.

    Args:
        x: float tensor.
        scale: positive step, a scalar tensor or one value per index of ``axis``.
        qmin, qmax: grid ends (see :func:`grid`).
        axis: the per-channel axis of ``x``, or None for one step per tensor.
    """
    return torch.mul(x, 1.0 / _along(scale, x, axis)).round_().clamp_(qmin, qmax).to(torch.int32)


def dequantize(q: torch.Tensor, scale: torch.Tensor, axis: int | None = None) -> torch.Tensor:
    """``q * scale`` in ``scale``'s float type.

    Args:
        q: integer codes from :func:`quantize`.
        scale: the step used to quantize.
        axis: the per-channel axis, or None.
    """
    return q.to(scale.dtype) * _along(scale, q, axis)


class _FakeQuantize(torch.autograd.Function):
    """Forward: torch's fused fake-quant kernel (same arithmetic as :func:`quantize`, one pass);
    backward: LSQ (or PACT) in a few fused passes."""

    @staticmethod
    def forward(ctx, x, scale, qmin, qmax, axis, grad_scale, clip_grad_only):  # type: ignore[override]
        # One kernel per call, not four: short elementwise ops are what a busy CPU slows most.
        zero = torch.zeros(scale.shape, dtype=torch.int32, device=scale.device)
        if axis is None:
            y = torch.fake_quantize_per_tensor_affine(x, scale, zero, qmin, qmax)
        else:
            y = torch.fake_quantize_per_channel_affine(x, scale, zero, axis, qmin, qmax)
        ctx.save_for_backward(x, y, scale)
        ctx.args = (qmin, qmax, axis, grad_scale, clip_grad_only)
        return y

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        x, y, scale = ctx.saved_tensors
        qmin, qmax, axis, grad_scale, clip_grad_only = ctx.args
        xs = x * (1.0 / _along(scale, x, axis))
        # hardtanh_backward(g, xs, qmin, qmax) = g where qmin < xs < qmax, else 0: the
        # straight-through estimator's mask in one fused pass, with integer bounds for any axis.
        dx = torch.ops.aten.hardtanh_backward(dy, xs, qmin, qmax) if ctx.needs_input_grad[0] else None
        dscale = None
        if ctx.needs_input_grad[1]:
            # s * dy/ds = y - x inside the range (= s * (round(x/s) - x/s)), y = s * qmin|qmax outside;
            # PACT keeps only the clipped part (dy/dalpha = 1 beyond the clip level).
            inside = torch.ops.aten.hardtanh_backward(y if clip_grad_only else x, xs, qmin, qmax)
            s_dyds = torch.sub(y, inside, out=inside)
            if axis is None:
                total = torch.dot(dy.reshape(-1), s_dyds.reshape(-1))  # one fused pass
            else:
                total = (dy * s_dyds).sum([d for d in range(dy.dim()) if d != axis])
            dscale = (total * grad_scale / scale).reshape(scale.shape)
        return dx, dscale, None, None, None, None, None


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, qmin: int, qmax: int, axis: int | None = None,
                  grad_scale: float = 1.0, clip_grad_only: bool = False) -> torch.Tensor:
    """``dequantize(quantize(x, scale, ...))`` (bit-exact), differentiable in ``x`` and ``scale``.

    Args:
        x: float tensor.
        scale: positive step (scalar or per-channel); gets a gradient if it requires one.
        qmin, qmax: grid ends.
        axis: per-channel axis of ``x``, or None.
        grad_scale: multiplies the step's gradient (LSQ's ``g``; 1 for PACT).
        clip_grad_only: PACT's step gradient (clipped elements only) instead of LSQ's.
    """
    return _FakeQuantize.apply(x, scale, qmin, qmax, axis, grad_scale, clip_grad_only)


class FakeQuantizer(nn.Module):
    """Fake-quantizes one tensor (a layer's weight or input) with a learnable or fixed step.

    State dict: ``scale`` (a Parameter while learnable, a buffer when fixed or frozen; shape
    ``()`` or ``(channels,)``) and ``signed`` (which grid; activations pick it at calibration).
    The effective step is ``|scale|`` floored at :data:`MIN_SCALE`, so it stays positive
    whatever the optimizer does.

    Args:
        bits: 2..8.
        signed: the grid until :meth:`set_signed` changes it.
        channels: number of steps along ``axis`` (per-channel weights), or None for one step.
        learnable: "lsq" (LSQ step gradient), "pact" (PACT clip gradient) or "none" (fixed).
        device: where the state lives.
        axis: the per-channel axis (the output channels: 0 for conv / linear weights, 1 for
            transposed-conv weights); unused when ``channels`` is None.
    """

    def __init__(self, bits: int, signed: bool = True, channels: int | None = None, learnable: Learnable = "lsq",
                 device: torch.device | str | None = None, axis: int = 0) -> None:
        super().__init__()
        self.bits = bits
        self.learnable = learnable
        self.axis = None if channels is None else axis
        self.enabled = True  # off: identity (calibration observes FP tensors this way)
        self.ready = False  # has a range (calibrated, set, or loaded from a state dict)
        init = torch.ones(() if channels is None else (channels,), device=device)
        if learnable == "none":
            self.register_buffer("scale", init)
        else:
            self.scale = nn.Parameter(init)
        self.register_buffer("signed", torch.tensor(signed, device=device))
        self.qmin, self.qmax = grid(bits, signed)

    @property
    def is_signed(self) -> bool:
        return self.qmin < 0

    @property
    def frozen(self) -> bool:
        """True when the step is a constant (``learnable="none"`` or after :meth:`freeze`)."""
        return not isinstance(self.scale, nn.Parameter)

    def effective_scale(self) -> torch.Tensor:
        """The positive step the forward pass uses (differentiable in ``scale``)."""
        return self.scale.abs().clamp_min(MIN_SCALE)

    def set_signed(self, signed: bool) -> None:
        with torch.no_grad():
            self.signed.fill_(signed)
        self.qmin, self.qmax = grid(self.bits, signed)

    @torch.no_grad()
    def set_scale(self, scale: torch.Tensor) -> None:
        """Set the step (e.g. from calibration) and mark the quantizer ready."""
        self.scale.copy_(scale.clamp_min(MIN_SCALE))
        self.ready = True

    def freeze(self) -> None:
        """Make the step a constant buffer (same name, same value); a no-op when already frozen."""
        if not self.frozen:
            value = self.scale.detach().clone()
            del self.scale
            self.register_buffer("scale", value)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # type: ignore[no-untyped-def]
        has_scale = prefix + "scale" in state_dict
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        # The grid lives in python ints for speed; resync it with the loaded buffer.
        self.qmin, self.qmax = grid(self.bits, bool(self.signed))
        self.ready = self.ready or has_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return x
        if not self.ready:
            raise QdukdError("a quantizer has no range yet: run qdukd.quant.calibrate(model, batches) "
                             "or load a QAT checkpoint before the forward pass")
        per_step = x.numel() if self.axis is None else x.numel() // x.shape[self.axis]
        pact = self.learnable == "pact"
        g = 1.0 if pact else lsq_grad_scale(per_step, self.qmax)
        return fake_quantize(x, self.effective_scale(), self.qmin, self.qmax, self.axis, g, pact)

    def extra_repr(self) -> str:
        kind = "per-tensor" if self.axis is None else f"per-channel(axis={self.axis})"
        return f"bits={self.bits}, grid=[{self.qmin}, {self.qmax}], {kind}, learnable={self.learnable!r}"


@contextmanager
def float_eval(model: nn.Module, handles: Iterable[Any] = ()) -> Iterator[None]:
    """Run ``model`` as its float network in eval mode (every fake quantizer off); afterwards
    restore the quantizers and the train/eval mode and remove the hook ``handles``."""
    quantizers = [m for m in model.modules() if isinstance(m, FakeQuantizer)]
    was_training = model.training
    try:
        for q in quantizers:
            q.enabled = False
        model.eval()
        yield
    finally:
        model.train(was_training)
        for q in quantizers:
            q.enabled = True
        for h in handles:
            h.remove()
