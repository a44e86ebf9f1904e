"""Initial quantization ranges from a few real batches (post-training calibration).

Weights: one step per channel (or tensor) straight from the weights. Activations: with every
quantizer switched off, the float network runs on the batches while forward pre-hooks on the
input quantizers record each input's min / max and a random sample; then each step is chosen
from those (:mod:`~qdukd.quant.ranges`), and with ``act_signed="auto"`` each input's grid is
unsigned exactly when no negative value was seen.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..errors import QdukdError
from .policy import quant_config
from .quantizers import FakeQuantizer, float_eval
from .ranges import Method, choose_scale
from .state import quantized_layers

# Values sampled per quantizer per batch: keeps percentile / MSE cheap on big activations.
SAMPLE_PER_BATCH = 1 << 15


class _Observer:
    """Min, max and a fixed-seed random sample of the tensors one quantizer sees."""

    def __init__(self, generator: torch.Generator) -> None:
        self.generator = generator
        self.min = float("inf")
        self.parts: list[torch.Tensor] = []

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        flat = args[0].detach().reshape(-1).float()
        lo, hi = torch.aminmax(flat)
        self.min = min(self.min, float(lo))
        if flat.numel() > SAMPLE_PER_BATCH:
            idx = torch.randint(flat.numel(), (SAMPLE_PER_BATCH,), generator=self.generator)
            flat = flat[idx.to(flat.device)]
        self.parts += [flat, torch.stack([lo, hi])]  # the extremes keep "max" exact

    def sample(self) -> torch.Tensor | None:
        return torch.cat(self.parts) if self.parts else None


@torch.no_grad()
def calibrate(model: nn.Module, batches: Iterable[Any], method: Method | None = None, num_batches: int | None = None,
              percentile: float | None = None) -> nn.Module:
    """Set every weight and input range of a prepared ``model`` from data; return ``model``.

    Args:
        model: prepared by :func:`~qdukd.quant.prepare_qat` (its mode is restored afterwards).
        batches: input tensors (or tuples/lists whose first item is the input, as DataLoaders give).
        method: "max", "percentile" or "mse"; default the config's ``calibration``.
        num_batches: use at most this many batches (default: all).
        percentile: for "percentile"; default the config's ``percentile``.

    Raises:
        QdukdError: ``model`` is not prepared, or no batch was given.
    """
    cfg = quant_config(model)
    method = method or cfg.calibration
    percentile = cfg.percentile if percentile is None else percentile
    layers = quantized_layers(model)
    for layer in layers.values():
        wq = getattr(layer, "weight_quant", None)
        if wq is not None:
            wq.set_scale(choose_scale(layer.weight, method, wq.qmin, wq.qmax, wq.axis, percentile))

    generator = torch.Generator().manual_seed(0)
    observers = {q: _Observer(generator) for layer in layers.values() for q in layer.input_quantizers}
    seen = 0
    with float_eval(model, [q.register_forward_pre_hook(obs) for q, obs in observers.items()]):
        for batch in itertools.islice(batches, num_batches):
            model(batch[0] if isinstance(batch, (tuple, list)) else batch)
            seen += 1
    if seen == 0:
        raise QdukdError("calibrate got no batches: pass a few real input batches (e.g. 4 training batches)")
    for q, obs in observers.items():
        _set_range(q, obs, cfg.act_signed, method, percentile)
    return model


def _set_range(q: FakeQuantizer, obs: _Observer, act_signed: str, method: Method, percentile: float) -> None:
    sample = obs.sample()
    if sample is None:  # the layer never ran on these batches
        return
    if act_signed == "auto":
        q.set_signed(obs.min < 0)
    q.set_scale(choose_scale(sample, method, q.qmin, q.qmax, None, percentile))
