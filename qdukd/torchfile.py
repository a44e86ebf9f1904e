"""Reading ``.pt`` / ``.pth`` files: safely (``weights_only=True``), with errors in our own words.

torch's own messages are not shown to users: some advise ``weights_only=False`` (the unsafe
opposite of what a user should do), some carry terminal colour codes, some are empty.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .cli import check_input_file
from .errors import QdukdError


def read_torch_file(path: str | Path, what: str = "checkpoint") -> Any:
    """Load ``path`` with ``torch.load(..., weights_only=True)`` on the CPU.

    Args:
        path: the file.
        what: how messages name it (``"checkpoint"``, ``"teacher weights"``, ...).

    Raises:
        QdukdError: missing, a folder, empty, truncated or corrupt, or holding Python objects
            other than tensors and plain containers (which are never unpickled).
    """
    path = check_input_file(path, what, "the .pt/.pth file")
    try:
        with warnings.catch_warnings():  # torch's pickle-protocol notes are not the user's concern
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except OSError as e:
        raise QdukdError(f"cannot read {what} {path}: {e.strerror or 'read error'}") from None
    except Exception as e:  # torch raises many types for truncated, foreign or unsafe files
        named = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if named:
            raise QdukdError(f"{what} {path} holds Python objects ({named.group(1)}), not only tensors; qdukd never "
                             "unpickles code from a file. Save a state_dict (model.state_dict()) instead") from None
        raise QdukdError(f"cannot read {what} {path}: not a complete PyTorch file (truncated or corrupt?); "
                         "copy it again or use another one") from None


def check_finite(tensors: Mapping[str, Any], label: str) -> None:
    """Raise when any floating-point tensor in ``tensors`` holds NaN or infinity.

    Args:
        tensors: name -> value (non-tensors and integer tensors are ignored).
        label: what the tensors are, for the message (``"checkpoint run/last.pt (student)"``).

    Raises:
        QdukdError: naming the first non-finite tensor and how many values are bad.
    """
    for name, value in tensors.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            bad = int((~torch.isfinite(value)).sum())
            if bad:
                raise QdukdError(f"{label}: tensor {name!r} has {bad} non-finite (NaN/inf) value(s) of "
                                 f"{value.numel()}; the run diverged or the file is damaged. Use an earlier "
                                 "checkpoint, or retrain with a lower train.lr or train.grad_clip")
