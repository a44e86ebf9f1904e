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

FORMAT, VERSION = "qdukd-checkpoint", 1


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write a checkpoint atomically (temp file + rename): a crash never leaves half a file."""
    with atomic_path(path) as tmp:
        torch.save({"format": FORMAT, "version": VERSION, **state}, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and validate a qdukd checkpoint (safely: ``weights_only=True``).

    Raises:
        QdukdError: missing, corrupt, or not a qdukd checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise QdukdError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for truncated / foreign files
        raise QdukdError(f"cannot read checkpoint {path}: {str(e).splitlines()[0]} (corrupt or not a torch file?)") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise QdukdError(f"{path} is not a qdukd training checkpoint (for plain weights use --model/--weights)")
    if ckpt.get("version") != VERSION:
        raise QdukdError(f"{path} has checkpoint version {ckpt.get('version')}, this qdukd reads {VERSION}")
    return ckpt


def is_checkpoint(path: str | Path) -> bool:
    """Cheap check by content, for CLIs that take either a checkpoint or an exported model."""
    try:
        load_checkpoint(path)
        return True
    except QdukdError:
        return False


def student_from_checkpoint(ckpt: dict[str, Any], use_ema: bool = True) -> nn.Module:
    """Rebuild the trained student (quantized if it was) from a checkpoint alone.

    Args:
        ckpt: a dict from :func:`load_checkpoint`.
        use_ema: take the EMA weights when the checkpoint has them.
    """
    student_cfg, scale = ckpt["recipe"]["student"], ckpt["recipe"]["data"]["scale"]
    model = build_model(student_cfg["model"], scale, **student_cfg["args"])
    if ckpt.get("quant") is not None:
        restore_qat(model, ckpt["quant"])
    weights = ckpt["ema"] if use_ema and ckpt.get("ema") is not None else ckpt["student"]
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as e:
        raise QdukdError(f"checkpoint weights do not fit {student_cfg['model']}: {str(e).splitlines()[0]}") from None
    return model.eval()
