"""Which quantizer costs the most: a prepared model scored with one fake quantizer on at a time.

The scores say where bits matter before any training (which layer to keep at 8 bits, why a
low-bit QAT run starts far below its FP model); ``"all"`` is the model as QAT starts it and
``"none"`` its float network.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ..errors import QdukdError
from .quantizers import FakeQuantizer


def quantizer_sensitivity(model: nn.Module, score: Callable[[nn.Module], float]) -> dict[str, float]:
    """``score(model)`` with every fake quantizer off, with all on, and with each one alone on.

    Args:
        model: prepared by :func:`~qdukd.quant.prepare_qat` and calibrated (or a QAT checkpoint
            restored into it). A quantizer shared by several inputs counts once, under its first name.
        score: maps the model to a number (e.g. PSNR_Y on a validation set); it is called
            ``len(quantizers) + 2`` times and must not change the model.

    Returns:
        ``{"none": ..., "all": ..., "<quantizer name>": ...}`` in the model's module order. Each
        quantizer's on/off switch is left as it was found, also when ``score`` raises.

    Raises:
        QdukdError: ``model`` has no fake quantizer.
    """
    quantizers = {name: m for name, m in model.named_modules() if isinstance(m, FakeQuantizer)}
    if not quantizers:
        raise QdukdError("the model has no fake quantizer: prepare it with qdukd.quant.prepare_qat first")
    found = {name: q.enabled for name, q in quantizers.items()}

    def only(on: set[str]) -> float:
        for name, q in quantizers.items():
            q.enabled = name in on
        return score(model)

    try:
        scores = {"none": only(set()), "all": only(set(quantizers))}
        scores.update({name: only({name}) for name in quantizers})
        return scores
    finally:
        for name, q in quantizers.items():
            q.enabled = found[name]
