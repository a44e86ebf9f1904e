"""Choosing a quantization step from data: ``max``, ``percentile`` and ``mse`` (pure functions).

Every function returns the step ``range / qmax`` for the grid ``[qmin, qmax]``; the range is
taken over ``|x|`` on a signed grid and over ``max(x, 0)`` on an unsigned one (negatives clip).
``axis`` gives one step per index of that axis (per-channel weights), None one per tensor.
"""

from __future__ import annotations

from typing import Literal

import torch

from .quantizers import MIN_SCALE, dequantize, quantize

Method = Literal["max", "percentile", "mse"]

# Candidate clip levels of the MSE search, as fractions of the max (1% resolution).
MSE_STEPS = 100
# Elements evaluated at once by the MSE search (bounds its memory on big weights).
_MSE_BUDGET = 1 << 16


def _rows(x: torch.Tensor, axis: int | None) -> torch.Tensor:
    """``x`` as a (channels, n) float matrix: one row per step (a single row per tensor)."""
    x = x.detach().float()
    return x.reshape(1, -1) if axis is None else x.movedim(axis, 0).reshape(x.shape[axis], -1)


def _magnitudes(x: torch.Tensor, qmin: int, axis: int | None) -> torch.Tensor:
    """The (channels, n) magnitudes the grid must cover."""
    rows = _rows(x, axis)
    return rows.abs() if qmin < 0 else rows.clamp_min(0)


def _per(values: torch.Tensor, axis: int | None) -> torch.Tensor:
    """(channels,) results -> a scalar per tensor, or (channels,) per channel."""
    return values.reshape(()) if axis is None else values


def max_scale(x: torch.Tensor, qmin: int, qmax: int, axis: int | None = None) -> torch.Tensor:
    """Step that puts the largest magnitude exactly on the grid's end.

    Args:
        x: data to cover (a weight, or a sample of activations).
        qmin, qmax: grid ends.
        axis: per-channel axis or None.
    """
    return _per(_magnitudes(x, qmin, axis).amax(dim=1).div(qmax).clamp_min(MIN_SCALE), axis)


def percentile_scale(x: torch.Tensor, qmin: int, qmax: int, axis: int | None = None,
                     percentile: float = 99.99) -> torch.Tensor:
    """Step whose clip level is the ``percentile``-th percentile of the magnitudes.

    Args:
        x: data to cover.
        qmin, qmax: grid ends.
        axis: per-channel axis or None.
        percentile: in (0, 100]; 100 is :func:`max_scale`.
    """
    level = torch.quantile(_magnitudes(x, qmin, axis), percentile / 100.0, dim=1)
    return _per(level.div(qmax).clamp_min(MIN_SCALE), axis)


def mse_scale(x: torch.Tensor, qmin: int, qmax: int, axis: int | None = None, steps: int = MSE_STEPS) -> torch.Tensor:
    """Step minimising the mean squared quantization error, by grid search over clip levels.

    The candidates are ``k / steps`` of the max (k = 1..steps); each channel picks its own
    (the smallest clip level among equal errors).

    Args:
        x: data to cover.
        qmin, qmax: grid ends.
        axis: per-channel axis or None.
        steps: number of candidate clip levels.
    """
    rows = _rows(x, axis)
    top = max_scale(x, qmin, qmax, axis).reshape(-1, 1)
    fracs = torch.arange(1, steps + 1, device=rows.device, dtype=rows.dtype) / steps
    errors = []
    for chunk in fracs.split(max(1, _MSE_BUDGET // rows.numel())):  # (k, channels, n) at a time
        s = (chunk[:, None, None] * top).clamp_min(MIN_SCALE)
        errors.append((dequantize(quantize(rows, s, qmin, qmax), s) - rows).pow(2).mean(dim=-1))
    best = torch.cat(errors).argmin(dim=0)
    return _per((fracs[best] * top[:, 0]).clamp_min(MIN_SCALE), axis)


def choose_scale(x: torch.Tensor, method: Method, qmin: int, qmax: int, axis: int | None = None,
                 percentile: float = 99.99) -> torch.Tensor:
    """Dispatch to :func:`max_scale`, :func:`percentile_scale` or :func:`mse_scale`.

    Args:
        x: data to cover.
        method: "max", "percentile" or "mse".
        qmin, qmax: grid ends.
        axis: per-channel axis or None.
        percentile: used by "percentile".
    """
    if method == "max":
        return max_scale(x, qmin, qmax, axis)
    if method == "percentile":
        return percentile_scale(x, qmin, qmax, axis, percentile)
    return mse_scale(x, qmin, qmax, axis)
