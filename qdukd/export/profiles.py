"""Deployment target profiles: one TOML file per target, shipped from the repository's ``export/``.

A profile fixes everything about a deployment that is not in the checkpoint: the ONNX opset,
how activations are stored, which weight bit-widths the target runs, the dynamic input range,
the precision of layers the student keeps in float, TensorRT builder settings, which backends
the parity gate runs and its tolerance, and the Triton model repository it writes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ..config import from_dict
from ..errors import QdukdError
from ..resources import profile_path, shipped_profiles
from ..tomlcompat import tomllib

BACKENDS = ("onnxruntime-cpu-reference", "onnxruntime-cpu", "onnxruntime-cpu-int4", "onnxruntime-cuda",
            "onnxruntime-tensorrt", "tensorrt")


@dataclass(frozen=True)
class GraphSection:
    """The exported Q/DQ graph.

    ``activations``: the 8-bit container of every activation: ``"int8"`` with zero point 0
    (TensorRT: no UINT8 inside a network, zero points must be 0) or ``"uint8"`` (ONNX Runtime:
    zero point 0 for unsigned grids, 128 for signed ones; one type for all activations, which
    its QLinearConv / QLinearAdd fusion needs). ``clip``: ``"exact"`` clips every activation
    to its grid before Q (what PyTorch computes); ``"container"`` drops the clip of 8-bit
    grids (their codes may then reach the container's ends: -128, or 128..255 for unsigned
    grids), which lets ONNX Runtime fuse the convs; the parity gate decides whether that is
    within tolerance. Sub-8-bit grids are always clipped.
    ``head_tail``: the precision of the layers the student keeps in float (its head and tail):
    ``"fp32"``, or ``"fp16"`` where a backend can (TensorRT's FP16 flag).
    """

    opset: int = 17
    weight_bits: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8)
    activations: Literal["uint8", "int8"] = "uint8"
    clip: Literal["exact", "container"] = "exact"
    int4_weights: bool = False  # also write model_int4.onnx (INT4-packed weights, opset >= 21)
    head_tail: Literal["fp32", "fp16"] = "fp32"


@dataclass(frozen=True)
class ShapeSection:
    """The dynamic LR input range as ``[N, H, W]`` (channels are always 3)."""

    min: tuple[int, ...] = (1, 8, 8)
    opt: tuple[int, ...] = (1, 256, 256)
    max: tuple[int, ...] = (4, 1024, 1024)


@dataclass(frozen=True)
class OnnxRuntimeSection:
    """ONNX Runtime session settings for the optimised (fused) CPU backend.

    ``exact_u8u8``: x86 CPUs without VNNI add pairs of u8 x s8 products in int16 with
    saturation, so 8-bit weights next to large activation codes overflow in the fused
    kernels; ``session.x64quantprecision = 1`` switches to exact U8U8 kernels, at about the
    speed of FP32 (on every x86 CPU, VNNI or not: measured). ``"auto"`` sets it only where the
    CPU lacks VNNI, ``"on"`` always, ``"off"`` never.
    """

    exact_u8u8: Literal["auto", "on", "off"] = "auto"
    session_config: dict[str, str] = field(default_factory=dict)  # more add_session_config_entry pairs


@dataclass(frozen=True)
class TensorRTSection:
    """TensorRT engine build (explicit quantization: the graph's Q/DQ decide the INT8 layers)."""

    build: bool = False
    workspace_mib: int = 2048
    optimization_level: int = 3  # builder_optimization_level, 0-5
    timing_cache: str = "timing.cache"  # kept beside the engine and reused by later builds


@dataclass(frozen=True)
class VerifySection:
    """The parity gate: which backends run and how far each may drift from PyTorch."""

    max_psnr_drop: float = 0.01  # dB of PSNR_Y, either sign
    backends: tuple[str, ...] = ("onnxruntime-cpu-reference", "onnxruntime-cpu")
    convention: Literal["float", "uint8"] = "float"


@dataclass(frozen=True)
class TritonSection:
    """The Triton Inference Server model repository written beside the model."""

    backends: tuple[Literal["onnxruntime", "tensorrt_plan"], ...] = ("onnxruntime",)
    max_batch_size: int = 4
    max_queue_delay_us: int = 500
    instance_kind: Literal["KIND_CPU", "KIND_GPU", "KIND_AUTO"] = "KIND_AUTO"


@dataclass(frozen=True)
class ExportProfile:
    name: str = ""
    description: str = ""
    graph: GraphSection = field(default_factory=GraphSection)
    shapes: ShapeSection = field(default_factory=ShapeSection)
    onnxruntime: OnnxRuntimeSection = field(default_factory=OnnxRuntimeSection)
    tensorrt: TensorRTSection = field(default_factory=TensorRTSection)
    verify: VerifySection = field(default_factory=VerifySection)
    triton: TritonSection = field(default_factory=TritonSection)


def available_profiles() -> list[str]:
    """Names of the shipped profiles (the repository's ``export/*.toml``), sorted."""
    return shipped_profiles()


def _validate(p: ExportProfile, where: str) -> None:
    g, s = p.graph, p.shapes
    if not 13 <= g.opset <= 21:
        raise QdukdError(f"{where}: graph.opset must be 13-21 (per-channel Q/DQ needs 13), got {g.opset}")
    if g.int4_weights and g.opset < 21:
        raise QdukdError(f"{where}: graph.int4_weights needs graph.opset = 21 (INT4 tensors), got {g.opset}")
    if not g.weight_bits or not set(g.weight_bits) <= set(range(2, 9)):
        raise QdukdError(f"{where}: graph.weight_bits must be bit-widths in 2-8, got {list(g.weight_bits)}")
    if any(len(v) != 3 for v in (s.min, s.opt, s.max)) or \
            not all(1 <= a <= b <= c for a, b, c in zip(s.min, s.opt, s.max)):
        raise QdukdError(f"{where}: shapes need [N, H, W] with 1 <= min <= opt <= max per dimension, "
                         f"got {list(s.min)}, {list(s.opt)}, {list(s.max)}")
    unknown = [b for b in p.verify.backends if b not in BACKENDS]
    if unknown:
        raise QdukdError(f"{where}: unknown verify backend {unknown[0]!r}; choose from {', '.join(BACKENDS)}")
    if p.verify.max_psnr_drop < 0:
        raise QdukdError(f"{where}: verify.max_psnr_drop must be >= 0, got {p.verify.max_psnr_drop}")
    if "tensorrt_plan" in p.triton.backends and not p.tensorrt.build:
        raise QdukdError(f"{where}: triton.backends has tensorrt_plan but tensorrt.build is false")
    if p.triton.max_batch_size > s.max[0]:
        raise QdukdError(f"{where}: triton.max_batch_size {p.triton.max_batch_size} exceeds shapes.max "
                         f"batch {s.max[0]}")


def load_profile(target: str | Path) -> ExportProfile:
    """Read a profile.

    Args:
        target: a path to a ``.toml`` file (an existing file wins) or a shipped profile's name.

    Raises:
        QdukdError: unknown name, missing file, invalid TOML, unknown key or inconsistent values.
    """
    path = profile_path(target)
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise QdukdError(f"{path}: not valid TOML: {e}") from None
    try:
        profile = from_dict(ExportProfile, {"name": path.stem, **data})
    except QdukdError as e:
        raise QdukdError(f"{path}: {e}") from None
    _validate(profile, str(path))
    return profile
