"""ONNX export of a frozen student: the Q/DQ graph, its FP32 twin and the INT4-weight variant.

How the Q/DQ graph is made: a deployable copy of the frozen student (:func:`deployable_copy`)
replaces every quantized layer by plain torch ops that the TorchScript exporter maps to ONNX
QuantizeLinear/DequantizeLinear (it does so only for 8-bit ranges):

- an input activation on the grid ``[qmin, qmax]`` with step ``s``: ``clamp(x, qmin*s, qmax*s)``
  then ``fake_quantize_per_tensor_affine`` over the whole 8-bit container -> Clip,
  QuantizeLinear, DequantizeLinear. The container is int8 with zero point 0 (TensorRT), or
  uint8 (ONNX Runtime's native format: zero point 0 for unsigned grids, 128 for signed ones,
  so every activation has one type and mixed-type convs do not block fusion). The qdukd grids
  (``[-(2^(b-1)-1), 2^(b-1)-1]`` signed, ``[0, min(2^b-1, 127)]`` unsigned) never fill a
  container, so the clip is what makes every grid, 8-bit or not, exact;
- weights: the integer codes times the per-channel steps, through
  ``fake_quantize_per_channel_affine`` along the output channels (axis 0; axis 1 of a transposed
  conv's ``(in, out / groups, kH, kW)`` weight) -> Q/DQ on a constant, which
  :func:`_fold_weight_quantizers` stores as an INT8 initializer.

Then the graph is tidied (:func:`export_onnx`): Constant/Identity constants become
initializers, weight quantizers are folded, ``x * 1`` is dropped, and a clip goes where it
cannot change a code: the container ends at the same code, or the producer (a ReLU) already
bounds the values. With ``clip = "container"`` the clips of 8-bit grids go too.

Why that option exists (measured with ONNX Runtime 1.32): ONNX Runtime fuses DQ -> Conv -> Q
into QLinearConv only when at most a *redundant* Relu/Clip sits between the conv and its Q;
a clip to a grid narrower than its container is never redundant, and a clip moved onto the
integer codes (Q -> Clip -> DQ) blocks the fusion too. So the exact graph is never fused on
ONNX Runtime CPU (TensorRT fuses the clip into the conv and loses nothing); the container
graph fuses, and differs from PyTorch only where a code reaches past its grid (-128 for the
signed 8-bit grid, 128..255 for the unsigned one in uint8): the parity gate measures it.
PixelShuffle exports as DepthToSpace (CRD); it and channel concatenation run on the 8-bit codes
when a quantizer follows them (Q -> DepthToSpace / Concat -> DQ), so the convs feeding them fuse
too; N, H and W are dynamic.
"""

from __future__ import annotations

import copy
import heapq
import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import ml_dtypes
import numpy as np
import onnx
import torch
import torch.nn.functional as F
from onnx import numpy_helper
from torch import nn
from torch.onnx import symbolic_helper

from ..atomic import atomic_path
from ..errors import QdukdError
from ..quant import FakeQuantizer, QuantAdd, QuantConv2d, QuantConvTranspose2d, QuantLinear, dequantize
from ..quant.policy import KIND_OF_TWIN, collapse
from .profiles import GraphSection

INPUT_NAME, OUTPUT_NAME = "lr", "sr"
TORCHSCRIPT_MAX_OPSET = 20  # the TorchScript exporter's newest opset; 21 only adds INT4 types
INT4_MIN_OPSET, INT4_MIN_IR = 21, 10
# Activation type -> (qmin, qmax) of the 8-bit container.
CONTAINERS = {"int8": (-128, 127), "uint8": (0, 255)}


@dataclass(frozen=True)
class LayerInfo:
    """One quantized layer as exported (``manifest.json`` lists them)."""

    name: str
    kind: str  # the quant state's kind: "conv2d", "conv_transpose2d", "linear" or "add"
    w_bits: int | None
    a_bits: int
    act_grids: tuple[tuple[int, int], ...]  # [qmin, qmax] of each quantized input
    act_containers: tuple[str, ...]  # each input's 8-bit type and zero point, e.g. "uint8+128"


class _ActQDQ(nn.Module):
    """Clip to the layer's grid, then 8-bit fake quantization over the container (-> Clip, Q, DQ).

    The container is int8 with zero point 0, or uint8 with zero point 0 (unsigned grids) or 128
    (signed grids): the same codes, shifted.
    """

    def __init__(self, q: FakeQuantizer, activations: str) -> None:
        super().__init__()
        self.scale = float(q.effective_scale())  # a float32 value, exactly representable
        self.lo, self.hi = q.qmin * self.scale, q.qmax * self.scale
        self.container = CONTAINERS[activations]
        self.zero_point = 128 if activations == "uint8" and q.qmin < 0 else 0

    def describe(self) -> str:
        return f"{'uint8' if self.container[0] == 0 else 'int8'}+{self.zero_point}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.clamp(x, self.lo, self.hi)
        return torch.fake_quantize_per_tensor_affine(x, self.scale, self.zero_point, *self.container)


class _QDQWeighted(nn.Module):
    """What the Q/DQ conv, transposed conv and linear share: the input quantizer and the on-grid
    weight, quantized per channel along the layer's ``WEIGHT_AXIS`` (after ``transpose``, the other axis)."""

    def __init__(self, layer: QuantConv2d | QuantConvTranspose2d | QuantLinear, act: _ActQDQ,
                 transpose: bool = False) -> None:
        super().__init__()
        self.act = act
        scale = layer.weight_scale().float()
        weight = dequantize(layer.int_weight(), scale, layer.WEIGHT_AXIS)
        self.axis = 1 - layer.WEIGHT_AXIS if transpose else layer.WEIGHT_AXIS
        self.register_buffer("weight", weight.t().contiguous() if transpose else weight)
        self.register_buffer("w_scale", scale)
        self.register_buffer("w_zero", torch.zeros_like(scale, dtype=torch.int32))
        bias = layer.effective_bias()
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def quantized_weight(self) -> torch.Tensor:
        return torch.fake_quantize_per_channel_affine(self.weight, self.w_scale, self.w_zero, self.axis, -128, 127)


class _QDQConv2d(_QDQWeighted):
    def __init__(self, layer: QuantConv2d | QuantConvTranspose2d, act: _ActQDQ) -> None:
        super().__init__(layer, act)
        self.stride, self.padding = layer.stride, layer.padding
        self.dilation, self.groups = layer.dilation, layer.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(self.act(x), self.quantized_weight(), self.bias, self.stride, self.padding, self.dilation,
                        self.groups)


class _QDQConvTranspose2d(_QDQConv2d):
    """ConvTranspose on Q/DQ input, weight DQ on axis 1 (its ``(in, out / groups, kH, kW)`` layout)."""

    def __init__(self, layer: QuantConvTranspose2d, act: _ActQDQ) -> None:
        super().__init__(layer, act)
        self.kernel_size, self.output_padding = layer.kernel_size, layer.output_padding

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        # nn.ConvTranspose2d's own output_size rule (it reads only the attributes copied above).
        output_padding = nn.ConvTranspose2d._output_padding(self, x, output_size, self.stride, self.padding,
                                                            self.kernel_size, 2, self.dilation)
        return F.conv_transpose2d(self.act(x), self.quantized_weight(), self.bias, self.stride, self.padding,
                                  output_padding, self.groups, self.dilation)


class _QDQLinear(_QDQWeighted):
    """``x @ W^T + b`` with W^T stored (axis 1 per channel), so the weight DQ feeds MatMul directly."""

    def __init__(self, layer: QuantLinear, act: _ActQDQ) -> None:
        super().__init__(layer, act, transpose=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.matmul(self.act(x), self.quantized_weight())
        return y if self.bias is None else y + self.bias


class _QDQAdd(nn.Module):
    def __init__(self, act_a: _ActQDQ, act_b: _ActQDQ) -> None:
        super().__init__()
        self.act_a, self.act_b = act_a, act_b

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return self.act_a(a) + self.act_b(b)


# Quantized layer -> the plain-ops twin the exporter maps to Q/DQ.
_QDQ_TWINS: dict[type[nn.Module], type[nn.Module]] = {
    QuantConv2d: _QDQConv2d, QuantConvTranspose2d: _QDQConvTranspose2d, QuantLinear: _QDQLinear, QuantAdd: _QDQAdd}


def deployable_copy(model: nn.Module, graph: GraphSection) -> tuple[nn.Module, list[LayerInfo]]:
    """A copy of the frozen ``model`` whose quantized layers export as Q/DQ (see the module docstring).

    Args:
        model: a prepared (and frozen) student; it is not changed.
        graph: the profile's graph settings (allowed weight bits, activation containers).

    Raises:
        QdukdError: a layer the target cannot run (bit width not in the profile, an unknown
            quantized module, a non-zero padding mode), named in the message.
    """
    deploy = collapse(copy.deepcopy(model)).eval()
    layers = []
    for name, module in list(deploy.named_modules()):
        if type(module) not in _QDQ_TWINS:
            if any(isinstance(c, FakeQuantizer) for c in module.children()):
                raise QdukdError(f"unsupported layer {name} ({type(module).__name__}): the exporter knows "
                                 f"{', '.join(t.__name__ for t in _QDQ_TWINS)}")
            continue
        w_bits = getattr(module, "w_bits", None)
        if w_bits is not None and w_bits not in graph.weight_bits:
            raise QdukdError(f"unsupported layer {name}: {w_bits}-bit weights, this target takes "
                             f"{list(graph.weight_bits)} bits (for W2-W7 use --target tensorrt-lowbit or "
                             "onnxruntime-int8)")
        if getattr(module, "padding_mode", "zeros") != "zeros":
            raise QdukdError(f"unsupported layer {name}: padding_mode={module.padding_mode!r} (only zeros)")
        quantizers = module.input_quantizers
        acts = [_ActQDQ(q, graph.activations) for q in quantizers]
        twin = _QDQAdd(*acts) if isinstance(module, QuantAdd) else _QDQ_TWINS[type(module)](module, acts[0])
        deploy.set_submodule(name, twin)
        layers.append(LayerInfo(name, KIND_OF_TWIN[type(module)], w_bits, module.a_bits,
                                tuple((q.qmin, q.qmax) for q in quantizers),
                                tuple(a.describe() for a in acts)))
    return deploy, layers


def float_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every fake quantizer off: the same network on its float weights
    (collapsed, when the model has ``collapse()``)."""
    fp = collapse(copy.deepcopy(model)).eval()
    for m in fp.modules():
        if isinstance(m, FakeQuantizer):
            m.enabled = False
    return fp


def _constant_to_initializer(graph: onnx.GraphProto) -> None:
    """Turn ``Constant`` nodes into initializers and bypass ``Identity`` nodes on initializers
    (the exporter's de-duplication), so every constant is an initializer read directly."""
    keep = []
    names = {i.name for i in graph.initializer}
    for node in graph.node:
        value = next((a for a in node.attribute if a.name == "value"), None)
        if node.op_type == "Constant" and value is not None:
            tensor = onnx.TensorProto()
            tensor.CopyFrom(value.t)
            tensor.name = node.output[0]
            graph.initializer.append(tensor)
            names.add(tensor.name)
        elif node.op_type == "Identity" and node.input[0] in names:
            _rewire(graph, node.output[0], node.input[0])
        else:
            keep.append(node)
    del graph.node[:]
    graph.node.extend(keep)


def _fold_weight_quantizers(graph: onnx.GraphProto) -> None:
    """Replace ``QuantizeLinear(float weight)`` by the quantized integer initializer it computes.

    The weights are already on their grid, so the rounding here is exact; the model file then
    stores 8-bit weights (a quarter of FP32) and TensorRT / ONNX Runtime see ``INT8 -> DQ``.
    """
    inits = {i.name: i for i in graph.initializer}
    keep = []
    for node in graph.node:
        if node.op_type != "QuantizeLinear" or node.input[0] not in inits:
            keep.append(node)
            continue
        w = numpy_helper.to_array(inits[node.input[0]]).astype(np.float64)
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float64)
        zp = numpy_helper.to_array(inits[node.input[2]])
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        shape = [1] * w.ndim
        if scale.size > 1:
            shape[axis] = scale.size
        info = np.iinfo(zp.dtype)
        q = np.clip(np.rint(w / scale.reshape(shape)) + zp.astype(np.int64).reshape(shape), info.min, info.max)
        graph.initializer.append(numpy_helper.from_array(q.astype(zp.dtype), node.output[0]))
        # One zero point per weight: the exporter shares one, and ONNX Runtime's AVX2 u8u8
        # weight rewrite (session.x64quantprecision) fails on a shared one.
        zp_name = f"{node.output[0]}_zero_point"
        graph.initializer.append(numpy_helper.from_array(zp, zp_name))
        for dq in graph.node:
            if dq.op_type == "DequantizeLinear" and dq.input[0] == node.output[0]:
                dq.input[2] = zp_name
    del graph.node[:]
    graph.node.extend(keep)


def _rewire(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Make every consumer of tensor ``old`` read ``new`` instead."""
    for node in graph.node:
        for i, name in enumerate(node.input):
            if name == old:
                node.input[i] = new


def _drop_multiply_by_one(graph: onnx.GraphProto) -> None:
    """Drop ``x * 1`` and ``x / 1`` (EDSR's ``res_scale = 1``): exact, and they would stand
    between a conv and its Q, blocking fusion."""
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    outputs = {o.name for o in graph.output}
    keep = []
    for node in graph.node:
        operands = list(node.input[1:]) if node.op_type == "Div" else list(node.input)
        one = next((n for n in operands if n in inits and inits[n].size == 1 and np.all(inits[n] == 1)), None)
        if node.op_type not in ("Mul", "Div") or one is None or node.output[0] in outputs:
            keep.append(node)
            continue
        _rewire(graph, node.output[0], next(n for n in node.input if n != one))
    del graph.node[:]
    graph.node.extend(keep)


# Output ranges of ops that bound their output (a Clip after them may be redundant).
_PRODUCER_RANGE = {"Relu": (0.0, np.inf), "Sigmoid": (0.0, 1.0)}


def _clip_bounds(inits: dict[str, np.ndarray], clip: onnx.NodeProto) -> tuple[float, float] | None:
    bounds = []
    for i, default in ((1, -np.inf), (2, np.inf)):
        name = clip.input[i] if len(clip.input) > i else ""
        if name and name not in inits:
            return None
        bounds.append(float(inits[name]) if name else default)
    return bounds[0], bounds[1]


def links(graph: onnx.GraphProto) -> tuple[dict[str, onnx.NodeProto], dict[str, list[onnx.NodeProto]]]:
    """(tensor name -> the node that writes it, tensor name -> the nodes that read it)."""
    producer = {o: n for n in graph.node for o in n.output}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    return producer, consumers


def _drop_redundant_clips(graph: onnx.GraphProto, container: bool) -> None:
    """Drop each Clip before a Q that is not needed for the Q's codes.

    A clip to the grid ``[lo, hi]`` is redundant where the 8-bit container ends at the same
    code or the producer (a ReLU, for the lower end) already keeps values inside. With
    ``container`` the clips of 8-bit grids (128 codes or more: ``[-127, 127]``, ``[0, 127]``)
    go too, so the container's ends replace the grid's (see ``GraphSection.clip``).
    """
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producer, consumers = links(graph)
    outputs = {o.name for o in graph.output}
    dropped = set()
    for clip in graph.node:
        users = consumers.get(clip.output[0], [])
        bounds = _clip_bounds(inits, clip) if clip.op_type == "Clip" else None
        if bounds is None or len(users) != 1 or users[0].op_type != "QuantizeLinear" or clip.output[0] in outputs:
            continue
        q = users[0]
        scale, zp = float(inits[q.input[1]]), inits[q.input[2]]
        info = np.iinfo(zp.dtype)
        lo_code, hi_code = (int(np.rint(b / scale)) + int(zp) for b in bounds)
        src = producer.get(clip.input[0])
        p_lo, p_hi = _PRODUCER_RANGE.get(src.op_type, (-np.inf, np.inf)) if src is not None else (-np.inf, np.inf)
        need_lo, need_hi = lo_code > info.min and p_lo < bounds[0], hi_code < info.max and p_hi > bounds[1]
        if not (need_lo or need_hi) or (container and hi_code - lo_code + 1 >= 128):
            dropped.add(clip.name)
            _rewire(graph, clip.output[0], clip.input[0])
    keep = [n for n in graph.node if n.name not in dropped]
    del graph.node[:]
    graph.node.extend(keep)


# Ops that only move values: a per-tensor [Clip ->] Q after them may run on their inputs instead.
_MOVERS = ("DepthToSpace", "Concat")


def _quantize_before_moves(graph: onnx.GraphProto) -> None:
    """Rewrite ``DepthToSpace / Concat -> [Clip] -> Q -> DQ`` as ``[Clip] -> Q -> DepthToSpace / Concat -> DQ``
    (one Clip and Q per Concat input).

    Exact: the clip and a per-tensor Q are elementwise and these ops only move values. It puts
    a Q right after the convs that feed them, which ONNX Runtime then fuses into QLinearConv
    (at x4 the two upsampler convs are most of EDSR's work; a concat's branches in IMDN or SPAN
    blocks), and the op moves 8-bit codes instead of floats.
    """
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    constants = {i.name for i in graph.initializer}
    added = []
    for mover in graph.node:
        sources = list(mover.input) if mover.op_type == "Concat" else list(mover.input[:1])
        if mover.op_type not in _MOVERS or mover.output[0] in outputs or any(s in constants for s in sources):
            continue
        chain = [mover]
        while len(users := consumers.get(chain[-1].output[0], [])) == 1 and users[0].op_type in ("Clip",
                                                                                                   "QuantizeLinear"):
            chain.append(users[0])
            if users[0].op_type == "QuantizeLinear":
                break
        q = chain[-1]
        if q.op_type != "QuantizeLinear" or any(n.output[0] in outputs for n in chain[1:]):
            continue
        _rewire(graph, q.output[0], mover.output[0])  # the DQs now read the mover
        for k, source in enumerate(sources):
            # The first input takes the chain's own nodes; further Concat inputs get copies.
            nodes = chain[1:] if k == 0 else [_renamed_copy(n, f"_in{k}") for n in chain[1:]]
            if k:
                added += nodes
            nodes[0].input[0] = source
            for a, b in zip(nodes, nodes[1:]):
                b.input[0] = a.output[0]
            mover.input[k] = nodes[-1].output[0]
    graph.node.extend(added)
    _topological_sort(graph)


def _renamed_copy(node: onnx.NodeProto, suffix: str) -> onnx.NodeProto:
    """A copy of ``node`` whose name and outputs carry ``suffix``."""
    twin = onnx.NodeProto()
    twin.CopyFrom(node)
    twin.name += suffix
    for i, name in enumerate(twin.output):
        twin.output[i] = name + suffix
    return twin


def _topological_sort(graph: onnx.GraphProto) -> None:
    """Order the nodes so each runs after the producers of its inputs (otherwise in their order)."""
    nodes = list(graph.node)
    producer = {o: i for i, n in enumerate(nodes) for o in n.output}
    users: dict[int, list[int]] = {}
    waiting = []
    for i, node in enumerate(nodes):
        sources = {producer[name] for name in node.input if name in producer}
        waiting.append(len(sources))
        for src in sources:
            users.setdefault(src, []).append(i)
    ready = [i for i, w in enumerate(waiting) if w == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(nodes[i])
        for j in users.get(i, []):
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    del graph.node[:]
    graph.node.extend(order)


def _reject_control_flow(graph: onnx.GraphProto) -> None:
    """The graph passes here rewrite one flat graph; subgraphs (If, Loop, Scan) would be left stale."""
    for node in graph.node:
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
            raise QdukdError(f"the exported graph has a control-flow node ({node.op_type} {node.name!r}), which "
                             "qdukd's export does not support: rewrite the layer without data-dependent "
                             "Python branches or squeeze() on dynamic dimensions")


def _drop_unused_initializers(graph: onnx.GraphProto) -> None:
    used = {name for node in graph.node for name in node.input}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _short_tensor_names(graph: onnx.GraphProto) -> None:
    """Name inner tensors ``t0, t1, ...`` (node names keep the layer paths): the exporter's long
    names would otherwise be a few percent of a small model's file."""
    keep = {v.name for v in (*graph.input, *graph.output)}
    names = [i.name for i in graph.initializer] + [o for n in graph.node for o in n.output]
    short = {name: f"t{i}" for i, name in enumerate(dict.fromkeys(n for n in names if n and n not in keep))}
    for i in graph.initializer:
        i.name = short.get(i.name, i.name)
    for v in graph.value_info:
        v.name = short.get(v.name, v.name)
    for node in graph.node:
        for field in (node.input, node.output):
            for k, name in enumerate(field):
                field[k] = short.get(name, name)


def _set_opset(model: onnx.ModelProto, opset: int) -> None:
    """Raise the default-domain opset from 20 to 21 (21 only extends types: INT4, UINT4)."""
    entry = next(o for o in model.opset_import if o.domain in ("", "ai.onnx"))
    if entry.version != opset:
        if (entry.version, opset) != (TORCHSCRIPT_MAX_OPSET, INT4_MIN_OPSET):
            raise QdukdError(f"cannot move the graph from opset {entry.version} to {opset}")
        entry.version = opset
        model.ir_version = max(model.ir_version, INT4_MIN_IR)


def _save_checked(model: onnx.ModelProto, path: Path) -> None:
    onnx.checker.check_model(model, full_check=True)
    with atomic_path(path) as tmp:
        onnx.save(model, tmp)


@symbolic_helper.parse_args("v", "is")
def _tile_symbolic(g, x, dims):  # type: ignore[no-untyped-def]
    """``torch.tile`` as one ONNX Tile: the built-in symbolic compares len(dims) with the rank at
    run time (If nodes), though the rank is known when tracing."""
    rank = x.type().dim()
    if rank is None or len(dims) > rank:
        raise QdukdError(f"torch.tile with {len(dims)} repeats on a tensor of rank {rank} cannot be exported: "
                         "use Tensor.repeat with one repeat per dimension")
    return g.op("Tile", x, g.op("Constant", value_t=torch.tensor([1] * (rank - len(dims)) + dims)))


@contextmanager
def _symbolics(opset: int) -> Iterator[None]:
    """qdukd's symbolic overrides (:func:`_tile_symbolic`), registered for one export only."""
    torch.onnx.register_custom_op_symbolic("aten::tile", _tile_symbolic, opset)
    try:
        yield
    finally:
        torch.onnx.unregister_custom_op_symbolic("aten::tile", opset)


def export_onnx(module: torch.nn.Module, path: str | Path, opset: int, clip: str = "exact") -> None:
    """Export ``module`` (float NCHW in, float NCHW out) with dynamic N/H/W, then tidy the graph.

    Args:
        module: a deployable copy (:func:`deployable_copy`) or a float model.
        path: the ``.onnx`` file to write (atomically).
        opset: the ONNX opset (13-21).
        clip: ``"exact"`` keeps every clip that changes a code; ``"container"`` drops those
            of 8-bit grids (see ``GraphSection.clip``).
    """
    buf = io.BytesIO()
    module.eval()
    with warnings.catch_warnings(), torch.no_grad(), _symbolics(min(opset, TORCHSCRIPT_MAX_OPSET)):
        # The TorchScript exporter is deprecated but the only one that maps fake-quant ops with
        # dynamic H/W to Q/DQ; its deprecation and tracer warnings say nothing about this graph.
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.rand(1, 3, 24, 24),), buf, dynamo=False,
                          opset_version=min(opset, TORCHSCRIPT_MAX_OPSET), input_names=[INPUT_NAME],
                          output_names=[OUTPUT_NAME], do_constant_folding=True,
                          dynamic_axes={INPUT_NAME: {0: "N", 2: "H", 3: "W"},
                                        OUTPUT_NAME: {0: "N", 2: "sH", 3: "sW"}})
    model = onnx.load_from_string(buf.getvalue())
    _reject_control_flow(model.graph)
    _constant_to_initializer(model.graph)
    _fold_weight_quantizers(model.graph)
    _drop_multiply_by_one(model.graph)
    _drop_redundant_clips(model.graph, container=clip == "container")
    _quantize_before_moves(model.graph)
    _drop_unused_initializers(model.graph)
    _short_tensor_names(model.graph)
    _set_opset(model, opset)
    _save_checked(model, Path(path))


def write_int4_variant(src: str | Path, dst: str | Path) -> int:
    """Write a copy of a Q/DQ model whose weights that fit 4 bits are stored as packed INT4.

    Layers with 2- to 4-bit weights hold grid values in [-8, 7], so INT4 stores them exactly;
    8-bit layers stay INT8. The INT4 graph needs opset 21; ONNX Runtime runs it with
    DequantizeLinear feeding float kernels (storage format, not a faster one).

    Returns:
        How many weight tensors were packed to INT4.
    """
    model = onnx.load(src)
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    packed = 0
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or node.input[0] not in inits:
            continue
        q = numpy_helper.to_array(inits[node.input[0]])
        if q.dtype != np.int8 or q.min() < -8 or q.max() > 7:
            continue
        # Each weight has its own zero point (see _fold_weight_quantizers): convert both in place.
        for name in (node.input[0], node.input[2]):
            packed_int4 = numpy_helper.to_array(inits[name]).astype(ml_dtypes.int4)
            inits[name].CopyFrom(numpy_helper.from_array(packed_int4, name))
        packed += 1
    _drop_unused_initializers(graph)
    _set_opset(model, max(INT4_MIN_OPSET, next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))))
    _save_checked(model, Path(dst))
    return packed
