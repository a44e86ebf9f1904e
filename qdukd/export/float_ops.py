"""Which operators ONNX Runtime still runs in float after optimising a Q/DQ graph, and why.

ONNX Runtime fuses ``DQ -> op -> Q`` into integer kernels (QLinearConv, QLinearAdd, uint8
MaxPool / DepthToSpace, ...) only where its selectors match; everything else runs as
DequantizeLinear feeding a float kernel. :func:`float_ops` optimises the model as the fused
parity-gate backend does, saves the optimised graph and lists each node that computes on float
tensors, with the reason read off the graph around it.

It stops at the "extended" optimisation level, where every Q/DQ fusion has happened: the
"all" level the backend runs only adds layout changes (float convs in ONNX Runtime's blocked
NCHWc layout, QLinearConv in NHWC), which would rename the float convs after their tensors.
"""

from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path

import onnx

from ..errors import QdukdError
from .onnx_export import links

_FLOAT = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16, onnx.TensorProto.DOUBLE}
_BOOL_OPS = {"Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual", "Not", "And", "Or", "Xor", "IsNaN", "IsInf"}
_INT64_OPS = {"Shape", "Size", "NonZero", "ArgMax", "ArgMin"}


def _output_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor, propagated through the graph in node order (the optimised
    graph has no value_info, and its contrib ops defeat ONNX shape inference)."""
    graph = model.graph
    types = {v.name: v.type.tensor_type.elem_type for v in graph.input}
    types.update({i.name: i.data_type for i in graph.initializer})
    for node in graph.node:
        known = [types[i] for i in node.input if i in types]
        if node.op_type == "QuantizeLinear":  # the zero point's type; uint8 without one
            out = types.get(node.input[2], onnx.TensorProto.UINT8) if len(node.input) > 2 else onnx.TensorProto.UINT8
        elif node.op_type == "DequantizeLinear":
            out = types.get(node.input[1], onnx.TensorProto.FLOAT)
        elif node.op_type == "Cast":
            out = next(a.i for a in node.attribute if a.name == "to")
        elif node.op_type == "ConstantOfShape":
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            out = onnx.TensorProto.FLOAT if value is None else value.data_type
        elif node.op_type in _BOOL_OPS:
            out = onnx.TensorProto.BOOL
        elif node.op_type in _INT64_OPS:
            out = onnx.TensorProto.INT64
        else:  # elementwise, data movement, float and QLinear* kernels keep their first input's type
            out = known[0] if known else onnx.TensorProto.UNDEFINED
        for name in node.output:
            types[name] = out
    return types


def _reason(node: onnx.NodeProto, activation: str | None, producers: dict[str, onnx.NodeProto],
            consumers: dict[str, list[onnx.NodeProto]], outputs: set[str], constants: set[str]) -> str:
    """Why ``node`` stayed float, from the nodes around it."""
    activations = [i for i in node.input if i and i not in constants]
    if not any(getattr(producers.get(i), "op_type", None) == "DequantizeLinear" for i in activations):
        return "reads float tensors only (no Q/DQ in front of it)"
    if any(o in outputs for o in node.output):
        return "writes the network output (no QuantizeLinear after it)"
    users = Counter(c.op_type for o in node.output for c in consumers.get(o, []))
    if users != Counter(QuantizeLinear=1):
        readers = ", ".join(f"{op} x{n}" if n > 1 else op for op, n in sorted(users.items()))
        return f"its output goes to {readers}; fusing needs exactly one QuantizeLinear after it"
    if activation:
        return (f"the {activation} between it and its QuantizeLinear changes codes, so ONNX Runtime fused it "
                "into a float kernel instead")
    return f"ONNX Runtime's CPU backend has no fused integer kernel for {node.op_type}"


def optimized_graph(path: str | Path, session_config: dict[str, str] | None = None) -> onnx.ModelProto:
    """``path`` after ONNX Runtime's CPU graph optimisations up to the "extended" level (see the module docstring).

    Args:
        path: an ONNX model.
        session_config: ``add_session_config_entry`` pairs (they can change the rewrites).

    Raises:
        QdukdError: the file is missing or not a loadable ONNX model.
    """
    import onnxruntime as ort

    if not Path(path).is_file():
        raise QdukdError(f"model not found: {path}")
    with tempfile.TemporaryDirectory() as tmp:
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
        so.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        so.log_severity_level = 3
        for key, value in (session_config or {}).items():
            so.add_session_config_entry(key, str(value))
        try:
            ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        except Exception as e:  # ORT raises its own exception types for bad files
            raise QdukdError(f"cannot load ONNX model {path}: {str(e).splitlines()[0]}") from None
        return onnx.load(so.optimized_model_filepath)


def float_ops(path: str | Path, session_config: dict[str, str] | None = None) -> list[dict[str, str]]:
    """The nodes ONNX Runtime's CPU backend runs in float after its Q/DQ fusions, in graph order.

    Args:
        path: a Q/DQ ONNX model (``model.onnx`` of an export).
        session_config: the fused backend's session entries (``runtime.session_config(profile.onnxruntime)``).

    Returns:
        One dict per float node: ``"node"`` (its name in the optimised graph: the exported
        layer path, e.g. ``"/body/body.0/conv1/Conv"``, with a suffix where ONNX Runtime
        rewrote the node), ``"op"`` (domain-qualified
        type, ``+Activation`` when ONNX Runtime fused one in, e.g. ``"com.microsoft.FusedConv+Sigmoid"``)
        and ``"reason"`` (why it was not fused, read off the graph). Empty when every compute
        op runs on integers.

    Raises:
        QdukdError: the file is missing or not a loadable ONNX model.
    """
    model = optimized_graph(path, session_config)
    graph = model.graph
    types = _output_types(model)
    constants = {i.name for i in graph.initializer}
    producers, consumers = links(graph)
    outputs = {o.name for o in graph.output}
    found = []
    for node in graph.node:
        reads_float = any(types.get(i) in _FLOAT for i in node.input if i and i not in constants)
        writes_float = any(types.get(o) in _FLOAT for o in node.output)
        if not (reads_float and writes_float):
            continue
        op = f"{node.domain}.{node.op_type}" if node.domain else node.op_type
        activation = next((a.s.decode() for a in node.attribute if a.name == "activation"), None)
        found.append({"node": node.name, "op": f"{op}+{activation}" if activation else op,
                      "reason": _reason(node, activation, producers, consumers, outputs, constants)})
    return found
