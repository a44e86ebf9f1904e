"""Export profiles, the TensorRT builder plan (pure), its skip path, and Triton configs."""

from __future__ import annotations

import pytest

from qdukd.errors import QdukdError
from qdukd.export import tensorrt_engine
from qdukd.export.profiles import available_profiles, load_profile
from qdukd.export.runtime import Unavailable, backend_function
from qdukd.export.triton import config_pbtxt

SHIPPED = ("onnxruntime-int8", "tensorrt-int8", "tensorrt-lowbit", "onnx-int4-weights")


def test_shipped_profiles_load(tmp_path, monkeypatch):
    assert set(SHIPPED) <= set(available_profiles())
    monkeypatch.chdir(tmp_path)  # names resolve through the installed package, from any folder
    for name in SHIPPED:
        p = load_profile(name)
        assert p.name == name and p.verify.max_psnr_drop == 0.01
    assert load_profile("tensorrt-int8").graph.weight_bits == (8,)
    assert load_profile("onnx-int4-weights").graph.int4_weights


def test_profile_by_path_and_errors(tmp_path):
    custom = tmp_path / "edge.toml"
    custom.write_text('[graph]\nopset = 13\n[shapes]\nmax = [1, 512, 512]\n[triton]\nmax_batch_size = 1\n')
    p = load_profile(custom)
    assert (p.name, p.graph.opset, p.shapes.max) == ("edge", 13, (1, 512, 512))
    with pytest.raises(QdukdError, match="unknown export profile 'tensorrt-fp4' .*; available: .*onnxruntime-int8"):
        load_profile("tensorrt-fp4")
    custom.write_text("[graph]\nopsett = 17\n")
    with pytest.raises(QdukdError, match="did you mean 'graph.opset'"):
        load_profile(custom)
    custom.write_text("[graph]\nopset = 17\nint4_weights = true\n")
    with pytest.raises(QdukdError, match="opset = 21"):
        load_profile(custom)
    custom.write_text("[shapes]\nmin = [1, 64, 64]\nopt = [1, 32, 32]\n")
    with pytest.raises(QdukdError, match="min <= opt <= max"):
        load_profile(custom)
    with pytest.raises(QdukdError, match="missing.toml' .no such file"):
        load_profile(tmp_path / "missing.toml")


def test_builder_plan_is_a_function_of_the_profile(tmp_path):
    plan = tensorrt_engine.builder_plan(load_profile("tensorrt-lowbit"), "lr")
    assert plan.flags == ("INT8",)
    assert (plan.min_shape, plan.opt_shape, plan.max_shape) == ((1, 3, 8, 8), (1, 3, 256, 256), (4, 3, 1024, 1024))
    assert plan.workspace_bytes == 2048 << 20 and plan.optimization_level == 3
    fp16 = tmp_path / "fp16.toml"
    fp16.write_text('[graph]\nhead_tail = "fp16"\n[tensorrt]\nbuild = true\n')
    assert tensorrt_engine.builder_plan(load_profile(fp16), "lr").flags == ("INT8", "FP16")


def test_tensorrt_backend_reports_why_it_is_skipped(tmp_path):
    reason = tensorrt_engine.unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT and a GPU are present: the skip path does not apply")
    with pytest.raises(Unavailable, match="TensorRT|CUDA"):
        backend_function("tensorrt", tmp_path, load_profile("tensorrt-int8"))


def test_triton_configs():
    section = load_profile("tensorrt-int8").triton
    trt = config_pbtxt("edsr_x4_trt", "tensorrt_plan", "lr", "sr", section)
    assert 'platform: "tensorrt_plan"' in trt and "max_batch_size: 4" in trt and "kind: KIND_GPU" in trt
    assert "dynamic_batching" in trt and trt.count("dims: [ 3, -1, -1 ]") == 2
    ort = config_pbtxt("edsr_x4_onnx", "onnxruntime", "lr", "sr", load_profile("onnxruntime-int8").triton)
    assert 'backend: "onnxruntime"' in ort and "kind: KIND_AUTO" in ort and 'name: "lr"' in ort
