"""Import a model prepared with torch.ao FX QAT (``prepare_qat_fx``) as a qdukd-quantized model.

Every torch.ao fake quantizer must be one qdukd can express and TensorRT can run: zero point
0, per-channel only for weights (axis 0), and a grid ``[-(2^(b-1) - 1), 2^(b-1) - 1]`` or
``[0, 2^b - 1]`` (<= 127) for b in 2..8. torch.ao's own defaults (affine quint8 activations,
``quant_min=-128``) are rejected with the fix; a fitting setup is ``FakeQuantize`` with
``dtype=torch.qint8, quant_min=-127, quant_max=127`` and the ``*_symmetric`` qschemes, passed
with ``backend_config=get_tensorrt_backend_config()`` so that activations get quantizers.

The result is a copy of the ``GraphModule`` in which

- each QAT conv / linear (``ConvReLU2d`` / ``LinearReLU`` too) becomes a ``QuantConv2d`` /
  ``QuantLinear`` that quantizes its own input with the step of the fake quantizer in front
  of it (that quantizer node is bypassed for it);
- each ``a + b`` whose inputs both come from fake quantizers of equal bits becomes a ``QuantAdd``;
- the other fake quantizers are dropped: qdukd (like TensorRT's Q/DQ placement) quantizes layer
  inputs only. Where such a quantizer fed a quantized layer through ReLU / reshapes with the
  same step (torch.ao shares it) nothing changes; the network output loses its final rounding,
  so outputs match torch.ao's to within half that quantizer's step.

torch.ao is deprecated in recent torch releases; its warnings are silenced inside this
function so none reach the caller.
"""

from __future__ import annotations

import copy
import operator
import warnings

import torch
from torch import fx, nn

from ..errors import QdukdError
from ..models.common import Add
from .config import QuantConfig
from .layers import QuantAdd, QuantConv2d, QuantLinear, retype
from .policy import CONFIG_ATTR
from .quantizers import BITS, FakeQuantizer, Learnable, weight_learnable

_ZERO_POINT_WHY = ("TensorRT runs only zero-point-0 Q/DQ: use dtype=torch.qint8 with qscheme "
                   "torch.per_tensor_symmetric / torch.per_channel_symmetric and quant_min=-127, quant_max=127")
_ADDS = (operator.add, torch.add)


def _grid_bits(fq: nn.Module, name: str) -> tuple[int, bool]:
    """(bits, signed) of a torch.ao fake quantizer, or QdukdError if no qdukd grid matches it."""
    qmin, qmax = int(fq.quant_min), int(fq.quant_max)
    for bits in BITS:
        if (qmin, qmax) == (-(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1):
            return bits, True
        if (qmin, qmax) == (0, 2**bits - 1) and qmax <= 127:
            return bits, False
    raise QdukdError(f"torch.ao quantizer {name} has range [{qmin}, {qmax}]; qdukd (and TensorRT INT8) needs a "
                     "symmetric [-(2^(b-1)-1), 2^(b-1)-1] or unsigned [0, 2^b-1] <= 127 range: set quant_min=-127, "
                     "quant_max=127 for 8 bits")


def _convert_quantizer(fq: nn.Module, name: str, learnable: Learnable, weight: bool) -> FakeQuantizer:
    """A qdukd quantizer with the step and grid of the torch.ao fake quantizer ``fq``."""
    if bool((fq.zero_point != 0).any()):
        raise QdukdError(f"torch.ao quantizer {name} has zero point {fq.zero_point.tolist()}; {_ZERO_POINT_WHY}")
    per_channel = fq.qscheme in (torch.per_channel_symmetric, torch.per_channel_affine)
    if per_channel and (not weight or fq.ch_axis != 0):
        raise QdukdError(f"torch.ao quantizer {name} is per-channel on axis {fq.ch_axis}; TensorRT takes per-axis "
                         "scales only for weights, on axis 0 (use a per-tensor activation qconfig)")
    bits, signed = _grid_bits(fq, name)
    scale = fq.scale.detach()
    mode = weight_learnable(learnable) if weight else learnable
    q = FakeQuantizer(bits, signed, scale.numel() if per_channel else None, mode, scale.device)
    q.set_scale(scale if per_channel else scale.reshape(()))
    return q


class _Importer:
    """One conversion: the GraphModule being rewritten and lookups into it."""

    def __init__(self, gm: fx.GraphModule, learnable: Learnable) -> None:
        import torch.ao.nn.intrinsic.qat as nniqat
        import torch.ao.nn.qat as nnqat
        from torch.ao.quantization import FakeQuantizeBase

        self.gm, self.learnable = gm, learnable
        self.fq_type = FakeQuantizeBase
        # QAT layer type -> (twin, float type to rebuild, fused ReLU?)
        self.layers = {nnqat.Conv2d: (QuantConv2d, nn.Conv2d, False), nniqat.ConvReLU2d: (QuantConv2d, nn.Conv2d, True),
                       nnqat.Linear: (QuantLinear, nn.Linear, False), nniqat.LinearReLU: (QuantLinear, nn.Linear, True)}

    def fake_quant(self, node: object) -> nn.Module | None:
        """The torch.ao fake quantizer that ``node`` calls, if it calls one."""
        if isinstance(node, fx.Node) and node.op == "call_module":
            module = self.gm.get_submodule(node.target)
            return module if isinstance(module, self.fq_type) else None
        return None

    def layer(self, node: fx.Node) -> None:
        qat = self.gm.get_submodule(node.target)
        twin_cls, float_cls, relu = self.layers[type(qat)]
        src = node.args[0]
        act = self.fake_quant(src)
        if act is None:
            raise QdukdError(f"the input of torch.ao layer {node.target} has no fake quantizer; prepare with "
                             "backend_config=get_tensorrt_backend_config() so activations are quantized")
        weight_q = _convert_quantizer(qat.weight_fake_quant, f"{node.target}.weight_fake_quant", self.learnable, True)
        act_q = _convert_quantizer(act, str(src.target), self.learnable, False)
        plain = retype(qat, float_cls)
        del plain.weight_fake_quant
        plain.__dict__.pop("qconfig", None)
        twin = twin_cls.from_float(plain, weight_q.bits, act_q.bits, weight_q.axis is not None, self.learnable,
                                   act_q.is_signed)
        twin.weight_quant, twin.act_quant = weight_q, act_q
        self.gm.set_submodule(node.target, twin)
        node.args = (src.args[0], *node.args[1:])
        if relu:  # the fused ReLU of ConvReLU2d / LinearReLU, now a separate op
            with self.gm.graph.inserting_after(node):
                out = self.gm.graph.call_function(torch.relu, (node,))
            node.replace_all_uses_with(out, delete_user_cb=lambda user: user is not out)

    def add(self, node: fx.Node) -> None:
        a, b = node.args[0], node.args[1]
        fa, fb = self.fake_quant(a), self.fake_quant(b)
        if fa is None or fb is None or _grid_bits(fa, str(a.target))[0] != _grid_bits(fb, str(b.target))[0]:
            return  # stays a float add of (fake-quantized) inputs
        qa = _convert_quantizer(fa, str(a.target), self.learnable, False)
        qb = _convert_quantizer(fb, str(b.target), self.learnable, False)
        twin = QuantAdd.from_float(Add(), qa.bits, self.learnable, (qa.is_signed, qb.is_signed))
        twin.act_quant_a, twin.act_quant_b = qa, qb
        name = f"{node.name}_quant"
        self.gm.add_submodule(name, twin)
        with self.gm.graph.inserting_before(node):
            new = self.gm.graph.call_module(name, (a.args[0], b.args[0]))
        node.replace_all_uses_with(new)
        self.gm.graph.erase_node(node)

    def drop(self, node: fx.Node) -> None:
        """Bypass a fake quantizer that no quantized layer absorbed."""
        node.replace_all_uses_with(node.args[0])
        self.gm.graph.erase_node(node)

    def run(self) -> fx.GraphModule:
        for node in list(self.gm.graph.nodes):
            module = self.gm.get_submodule(node.target) if node.op == "call_module" else None
            if type(module) in self.layers:
                self.layer(node)
            elif hasattr(module, "weight_fake_quant"):
                raise QdukdError(f"torch.ao layer {node.target} ({type(module).__name__}) is not "
                                 "supported: fold batch norm into the conv before prepare_qat_fx (Conv2d, Linear "
                                 "and their ReLU fusions import)")
            elif node.op == "call_function" and node.target in _ADDS and len(node.args) == 2 and not node.kwargs:
                self.add(node)
        for node in list(self.gm.graph.nodes):
            if self.fake_quant(node) is not None:
                self.drop(node)
        # delete_all_unused_submodules skips aliases of shared quantizers: remove every one by name.
        for name, module in list(self.gm.named_modules(remove_duplicate=False)):
            if isinstance(module, self.fq_type):
                self.gm.delete_submodule(name)
        self.gm.delete_all_unused_submodules()
        self.gm.graph.lint()
        self.gm.recompile()
        return self.gm


def from_torch_ao(model: fx.GraphModule, learnable: Learnable = "lsq") -> fx.GraphModule:
    """A qdukd-quantized copy of a torch.ao ``prepare_qat_fx`` model (see the module docstring).

    Run a few batches through the torch.ao model first so its observers have set the scales.
    The copy can be trained further (``learnable``), frozen and exported like a
    :func:`~qdukd.quant.prepare_qat` model; its input quantizers can be recalibrated.

    Args:
        model: the GraphModule ``prepare_qat_fx`` returned (left unchanged).
        learnable: how the imported steps learn from here: "lsq", "pact" or "none".

    Raises:
        QdukdError: a quantizer TensorRT cannot run (non-zero zero point, per-channel
            activations, unsupported range) or an unsupported QAT layer (e.g. ConvBn2d).
    """
    if not isinstance(model, fx.GraphModule):
        raise QdukdError(f"from_torch_ao needs the GraphModule prepare_qat_fx returns, got {type(model).__name__}")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*torch.ao", category=UserWarning)
        gm = _Importer(copy.deepcopy(model), learnable).run()
    layers = [m for m in gm.modules() if isinstance(m, (QuantConv2d, QuantLinear, QuantAdd))]
    # Informational (bits come from torch.ao per layer): the widest weight / input grids.
    setattr(gm, CONFIG_ATTR, QuantConfig(w_bits=max((m.w_bits for m in layers if hasattr(m, "w_bits")), default=8),
                                         a_bits=max((m.a_bits for m in layers), default=8),
                                         learnable=learnable, act_signed="signed", head_tail="int8"))
    return gm
