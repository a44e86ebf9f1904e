"""Training checkpoints: everything needed to resume exactly, or to export with nothing else.

A checkpoint is a plain dict of tensors and JSON-like values (loadable with
``torch.load(..., weights_only=True)``):

- ``format``: ``"qdukd-checkpoint"``, ``version``
- ``recipe``: the recipe as a dict (it names the student architecture and its arguments)
- ``student``: the student's state_dict (with quantizer scales), ``quant``: its quant state or None
- ``ema``: the EMA weights or None; ``step``; ``optimizer``; ``rng``: RNG states
- ``metrics``: the last validation PSNR_Y per set
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .atomic import atomic_path
from .errors import QdukdError
from .models import build_model
from .quant import restore_qat
from .recipe import Recipe
from .torchfile import check_finite, read_torch_file

FORMAT, VERSION = "qdukd-checkpoint", 1


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically (temp file + rename): a crash never leaves half a file.

    Raises:
        QdukdError: the student (or its EMA) holds NaN or infinity; nothing is written.
    """
    _check_weights(state, f"refusing to save {path}")
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "version": VERSION, **state}, tmp)


def _check_weights(ckpt: dict[str, Any], label: str) -> None:
    check_finite(ckpt["student"], f"{label} (student)")
    if ckpt.get("ema") is not None:
        check_finite(ckpt["ema"], f"{label} (EMA weights)")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and validate a qdukd checkpoint (safely: ``weights_only=True``).

    Raises:
        QdukdError: missing, empty, corrupt, not a qdukd checkpoint, without a usable recipe,
            or with non-finite weights or quantizer steps (naming the tensor).
    """
    ckpt = read_checkpoint(path)
    if ckpt is None:
        raise QdukdError(f"{path} is not a qdukd training checkpoint (for plain weights use --model/--weights)")
    return ckpt


def read_checkpoint(path: str | Path) -> dict[str, Any] | None:
    """The validated checkpoint at ``path``, or None when the file holds something else (plain
    weights); the file is read once either way.

    Raises:
        QdukdError: missing or unreadable, or a qdukd checkpoint that fails validation (see
            :func:`load_checkpoint`), so a damaged checkpoint is never mistaken for plain weights.
    """
    path = Path(path)
    ckpt = read_torch_file(path, "checkpoint")
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        return None
    if ckpt.get("version") != VERSION:
        raise QdukdError(f"{path} has checkpoint version {ckpt.get('version')}, this qdukd reads {VERSION}")
    if not isinstance(ckpt.get("recipe"), dict) or not isinstance(ckpt.get("student"), dict):
        raise QdukdError(f"checkpoint {path} has no recipe or no student weights; it was not written by "
                         "qdukd.train (use the run's last.pt or step_*.pt)")
    try:
        Recipe.from_saved(ckpt["recipe"])
    except QdukdError as e:
        raise QdukdError(f"checkpoint {path} carries a recipe this qdukd cannot read: {e}") from None
    _check_weights(ckpt, f"checkpoint {path}")
    return ckpt


def student_from_checkpoint(ckpt: dict[str, Any], use_ema: bool = True, trust_code: bool = False) -> nn.Module:
    """Rebuild the trained student (quantized if it was) from a checkpoint alone.

    Args:
        ckpt: a dict from :func:`load_checkpoint`.
        use_ema: take the EMA weights when the checkpoint has them.
        trust_code: allow a student named by import path or plugin (code outside qdukd) to be
            imported; without it such a checkpoint is refused before anything is imported.
    """
    student_cfg, scale = ckpt["recipe"]["student"], ckpt["recipe"]["data"]["scale"]
    model = build_model(student_cfg["model"], scale, trust_code=trust_code, **student_cfg["args"])
    if ckpt.get("quant") is not None:
        restore_qat(model, ckpt["quant"])
    weights = ckpt["ema"] if use_ema and ckpt.get("ema") is not None else ckpt["student"]
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise QdukdError(f"checkpoint weights do not fit {student_cfg['model']}: {str(e).splitlines()[0]}") from None
    return model.eval()
