"""Running exported models: ONNX Runtime sessions and TensorRT engines as array functions.

Every runner maps float32 N x 3 x H x W in [0, 1] to float32 N x 3 x sH x sW, so the parity
gate and the upscaler treat all backends alike. A backend that cannot run here raises
:class:`Unavailable` with the reason, which callers report as "skipped: <reason>".
"""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import QdukdError
from . import tensorrt_engine
from .onnx_export import INPUT_NAME
from .profiles import ExportProfile, OnnxRuntimeSection

ArrayFunction = Callable[[np.ndarray], np.ndarray]

# The execution provider each ONNX Runtime backend needs first in the session's list.
_ORT_PROVIDERS = {
    "onnxruntime-cpu-reference": "CPUExecutionProvider",
    "onnxruntime-cpu": "CPUExecutionProvider",
    "onnxruntime-cpu-int4": "CPUExecutionProvider",
    "onnxruntime-cuda": "CUDAExecutionProvider",
    "onnxruntime-tensorrt": "TensorrtExecutionProvider",
}


class Unavailable(Exception):
    """A backend cannot run on this machine; the message says why."""


def cpu_saturates_u8s8() -> bool:
    """True on x86 CPUs without VNNI, where ONNX Runtime's fused u8 x s8 kernels can saturate."""
    return platform.machine().lower() in ("x86_64", "amd64") and not torch.cpu._is_vnni_supported()


def session_config(section: OnnxRuntimeSection) -> dict[str, str]:
    """The session config entries a profile's ``[onnxruntime]`` section asks for on this CPU."""
    config = {k: str(v) for k, v in section.session_config.items()}
    if section.exact_u8u8 == "on" or (section.exact_u8u8 == "auto" and cpu_saturates_u8s8()):
        config["session.x64quantprecision"] = "1"
    return config


def ort_session(path: str | Path, provider: str = "CPUExecutionProvider", optimize: bool = True,
                session_config: dict[str, str] | None = None, threads: int = 0,
                provider_options: dict[str, str] | None = None, optimized_path: str | Path | None = None):
    """An ONNX Runtime session on one execution provider.

    Args:
        path: the ONNX model.
        provider: e.g. ``"CPUExecutionProvider"``; :class:`Unavailable` when not installed.
        optimize: all graph optimisations (Q/DQ fusion) or none (``ORT_DISABLE_ALL``, the
            unfused reference: every DequantizeLinear feeds a float kernel).
        session_config: ``add_session_config_entry`` pairs.
        threads: intra-op threads; 0 = ONNX Runtime's default.
        provider_options: options for ``provider``.
        optimized_path: where to save the optimised graph (to count fused ops).

    Raises:
        Unavailable: the provider is not available.
        QdukdError: the file is missing or not a loadable ONNX model.
    """
    import onnxruntime as ort

    if provider not in ort.get_available_providers():
        raise Unavailable(f"onnxruntime has no {provider} (installed: {', '.join(ort.get_available_providers())})")
    if not Path(path).is_file():
        raise QdukdError(f"model not found: {path}")
    so = ort.SessionOptions()
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                   else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    so.intra_op_num_threads = threads
    so.log_severity_level = 3  # hardware-specific-graph warnings would drown the report
    for key, value in (session_config or {}).items():
        so.add_session_config_entry(key, str(value))
    if optimized_path is not None:
        so.optimized_model_filepath = str(optimized_path)
    providers = [(provider, provider_options or {})]
    if provider != "CPUExecutionProvider":
        providers.append(("CPUExecutionProvider", {}))
    try:
        session = ort.InferenceSession(str(path), so, providers=providers)
    except Exception as e:  # ORT raises its own exception types for bad files
        raise QdukdError(f"cannot load ONNX model {path}: {str(e).splitlines()[0]}") from None
    if session.get_providers()[0] != provider:
        raise Unavailable(f"{provider} could not be initialised (no GPU or driver?)")
    return session


def session_function(session) -> ArrayFunction:
    """A session as an array function (its single input and output)."""
    input_name, output_name = session.get_inputs()[0].name, session.get_outputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return session.run([output_name], {input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    return run


def _trt_shape(nhw: tuple[int, ...]) -> str:
    """``(1, 8, 8)`` -> ``"lr:1x3x8x8"`` (the TensorRT provider's shape syntax)."""
    return f"{INPUT_NAME}:{nhw[0]}x3x{nhw[1]}x{nhw[2]}"


def backend_function(name: str, out_dir: Path, profile: ExportProfile) -> ArrayFunction:
    """The array function for one parity-gate backend over the artifacts in ``out_dir``.

    Args:
        name: one of :data:`qdukd.export.profiles.BACKENDS`.
        out_dir: the folder holding ``model.onnx`` (and ``model_int4.onnx``, ``model.plan``).
        profile: supplies the session settings and the TensorRT shape range.

    Raises:
        Unavailable: the backend cannot run here (missing provider, GPU, TensorRT or artifact).
    """
    model = out_dir / "model.onnx"
    if name == "tensorrt":
        reason = tensorrt_engine.unavailable_reason()
        if reason:
            raise Unavailable(reason)
        if not (out_dir / "model.plan").is_file():
            raise Unavailable("no engine was built (tensorrt.build = false in the profile)")
        return tensorrt_engine.TensorRTRunner(out_dir / "model.plan")
    if name == "onnxruntime-cpu-int4":
        model = out_dir / "model_int4.onnx"
        if not model.is_file():
            raise Unavailable("no INT4 model was written (graph.int4_weights = false in the profile)")
    options = None
    if name == "onnxruntime-tensorrt":
        s = profile.shapes
        options = {"trt_int8_enable": "True", "trt_fp16_enable": str(profile.graph.head_tail == "fp16"),
                   "trt_profile_min_shapes": _trt_shape(s.min), "trt_profile_opt_shapes": _trt_shape(s.opt),
                   "trt_profile_max_shapes": _trt_shape(s.max)}
    session = ort_session(model, _ORT_PROVIDERS[name], optimize=name != "onnxruntime-cpu-reference",
                          session_config=session_config(profile.onnxruntime) if name == "onnxruntime-cpu" else None,
                          provider_options=options)
    return session_function(session)
