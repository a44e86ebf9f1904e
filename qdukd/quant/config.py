"""``QuantConfig``: which layers get which bits, how ranges learn and how they start.

Recipes read it from a ``[quant]`` TOML section; CLIs from a string such as ``"w4a4"`` or
``"w4a4,head_tail=int8,learnable=pact"`` (:meth:`QuantConfig.from_string`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from .. import config as strict
from ..errors import QdukdError
from .quantizers import BITS, Learnable
from .ranges import Method

_SPEC = re.compile(r"w(\d+)a(\d+)")


@dataclass(frozen=True)
class QuantConfig:
    """Quantization-aware training settings (see docs/QUANTIZATION.md).

    Attributes:
        w_bits: weight bits of the body's layers (2..8).
        a_bits: input-activation bits of the body's layers (2..8).
        per_channel: one weight step per output channel (else one per tensor).
        learnable: "lsq" (steps learn with LSQ), "pact" (activation clip levels learn with
            PACT's gradient, weight steps with LSQ) or "none" (ranges stay as calibrated).
        act_signed: "auto" (unsigned grid where calibration sees no negatives), "signed" or
            "unsigned" for every activation quantizer.
        quantize_adds: quantize both inputs of residual adds (``models.common.Add``), as
            TensorRT needs to fuse an INT8 add into the preceding conv (and ONNX Runtime to fuse
            the conv before it). Off by default, as in the SR-quantization literature: a
            per-tensor grid on the residual stream costs IMDN x4 0.06 dB at W8A8 (docs/RESULTS.md).
        share_inputs: layers that read the same tensor at the same bits share one input
            quantizer, so deployment runtimes quantize it once (ONNX Runtime then fuses the conv
            that makes it; see :mod:`~qdukd.quant.sharing`).
        quantize_bias: conv / linear biases on the int32 accumulator grid (step = input step x
            weight step), as integer kernels add them; without it ONNX Runtime, which rounds a
            float bias that way, differs from PyTorch by a fraction of a step at every layer.
        head_tail: "fp" keeps the first conv and the upsampler / HR-resolution layers in float
            (the SR-quantization convention), "int8" quantizes them at 8 bits.
        rules: ``(fnmatch pattern on the module name, w_bits, a_bits)`` for mixed precision;
            the first matching rule wins and overrides the head/tail default.
        skip: fnmatch patterns of module names that stay in float (checked before rules).
        calibration: how :func:`~qdukd.quant.calibrate` picks initial ranges.
        percentile: the percentile used by ``calibration="percentile"``.
    """

    w_bits: int = 4
    a_bits: int = 4
    per_channel: bool = True
    learnable: Learnable = "lsq"
    act_signed: Literal["auto", "signed", "unsigned"] = "auto"
    quantize_adds: bool = False
    share_inputs: bool = False
    quantize_bias: bool = True
    head_tail: Literal["fp", "int8"] = "fp"
    rules: tuple[tuple[str, int, int], ...] = ()
    skip: tuple[str, ...] = ()
    calibration: Method = "mse"
    percentile: float = 99.99

    def __post_init__(self) -> None:
        for where, bits in [("w_bits", self.w_bits), ("a_bits", self.a_bits)] + [
                (f"rules[{i}] ({r[0]!r})", b) for i, r in enumerate(self.rules) for b in r[1:]]:
            if bits not in BITS:
                raise QdukdError(f"quant {where} must be 2..8 bits, got {bits!r} "
                                 "(TensorRT runs at most INT8; use skip=[...] to keep a layer in float)")
        if not 0.0 < self.percentile <= 100.0:
            raise QdukdError(f"quant percentile must be in (0, 100], got {self.percentile!r} (try 99.99)")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> QuantConfig:
        """Build from plain values; unknown keys are rejected with the closest valid key."""
        return strict.from_dict(cls, data, "quant")

    @classmethod
    def from_saved(cls, data: dict[str, Any]) -> QuantConfig:
        """A config stored in a checkpoint or quant state by any qdukd version: keys added since
        take the behaviour of the version that saved it (before ``quantize_bias``: float biases)."""
        return cls.from_dict({"quantize_bias": False, **data})

    @classmethod
    def from_string(cls, spec: str) -> QuantConfig:
        """Parse ``"w4a4"`` optionally followed by ``,key=value`` pairs (TOML values).

        Args:
            spec: e.g. ``"w8a8"``, ``"w4a4,head_tail=int8"``, ``"w2a4,skip=['body.0.*']"``.
        """
        head, *pairs = _split_pairs(spec)
        match = _SPEC.fullmatch(head)
        if match is None:
            raise QdukdError(f"quantization spec {spec!r} must start with w<bits>a<bits>, e.g. w4a4 "
                             "(then optional ,key=value pairs)")
        data: dict[str, Any] = {"w_bits": int(match[1]), "a_bits": int(match[2])}
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep:
                raise QdukdError(f"quantization spec {spec!r}: {pair!r} must look like key=value")
            data[key.strip()] = strict.parse_scalar(value.strip())
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/TOML values (the inverse of :meth:`from_dict`)."""
        return strict.to_dict(self)


def _split_pairs(spec: str) -> list[str]:
    """Split at commas outside brackets, so list values like ``skip=['a','b']`` stay whole."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(spec):
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            parts.append(spec[start:i].strip())
            start = i + 1
    return parts + [spec[start:].strip()]
