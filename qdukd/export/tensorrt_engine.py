"""TensorRT: build an engine from the Q/DQ graph (explicit quantization) and run it.

The builder settings are a pure function of the export profile (:func:`builder_plan`), so CI
checks them without a GPU; only :func:`build_engine` and :class:`TensorRTRunner` need TensorRT
and CUDA, and :func:`unavailable_reason` says why they cannot run (reported as "skipped").
Written against the TensorRT 10 Python API (explicit batch is the default network mode).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..atomic import atomic_path
from ..errors import QdukdError
from .profiles import ExportProfile

CHANNELS = 3


@dataclass(frozen=True)
class BuilderPlan:
    """Everything :func:`build_engine` sets on the builder, as plain values."""

    input_name: str
    min_shape: tuple[int, int, int, int]
    opt_shape: tuple[int, int, int, int]
    max_shape: tuple[int, int, int, int]
    flags: tuple[str, ...]  # trt.BuilderFlag names
    workspace_bytes: int
    optimization_level: int


def builder_plan(profile: ExportProfile, input_name: str) -> BuilderPlan:
    """The TensorRT builder configuration a profile asks for.

    INT8 is always on: with explicit quantization the graph's Q/DQ pairs, not a calibrator,
    decide which layers run in INT8. FP16 is added only when the profile lets the float
    head/tail run in half precision.

    Args:
        profile: the export profile.
        input_name: the ONNX input the optimization profile shapes.
    """
    s = profile.shapes

    def nchw(nhw: tuple[int, int, int]) -> tuple[int, int, int, int]:
        return (nhw[0], CHANNELS, nhw[1], nhw[2])

    flags = ("INT8", "FP16") if profile.graph.head_tail == "fp16" else ("INT8",)
    return BuilderPlan(input_name, nchw(s.min), nchw(s.opt), nchw(s.max), flags,
                       profile.tensorrt.workspace_mib << 20, profile.tensorrt.optimization_level)


def unavailable_reason() -> str | None:
    """Why TensorRT cannot build or run here, or None when it can."""
    if importlib.util.find_spec("tensorrt") is None:
        return "TensorRT is not installed (pip install tensorrt from NVIDIA's package index)"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (torch.cuda.is_available() is False)"
    return None


def _trt():
    import tensorrt as trt

    return trt


def build_engine(onnx_path: str | Path, plan: BuilderPlan, engine_path: str | Path,
                 timing_cache: str | Path) -> None:
    """Parse the ONNX graph, build a serialized engine and write it (and the timing cache).

    Args:
        onnx_path: the Q/DQ ONNX model.
        plan: from :func:`builder_plan`.
        engine_path: where the ``.plan`` goes (written atomically).
        timing_cache: read when it exists (speeds up rebuilds), updated after the build.

    Raises:
        QdukdError: the parser rejects the graph or the builder fails (message names the node).
    """
    trt = _trt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(Path(onnx_path).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise QdukdError(f"TensorRT cannot parse {onnx_path}: {errors}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, plan.workspace_bytes)
    config.builder_optimization_level = plan.optimization_level
    for flag in plan.flags:
        config.set_flag(getattr(trt.BuilderFlag, flag))
    profile = builder.create_optimization_profile()
    profile.set_shape(plan.input_name, plan.min_shape, plan.opt_shape, plan.max_shape)
    config.add_optimization_profile(profile)

    cache_path = Path(timing_cache)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.is_file() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise QdukdError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    with atomic_path(engine_path) as tmp:
        tmp.write_bytes(bytes(serialized))
    with atomic_path(cache_path) as tmp:
        tmp.write_bytes(bytes(config.get_timing_cache().serialize()))


class TensorRTRunner:
    """Run a serialized engine on float32 NCHW arrays (CUDA buffers are torch tensors).

    Args:
        engine_path: a ``.plan`` written by :func:`build_engine` on a compatible GPU.
    """

    def __init__(self, engine_path: str | Path) -> None:
        trt = _trt()
        self._runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = self._runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise QdukdError(f"TensorRT cannot load {engine_path} (built by another TensorRT version or GPU?)")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.input_name, self.output_name = inputs[0], next(n for n in names if n not in inputs)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        stream = torch.cuda.current_stream()
        inp = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).cuda()
        self.context.set_input_shape(self.input_name, tuple(inp.shape))
        out = torch.empty(tuple(self.context.get_tensor_shape(self.output_name)), dtype=torch.float32,
                          device="cuda")
        self.context.set_tensor_address(self.input_name, inp.data_ptr())
        self.context.set_tensor_address(self.output_name, out.data_ptr())
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        stream.synchronize()
        return out.cpu().numpy()
