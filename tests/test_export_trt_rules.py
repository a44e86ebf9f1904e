"""TensorRT import rules on hand-built graphs: each violation is found and names its node."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from qdukd.export.trt_rules import check_tensorrt


def _graph(qdq_dtype=np.int8, act_scale=0.05, act_zp=0, weight_axis=0, act_per_axis=False, extra=(),
           opset=17, scale_is_input=False, op="Conv") -> onnx.ModelProto:
    """x -> Q/DQ -> Conv(DQ(int8 W)) -> y, with one knob per rule (``op="ConvTranspose"``: its
    (in, out, kH, kW) weight, 4 output channels either way)."""
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3) if op == "Conv" else (3, 4, 3, 3), np.int8), "w_q")
    w_scale = numpy_helper.from_array(np.full(4, 0.01, np.float32), "w_s")
    w_zp = numpy_helper.from_array(np.zeros(4, np.int8), "w_zp")
    a_scale = np.full(3, act_scale, np.float32) if act_per_axis else np.array(act_scale, np.float32)
    inits = [w, w_scale, w_zp, numpy_helper.from_array(np.array(act_zp, qdq_dtype), "a_zp")]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", "W"])]
    if scale_is_input:
        inputs.append(helper.make_tensor_value_info("a_s", TensorProto.FLOAT, []))
    else:
        inits.append(numpy_helper.from_array(a_scale, "a_s"))
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "a_s", "a_zp"], ["xq"], name="act_q", axis=1),
        helper.make_node("DequantizeLinear", ["xq", "a_s", "a_zp"], ["xd"], name="act_dq", axis=1),
        helper.make_node("DequantizeLinear", ["w_q", "w_s", "w_zp"], ["wd"], name="w_dq", axis=weight_axis),
        helper.make_node(op, ["xd", "wd"], ["c"], name="conv", pads=[1, 1, 1, 1]),
        *extra,
    ]
    out = extra[-1].output[0] if extra else "c"
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
                              inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


def test_clean_graph_passes():
    assert check_tensorrt(_graph()) == []
    assert check_tensorrt(_graph(op="ConvTranspose", weight_axis=1)) == []  # per output channel: axis 1


@pytest.mark.parametrize("kwargs, node, words", [
    ({"act_zp": 3}, "act_q", "zero point"),
    ({"act_scale": -0.05}, "act_q", "non-positive"),
    ({"act_scale": 0.0}, "act_dq", "non-positive"),
    ({"qdq_dtype": np.uint8}, "act_q", "UINT8"),
    ({"act_per_axis": True}, "act_q", "per-axis scales (axis 1) on an activation"),
    ({"weight_axis": 1}, "w_dq", "needs axis 0"),
    ({"op": "ConvTranspose", "weight_axis": 0}, "w_dq", "a ConvTranspose weight needs axis 1"),
    ({"scale_is_input": True}, "act_q", "not a constant"),
    ({"opset": 21}, "<model>", "opset 21"),
])
def test_each_violation_names_its_node(kwargs, node, words):
    violations = check_tensorrt(_graph(**kwargs))
    assert any(v.node == node and words in v.rule for v in violations), violations


def test_unsupported_operators_are_named():
    extra = (helper.make_node("QLinearConv", ["c"], ["y"], name="fused", domain="com.microsoft"),)
    violations = check_tensorrt(_graph(extra=extra))
    assert [str(v) for v in violations] == [
        "fused (com.microsoft.QLinearConv): operator not imported by TensorRT's ONNX parser"]


def test_resize_modes():
    extra = (helper.make_node("Resize", ["c", "", "sc"], ["y"], name="up", mode="cubic"),)
    model = _graph(extra=extra)
    model.graph.initializer.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "sc"))
    assert [v.node for v in check_tensorrt(model)] == ["up"]
