"""Quantized twins of ``nn.Conv2d``, ``nn.ConvTranspose2d``, ``nn.Linear`` and ``models.common.Add``.

A twin keeps the original's parameters (same objects, same names ``weight`` / ``bias``), so FP
checkpoints load into it and an optimizer built earlier still holds them. Its quantizers add
``<layer>.weight_quant.*`` / ``<layer>.act_quant*.*`` entries to the state dict.

The exporter reads each quantized layer through ``w_bits``, ``a_bits``, ``act_signed``,
``weight_scale()``, ``int_weight()``, ``act_scale()`` and ``input_quantizers``.
"""

from __future__ import annotations

import copy
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from ..models.common import Add
from .quantizers import FakeQuantizer, Learnable, quantize, weight_learnable
from .ranges import max_scale

M = TypeVar("M", bound=nn.Module)


def retype(module: nn.Module, cls: type[M]) -> M:
    """A ``cls`` sharing ``module``'s parameters and attributes (its registries copied, not shared)."""
    twin = cls.__new__(cls)
    twin.__dict__ = {k: copy.copy(v) if isinstance(v, dict) else v for k, v in module.__dict__.items()}
    return twin


class _Inputs:
    """Input quantizers by attribute name (``INPUTS``, in forward-argument order)."""

    INPUTS: tuple[str, ...] = ()

    @property
    def input_quantizers(self) -> tuple[FakeQuantizer, ...]:
        return tuple(getattr(self, name) for name in self.INPUTS)


class _QuantWeighted(_Inputs):
    """What the weighted twins share: a per-channel weight quantizer and an input quantizer."""

    # The weight's output-channel axis, where per-channel steps run: (out, in, ...) for conv and
    # linear, (in, out / groups, kH, kW) for transposed convs.
    WEIGHT_AXIS = 0
    weight: nn.Parameter
    bias: nn.Parameter | None
    weight_quant: FakeQuantizer
    act_quant: FakeQuantizer
    # Round the bias onto the int32 accumulator grid (QuantConfig.quantize_bias).
    quantize_bias = False

    @classmethod
    def from_float(cls, module: nn.Module, w_bits: int, a_bits: int, per_channel: bool = True,
                   learnable: Learnable = "lsq", act_signed: bool = True):  # type: ignore[no-untyped-def]
        """The twin of ``module``, its weight step initialised from the weight's max.

        Args:
            module: the float layer (its parameters are shared, not copied).
            w_bits, a_bits: weight and input bits.
            per_channel: one weight step per output channel (along ``WEIGHT_AXIS``).
            learnable: how the steps learn; "pact" applies to the input (weights use LSQ).
            act_signed: the input's grid until calibration decides.
        """
        twin = retype(module, cls)
        weight, device, axis = twin.weight, twin.weight.device, cls.WEIGHT_AXIS
        twin.weight_quant = FakeQuantizer(w_bits, True, weight.shape[axis] if per_channel else None,
                                          weight_learnable(learnable), device, axis)
        wq = twin.weight_quant
        wq.set_scale(max_scale(weight, wq.qmin, wq.qmax, wq.axis))
        twin.act_quant = FakeQuantizer(a_bits, act_signed, None, learnable, device)
        return twin

    @property
    def w_bits(self) -> int:
        return self.weight_quant.bits

    @property
    def a_bits(self) -> int:
        return self.act_quant.bits

    @property
    def act_signed(self) -> bool:
        return self.act_quant.is_signed

    INPUTS = ("act_quant",)

    def weight_scale(self) -> torch.Tensor:
        """The positive weight step per index of ``WEIGHT_AXIS``, shape ``(weight.shape[WEIGHT_AXIS],)``
        (repeated if per tensor): per output channel, or for a grouped transposed conv per output
        channel of a group (shared by the groups: ONNX per-axis scales run along one weight axis)."""
        n = self.weight.shape[self.WEIGHT_AXIS]
        return self.weight_quant.effective_scale().detach().expand(n).clone()

    def int_weight(self) -> torch.Tensor:
        """The weight's int8 codes on its grid: ``weight_quant(weight) == int_weight() * weight_scale()``
        (scales along ``WEIGHT_AXIS``)."""
        wq = self.weight_quant
        return quantize(self.weight.detach(), self.weight_scale(), wq.qmin, wq.qmax, self.WEIGHT_AXIS).to(torch.int8)

    def act_scale(self) -> torch.Tensor:
        """The positive input step, a 0-d tensor."""
        return self.act_quant.effective_scale().detach()

    def effective_bias(self) -> torch.Tensor | None:
        """The bias the layer adds: with ``quantize_bias``, on the int32 grid of step input step x
        weight step (per channel), as integer kernels add it (QLinearConv; ONNX Runtime quantizes a
        float conv bias after DQ inputs the same way). Straight-through gradient to the bias."""
        if self.bias is None or not self.quantize_bias or not self.act_quant.enabled:
            return self.bias
        w_step = self.weight_scale()
        # Output channel o of a grouped transposed conv uses weight column o % (out / groups).
        step = self.act_scale() * w_step.repeat(self.bias.numel() // w_step.numel())
        on_grid = torch.round(self.bias.detach() / step) * step
        return on_grid + (self.bias - self.bias.detach())


class QuantConv2d(_QuantWeighted, nn.Conv2d):
    """``nn.Conv2d`` on a fake-quantized input with a fake-quantized weight."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(self.act_quant(x), self.weight_quant(self.weight), self.effective_bias())


class QuantConvTranspose2d(_QuantWeighted, nn.ConvTranspose2d):
    """``nn.ConvTranspose2d`` on a fake-quantized input with a weight fake-quantized per output
    channel (axis 1 of its ``(in, out / groups, kH, kW)`` weight)."""

    WEIGHT_AXIS = 1

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        output_padding = self._output_padding(x, output_size, self.stride, self.padding, self.kernel_size, 2,
                                              self.dilation)
        return F.conv_transpose2d(self.act_quant(x), self.weight_quant(self.weight), self.effective_bias(),
                                  self.stride, self.padding, output_padding, self.groups, self.dilation)


class QuantLinear(_QuantWeighted, nn.Linear):
    """``nn.Linear`` on a fake-quantized input with a fake-quantized weight."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.act_quant(x), self.weight_quant(self.weight), self.effective_bias())


class QuantAdd(_Inputs, Add):
    """``a + b`` of fake-quantized inputs (one step each)."""

    act_quant_a: FakeQuantizer
    act_quant_b: FakeQuantizer

    @classmethod
    def from_float(cls, module: Add, a_bits: int, learnable: Learnable = "lsq",
                   act_signed: tuple[bool, bool] = (True, True), device: torch.device | None = None) -> QuantAdd:
        """The twin of ``module``.

        Args:
            module: the float add.
            a_bits: bits of both inputs.
            learnable: how the steps learn.
            act_signed: each input's grid until calibration decides.
            device: where the quantizers' state lives (an add has no parameters to tell).
        """
        twin = retype(module, cls)
        twin.act_quant_a = FakeQuantizer(a_bits, act_signed[0], None, learnable, device)
        twin.act_quant_b = FakeQuantizer(a_bits, act_signed[1], None, learnable, device)
        return twin

    @property
    def a_bits(self) -> int:
        return self.act_quant_a.bits

    @property
    def act_signed(self) -> tuple[bool, bool]:
        return self.act_quant_a.is_signed, self.act_quant_b.is_signed

    INPUTS = ("act_quant_a", "act_quant_b")

    def act_scale(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The positive steps of inputs ``a`` and ``b``, 0-d tensors."""
        return self.act_quant_a.effective_scale().detach(), self.act_quant_b.effective_scale().detach()

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.act_quant_a(a) + self.act_quant_b(b)


QUANT_LAYERS = (QuantConv2d, QuantConvTranspose2d, QuantLinear, QuantAdd)


def quantized_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The quantized layers of ``model`` by module name, in module order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, QUANT_LAYERS)}
