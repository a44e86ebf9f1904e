"""Paired invertible augmentations for DUKD's label-consistency regularisation.

The student sees an augmented input ``F(z)``; its output is mapped back with ``F^-1`` and
compared with the teacher's output on the clean ``z``. The four ops, in the reference code's
order, are colour inversion ``1 - x``, vertical flip (rows, dim -2), horizontal flip
(columns, dim -1) and transpose (swap H and W). Each op is an involution, so the true inverse
applies the same ops in reverse order.

A draw of ops is a boolean mask of shape ``(n, 4)`` (columns in :data:`OPS` order), kept on the
CPU so that deciding which ops to run never waits on an accelerator. Each op is applied to the
whole batch at once and selected per sample with ``torch.where``: four kernels per direction
however many samples there are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor

__all__ = ["OPS", "TRANSPOSE", "apply_ops", "invert_ops", "sample_ops"]

OPS: tuple[str, ...] = ("invert", "vflip", "hflip", "transpose")
TRANSPOSE = OPS.index("transpose")

_FUNCTIONS: tuple[Callable[[Tensor], Tensor], ...] = (
    lambda x: 1 - x,
    lambda x: x.flip(-2),
    lambda x: x.flip(-1),
    lambda x: x.transpose(-2, -1),
)


def sample_ops(n: int, p: float, generator: torch.Generator) -> Tensor:
    """Draw an independent random subset of :data:`OPS` for each of ``n`` samples.

    Args:
        n: Number of samples.
        p: Probability of each op, independently per op and per sample.
        generator: Source of randomness (its device is used for the draw).

    Returns:
        Boolean CPU tensor of shape ``(n, len(OPS))``; ``mask[i, k]`` applies ``OPS[k]`` to sample i.
    """
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"augmentation probability must be in [0, 1], got {p}")
    draw = torch.rand(n, len(OPS), generator=generator, device=generator.device)
    return (draw < p).cpu()


def _run(x: Tensor, ops: Tensor, order: Iterable[int]) -> Tensor:
    if ops.dtype != torch.bool or ops.shape != (x.shape[0], len(OPS)):
        raise ValueError(f"ops must be a bool mask of shape ({x.shape[0]}, {len(OPS)}), got "
                         f"{ops.dtype} {tuple(ops.shape)}")
    for k in order:
        mask = ops[:, k]
        if not mask.any():
            continue
        if mask.all():
            x = _FUNCTIONS[k](x)
            continue
        if k == TRANSPOSE and x.shape[-2] != x.shape[-1]:
            raise ValueError(f"a non-square batch ({x.shape[-2]}x{x.shape[-1]}) can only be transposed as a "
                             "whole: split it by ops[:, TRANSPOSE] first")
        x = torch.where(mask.to(x.device).view(-1, 1, 1, 1), _FUNCTIONS[k](x), x)
    return x


def apply_ops(x: Tensor, ops: Tensor) -> Tensor:
    """Apply each sample's ops, in :data:`OPS` order, without modifying ``x``.

    Args:
        x: Batch ``(N, C, H, W)``; colour inversion assumes values in [0, 1].
        ops: Bool mask ``(N, len(OPS))`` from :func:`sample_ops`. If ``H != W`` the transposed
            samples would change shape, so the transpose column must then be all-True or
            all-False (group a mixed batch by it first).

    Returns:
        The augmented batch; ``x`` itself, or a view of it, where no op needs new memory.

    Raises:
        ValueError: On a malformed mask or a mixed transpose column for a non-square batch.
    """
    return _run(x, ops, range(len(OPS)))


def invert_ops(y: Tensor, ops: Tensor, reference: bool = False) -> Tensor:
    """Undo :func:`apply_ops` on a network output (any spatial size).

    Args:
        y: Batch ``(N, C, H', W')``, e.g. the student's output on ``apply_ops(x, ops)``.
        ops: The mask that was passed to :func:`apply_ops`.
        reference: Re-apply the ops in forward order, as the DUKD reference code does. That is
            not an inverse when a transpose meets exactly one flip (``T V T V`` is a 180-degree
            rotation): at p = 0.3 about 12.6 % of samples get a rotated target. Only for
            reproducing the reference; the default is the true inverse (reverse order).

    Returns:
        The de-augmented batch (``y`` itself, or a view of it, where no op needs new memory).

    Raises:
        ValueError: As :func:`apply_ops`.
    """
    order = range(len(OPS)) if reference else reversed(range(len(OPS)))
    return _run(y, ops, order)
