"""A prepared model's quantization state: freezing ranges, and saving / restoring the structure.

The numbers (weights, steps, grid signs) are in ``model.state_dict()``; :func:`quant_state`
holds what rebuilds the *structure* (config, which layers, bits, signedness) as plain JSON
values, so ``restore_qat(fresh_fp_model, quant_state)`` followed by
``load_state_dict(strict=True)`` reproduces a QAT model exactly.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import QdukdError
from .config import QuantConfig
from .layers import quantized_layers
from .policy import CONFIG_ATTR, KIND_OF_TWIN, KINDS, TWINS, collapse, quant_config, swap_layer
from .quantizers import FakeQuantizer
from .sharing import apply_shared_inputs, shared_inputs

__all__ = ["activation_range_parameters", "fake_quantizers", "freeze", "quant_state", "quantized_layers",
           "restore_qat"]

FORMAT, VERSION = "qdukd-quant", 1


def fake_quantizers(model: nn.Module) -> list[FakeQuantizer]:
    """Every fake quantizer of ``model`` (weights and inputs)."""
    return [m for m in model.modules() if isinstance(m, FakeQuantizer)]


def activation_range_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The learnable input steps (to hold them still, e.g. on auxiliary batches), each once."""
    steps = {id(q.scale): q.scale for layer in quantized_layers(model).values() for q in layer.input_quantizers
             if isinstance(q.scale, nn.Parameter)}
    return list(steps.values())


def freeze(model: nn.Module) -> nn.Module:
    """Turn every learnable step of ``model`` into a constant buffer (idempotent); return ``model``.

    State-dict keys and values do not change; weights still train.
    """
    for q in fake_quantizers(model):
        q.freeze()
    return model


def quant_state(model: nn.Module) -> dict[str, Any]:
    """The quantization structure of a prepared ``model`` as JSON-able values.

    Keys: ``format``, ``version``, ``config`` (:class:`QuantConfig` as a dict), ``frozen``,
    ``layers`` (name -> ``kind``, ``w_bits`` (None for adds), ``a_bits``, ``act_signed`` per input),
    ``shared`` (input quantizers used by several layers: ``{"layer.attr": "owner_layer.attr"}``).
    """
    cfg = quant_config(model)
    layers = {}
    for name, layer in quantized_layers(model).items():
        layers[name] = {"kind": KIND_OF_TWIN[type(layer)],
                        "w_bits": getattr(layer, "w_bits", None),
                        "a_bits": layer.a_bits,
                        "act_signed": [q.is_signed for q in layer.input_quantizers]}
    learnable = [q for q in fake_quantizers(model) if q.learnable != "none"]
    return {"format": FORMAT, "version": VERSION, "config": cfg.to_dict(),
            "frozen": bool(learnable) and all(q.frozen for q in learnable), "layers": layers,
            "shared": shared_inputs(model)}


def restore_qat(model: nn.Module, state: dict[str, Any]) -> nn.Module:
    """Re-prepare a float ``model`` as :func:`quant_state` describes, in place; return it.

    No probe pass and no calibration: load the QAT ``state_dict`` next (``strict=True`` works).
    A model with ``collapse()`` is collapsed first, as :func:`~qdukd.quant.prepare_qat` did.

    Args:
        model: a float network of the architecture the state was saved from (expanded or collapsed).
        state: a dict from :func:`quant_state` (e.g. a checkpoint's ``"quant"`` entry).

    Raises:
        QdukdError: not a quant state, a newer version, already prepared, or the layers do not fit.
    """
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise QdukdError("not a qdukd quant state (expected the dict quant_state(model) returns)")
    if state.get("version") != VERSION:
        raise QdukdError(f"quant state version {state.get('version')!r}; this qdukd reads {VERSION} (upgrade qdukd)")
    if getattr(model, CONFIG_ATTR, None) is not None:
        raise QdukdError(f"{type(model).__name__} is already prepared for QAT; restore_qat needs a float model")
    cfg = QuantConfig.from_saved(state["config"])
    collapse(model)
    for name, layer in state["layers"].items():
        if layer["kind"] not in TWINS:
            raise QdukdError(f"quant state layer {name!r} has unknown kind {layer['kind']!r} "
                             f"(known: {', '.join(KINDS.values())})")
        swap_layer(model, name, layer["kind"], layer["w_bits"], layer["a_bits"], cfg, tuple(layer["act_signed"]))
    apply_shared_inputs(model, state.get("shared", {}))
    if state["frozen"]:
        freeze(model)
    setattr(model, CONFIG_ATTR, cfg)
    return model
