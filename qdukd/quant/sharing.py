"""One input quantizer per tensor (``QuantConfig.share_inputs``).

A tensor read by several quantized layers (a residual stream feeding the next conv and the next
add) gets one quantizer per reader by default. Deployment runtimes want it quantized once:
ONNX Runtime fuses a conv into QLinearConv only when a single QuantizeLinear reads its output,
and TensorRT recommends one Q/DQ per tensor. Sharing makes the readers use the first reader's
quantizer (same module, same learnable step), found by one probe forward like the head/tail roles.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

import torch
from torch import nn

from .layers import quantized_layers
from .quantizers import float_eval
from .roles import probe_input


@torch.no_grad()
def find_shared_inputs(model: nn.Module, example_input: torch.Tensor | None = None) -> dict[str, str]:
    """``{alias: owner}`` paths (``"layer.attr"``) of input quantizers that read the same tensor at
    the same bits; the owner is the first reader in execution order.

    Args:
        model: a prepared network (its quantizers are switched off for the probe).
        example_input: the probe; default :func:`~qdukd.quant.roles.probe_input`.
    """
    x = probe_input(model) if example_input is None else example_input
    reads: list[tuple[str, torch.Tensor, int]] = []  # keeps every probed tensor alive: ids stay unique

    def record(name: str, layer: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        for attr, t in zip(layer.INPUTS, args):
            reads.append((f"{name}.{attr}", t, getattr(layer, attr).bits))

    layers = quantized_layers(model)
    with float_eval(model, [layer.register_forward_pre_hook(lambda m, a, n=n: record(n, m, a))
                            for n, layer in layers.items()]):
        model(x)
    return _aliases((path, (id(t), bits)) for path, t, bits in reads)


def apply_shared_inputs(model: nn.Module, shared: dict[str, str]) -> None:
    """Point each alias quantizer of ``model`` at its owner's module (see :func:`find_shared_inputs`)."""
    for alias, owner in shared.items():
        layer, attr = alias.rsplit(".", 1)
        owner_layer, owner_attr = owner.rsplit(".", 1)
        setattr(model.get_submodule(layer), attr, getattr(model.get_submodule(owner_layer), owner_attr))


def shared_inputs(model: nn.Module) -> dict[str, str]:
    """The sharing a prepared ``model`` has now, as ``{alias: owner}`` paths."""
    return _aliases((f"{name}.{attr}", id(q)) for name, layer in quantized_layers(model).items()
                    for attr, q in zip(layer.INPUTS, layer.input_quantizers))


def _aliases(paths: Iterable[tuple[str, Hashable]]) -> dict[str, str]:
    """``{path: first path with the same key}`` for every path whose key came earlier."""
    owners: dict[Hashable, str] = {}
    shared = {}
    for path, key in paths:
        owner = owners.setdefault(key, path)
        if owner != path:
            shared[path] = owner
    return shared
