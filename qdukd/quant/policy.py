"""``prepare_qat``: which layers get quantized at which bits, and the swap to quantized twins.

Default policy (the SR-quantization convention): the body is quantized at ``w_bits`` /
``a_bits``; the head and tail found by :func:`~qdukd.quant.roles.find_roles` stay in float, or
run at 8 bits with ``head_tail="int8"``. ``skip`` patterns keep layers in float, then the first
matching ``rules`` entry sets a layer's bits, overriding its role's default.

A model with a ``collapse()`` method (an expanded training form, e.g. SESR's linear blocks,
that folds into plain convs in place, idempotently) is collapsed first: QAT quantizes the
deployed network, and :func:`~qdukd.quant.restore_qat` collapses the same way.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from fnmatch import fnmatchcase

import torch
from torch import nn

from ..errors import QdukdError
from ..models.common import Add
from .config import QuantConfig
from .layers import QuantAdd, QuantConv2d, QuantConvTranspose2d, QuantLinear
from .roles import Role, find_roles
from .sharing import apply_shared_inputs, find_shared_inputs

# Float layer type -> kind name (in quant state) and its quantized twin. Exact types only: a
# subclass may override forward, which the twin would silently drop.
KINDS: dict[type[nn.Module], str] = {nn.Conv2d: "conv2d", nn.ConvTranspose2d: "conv_transpose2d", nn.Linear: "linear",
                                     Add: "add"}
TWINS: dict[str, type[nn.Module]] = {"conv2d": QuantConv2d, "conv_transpose2d": QuantConvTranspose2d,
                                     "linear": QuantLinear, "add": QuantAdd}
KIND_OF_TWIN: dict[type[nn.Module], str] = {twin: kind for kind, twin in TWINS.items()}

# Where prepare_qat / restore_qat leave the config on the model (read by calibrate and quant_state).
CONFIG_ATTR = "_qdukd_quant_config"


@dataclass(frozen=True)
class LayerPlan:
    """What :func:`prepare_qat` does to one layer."""

    kind: str
    w_bits: int
    a_bits: int
    role: Role


def quant_config(model: nn.Module) -> QuantConfig:
    """The config ``model`` was prepared with.

    Raises:
        QdukdError: ``model`` was not prepared.
    """
    cfg = getattr(model, CONFIG_ATTR, None)
    if cfg is None:
        raise QdukdError(f"{type(model).__name__} is not prepared for QAT: run qdukd.quant.prepare_qat(model, cfg) "
                         "(or restore_qat(model, quant_state) for a QAT checkpoint) first")
    return cfg


def collapse(model: nn.Module) -> nn.Module:
    """Fold ``model``'s expanded training form into its deployed form in place, when it has one
    (a ``collapse()`` method; idempotent); return ``model``."""
    fold = getattr(model, "collapse", None)
    if callable(fold):
        fold()
    return model


def _bits(name: str, kind: str, role: Role, cfg: QuantConfig) -> tuple[int, int] | None:
    """(w_bits, a_bits) for one layer, or None to keep it in float."""
    if any(fnmatchcase(name, p) for p in cfg.skip) or (kind == "add" and not cfg.quantize_adds):
        return None
    rule = next((r for r in cfg.rules if fnmatchcase(name, r[0])), None)
    if rule is not None:
        return rule[1], rule[2]
    if role != "body":
        return (8, 8) if cfg.head_tail == "int8" else None
    return cfg.w_bits, cfg.a_bits


def plan_layers(model: nn.Module, cfg: QuantConfig, example_input: torch.Tensor | None = None) -> dict[str, LayerPlan]:
    """The quantized layers :func:`prepare_qat` would make, by module name (float layers omitted).

    A model with ``collapse()`` is planned in its collapsed form (on a copy: ``model`` is not changed).

    Args:
        model: a float network.
        cfg: the quantization config.
        example_input: probe for head/tail detection (default: a 16x16 random image).

    Raises:
        QdukdError: a ``rules`` or ``skip`` pattern matches no quantizable layer (a typo).
    """
    if callable(getattr(model, "collapse", None)):
        model = collapse(copy.deepcopy(model))
    return _plan(model, cfg, example_input)


def _plan(model: nn.Module, cfg: QuantConfig, example_input: torch.Tensor | None) -> dict[str, LayerPlan]:
    """:func:`plan_layers` on a model already in its deployed form."""
    roles = find_roles(model, tuple(KINDS), example_input)
    layers = {n: KINDS[type(m)] for n, m in model.named_modules() if n and type(m) in KINDS}
    for pattern in [r[0] for r in cfg.rules] + list(cfg.skip):
        if not any(fnmatchcase(n, pattern) for n in layers):
            raise QdukdError(f"quant pattern {pattern!r} matches no Conv2d/ConvTranspose2d/Linear/Add of "
                             f"{type(model).__name__}; "
                             f"names look like: {', '.join(list(layers)[:6])}")
    plans = {}
    for name, kind in layers.items():
        role = roles.get(name, "body")  # never ran on the probe: treat as body
        bits = _bits(name, kind, role, cfg)
        if bits is not None:
            plans[name] = LayerPlan(kind, bits[0], bits[1], role)
    return plans


def swap_layer(model: nn.Module, name: str, kind: str, w_bits: int, a_bits: int, cfg: QuantConfig,
               act_signed: tuple[bool, ...]) -> nn.Module:
    """Replace the float layer ``name`` of ``model`` by its quantized twin and return the twin.

    Args:
        model: the network (changed in place).
        name: dotted module name.
        kind: a :data:`KINDS` name, e.g. "conv2d" or "add" (must match the module there).
        w_bits, a_bits: bits (``w_bits`` is ignored for adds).
        cfg: supplies ``per_channel`` and ``learnable``.
        act_signed: the grid of each input (one entry; two for adds).
    """
    try:
        module = model.get_submodule(name)
    except AttributeError:
        module = None
    if KINDS.get(type(module)) != kind:
        raise QdukdError(f"{type(model).__name__} has no float {kind} named {name!r} "
                         "(build the same architecture, with the same arguments, that was quantized)")
    if kind == "add":
        device = next(model.parameters(), torch.empty(0)).device
        twin: nn.Module = QuantAdd.from_float(module, a_bits, cfg.learnable, (act_signed[0], act_signed[-1]), device)
    else:
        twin = TWINS[kind].from_float(module, w_bits, a_bits, cfg.per_channel, cfg.learnable, act_signed[0])
        twin.quantize_bias = cfg.quantize_bias
    model.set_submodule(name, twin)
    return twin


def prepare_qat(model: nn.Module, cfg: QuantConfig | str, example_input: torch.Tensor | None = None) -> nn.Module:
    """Swap ``model``'s layers for quantized twins in place (see the module docstring) and return it.

    Run it after loading FP weights and before building the optimizer, then
    :func:`~qdukd.quant.calibrate`. A model with ``collapse()`` is collapsed first (in place).

    Args:
        model: a float network; residual adds must be ``models.common.Add`` modules to be quantized.
        cfg: a :class:`QuantConfig`, or a spec string such as ``"w4a4"``.
        example_input: probe for head/tail detection (default: a 16x16 random image).

    Raises:
        QdukdError: already prepared, or a pattern in ``cfg`` matches nothing.
    """
    if getattr(model, CONFIG_ATTR, None) is not None:
        raise QdukdError(f"{type(model).__name__} is already prepared for QAT (prepare_qat runs once per model)")
    cfg = QuantConfig.from_string(cfg) if isinstance(cfg, str) else cfg
    signed = cfg.act_signed != "unsigned"  # "auto" starts signed; calibration decides
    for name, p in _plan(collapse(model), cfg, example_input).items():
        swap_layer(model, name, p.kind, p.w_bits, p.a_bits, cfg, (signed, signed))
    if cfg.share_inputs:
        apply_shared_inputs(model, find_shared_inputs(model, example_input))
    setattr(model, CONFIG_ATTR, cfg)
    return model
