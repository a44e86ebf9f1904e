"""What TensorRT's ONNX parser accepts, checked on the graph alone (no TensorRT, no GPU).

TensorRT imports explicitly quantized graphs only under these rules (TensorRT 10 developer
guide, "Explicit quantization"; onnx-tensorrt ``docs/operators.md`` of the 10.1 release):

- QuantizeLinear / DequantizeLinear with zero point 0 and positive, constant scales;
- INT8 (or INT4 / FP8) quantized tensors only: UINT8 exists only as a network input or output;
- per-axis scales only on constant weights (axis 0 for a Conv weight, axis 1 for a
  ConvTranspose weight: the output channels), activations per-tensor;
- ONNX opsets 9 to 20 and only the operators the parser imports.

Every violation names the node, so a failing CI log points at the layer to fix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import onnx
from onnx import numpy_helper

# The inclusive opset range TensorRT 10's ONNX parser supports.
MIN_OPSET, MAX_OPSET = 9, 20

# Operators the parser imports (onnx-tensorrt docs/operators.md, 10.1 GA release).
SUPPORTED_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast
CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum
DeformConv DepthToSpace DequantizeLinear Div Dropout Einsum Elu Equal Erf Exp Expand EyeLike
Flatten Floor Gather GatherElements GatherND Gelu Gemm GlobalAveragePool GlobalLpPool
GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU HardSigmoid HardSwish
Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu
Less LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean
MeanVarianceNormalization Min Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad
ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal RandomNormalLike RandomUniform
RandomUniformLike Range Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax
ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence
RNN RoiAlign Round ScaledTanh Scan Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid
Sign Sin Sinh Size Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tan
Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where Xor
""".split())

# Element types a Q/DQ pair may carry inside a TensorRT network.
QUANTIZED_TYPES = {onnx.TensorProto.INT8: "INT8", onnx.TensorProto.INT4: "INT4",
                   onnx.TensorProto.FLOAT8E4M3FN: "FP8"}
_WEIGHT_CONSUMERS = {"Conv": 0, "ConvTranspose": 1, "Gemm": None, "MatMul": None}  # op -> required axis
_RESIZE_MODES = {"nearest", "linear"}
_RESIZE_COORDS = {"half_pixel", "pytorch_half_pixel", "tf_half_pixel_for_nn", "asymmetric", "align_corners"}


@dataclass(frozen=True)
class Violation:
    """One reason TensorRT would refuse the graph."""

    node: str
    op: str
    rule: str

    def __str__(self) -> str:
        return f"{self.node} ({self.op}): {self.rule}"


class _Graph:
    """Constant values, producers and consumers of an ONNX graph's tensors."""

    def __init__(self, graph: onnx.GraphProto) -> None:
        self.constants: dict[str, np.ndarray] = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
        self.producer: dict[str, onnx.NodeProto] = {}
        self.consumers: dict[str, list[onnx.NodeProto]] = {}
        for node in graph.node:
            for out in node.output:
                self.producer[out] = node
            for inp in node.input:
                self.consumers.setdefault(inp, []).append(node)
            if node.op_type == "Constant":
                value = next((a for a in node.attribute if a.name == "value"), None)
                if value is not None:
                    self.constants[node.output[0]] = numpy_helper.to_array(value.t)

    def is_weight(self, name: str) -> bool:
        """A constant, possibly passed through a QuantizeLinear (TensorRT folds both forms)."""
        if name in self.constants:
            return True
        node = self.producer.get(name)
        return node is not None and node.op_type == "QuantizeLinear" and node.input[0] in self.constants

    def dtype(self, node: onnx.NodeProto) -> int | None:
        """The quantized element type of a Q/DQ node, from its zero point or its constant input."""
        if len(node.input) > 2 and node.input[2]:
            zp = self.constants.get(node.input[2])
            return None if zp is None else onnx.helper.np_dtype_to_tensor_dtype(zp.dtype)
        if node.op_type == "DequantizeLinear" and node.input[0] in self.constants:
            return onnx.helper.np_dtype_to_tensor_dtype(self.constants[node.input[0]].dtype)
        return onnx.TensorProto.UINT8 if node.op_type == "QuantizeLinear" else None  # ONNX default


def _attr(node: onnx.NodeProto, name: str, default: object) -> object:
    a = next((a for a in node.attribute if a.name == name), None)
    value = default if a is None else onnx.helper.get_attribute_value(a)
    return value.decode() if isinstance(value, bytes) else value


def _check_qdq(g: _Graph, node: onnx.NodeProto, name: str) -> list[Violation]:
    bad = []

    def fail(rule: str) -> None:
        bad.append(Violation(name, node.op_type, rule))

    scale = g.constants.get(node.input[1])
    if scale is None:
        fail(f"scale {node.input[1]!r} is not a constant")
    elif not (np.all(np.isfinite(scale)) and np.all(scale > 0)):
        fail(f"scale {node.input[1]!r} has non-positive or non-finite values (min {float(np.min(scale)):g})")
    if len(node.input) > 2 and node.input[2]:
        zp = g.constants.get(node.input[2])
        if zp is None:
            fail(f"zero point {node.input[2]!r} is not a constant")
        elif np.any(zp.astype(np.float64) != 0):
            fail(f"zero point {node.input[2]!r} is {np.unique(zp)[:4].tolist()}, TensorRT needs 0")
    dtype = g.dtype(node)
    if dtype is not None and dtype not in QUANTIZED_TYPES:
        fail(f"quantized type {onnx.TensorProto.DataType.Name(dtype)}; TensorRT quantizes to INT8, INT4 or FP8 only")
    if _attr(node, "block_size", 0):
        fail("block quantization (block_size) is not supported for convolutions")
    if scale is not None and scale.size > 1:
        bad += _check_per_axis(g, node, name)
    return bad


def _check_per_axis(g: _Graph, node: onnx.NodeProto, name: str) -> list[Violation]:
    """Per-axis scales: only on a constant weight feeding a Conv/Gemm/MatMul weight input, right axis."""
    axis = _attr(node, "axis", 1)
    if not g.is_weight(node.input[0]):
        return [Violation(name, node.op_type, f"per-axis scales (axis {axis}) on an activation; "
                                              "TensorRT allows them only on weights")]
    bad = []
    # A weight Q is followed by its DQ; the DQ's consumer decides the axis rule.
    dq_outputs = [node.output[0]] if node.op_type == "DequantizeLinear" else [
        c.output[0] for c in g.consumers.get(node.output[0], []) if c.op_type == "DequantizeLinear"]
    for out in dq_outputs:
        for consumer in g.consumers.get(out, []):
            if consumer.op_type not in _WEIGHT_CONSUMERS or list(consumer.input).index(out) != 1:
                bad.append(Violation(name, node.op_type, f"per-axis weight feeds {consumer.op_type} "
                                                         f"{consumer.name!r} other than as its weight"))
            elif _WEIGHT_CONSUMERS[consumer.op_type] not in (None, axis):
                bad.append(Violation(name, node.op_type, f"per-axis scales on axis {axis}; a "
                                                         f"{consumer.op_type} weight needs axis "
                                                         f"{_WEIGHT_CONSUMERS[consumer.op_type]}"))
    return bad


def check_tensorrt(model: onnx.ModelProto) -> list[Violation]:
    """Every reason TensorRT's ONNX parser would reject ``model`` (empty when it imports).

    Args:
        model: an ONNX model (e.g. ``onnx.load("model.onnx")``).
    """
    bad = []
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    if opset is None or not MIN_OPSET <= opset <= MAX_OPSET:
        bad.append(Violation("<model>", "opset", f"opset {opset}; TensorRT imports opsets {MIN_OPSET}-{MAX_OPSET}"))
    g = _Graph(model.graph)
    for i, node in enumerate(model.graph.node):
        name = node.name or f"#{i}"
        if node.domain not in ("", "ai.onnx") or node.op_type not in SUPPORTED_OPS:
            domain = f"{node.domain}." if node.domain else ""
            bad.append(Violation(name, f"{domain}{node.op_type}", "operator not imported by TensorRT's ONNX parser"))
        elif node.op_type in ("QuantizeLinear", "DequantizeLinear"):
            bad += _check_qdq(g, node, name)
        elif node.op_type == "Resize":
            mode, coord = _attr(node, "mode", "nearest"), _attr(node, "coordinate_transformation_mode", "half_pixel")
            if mode not in _RESIZE_MODES or coord not in _RESIZE_COORDS or _attr(node, "antialias", 0):
                bad.append(Violation(name, "Resize", f"mode {mode!r} / {coord!r} / antialias is not supported"))
    return bad
