"""DUKD losses: named L1 terms and their weighted total.

For an LR batch ``x`` with HR ``y`` at scale ``s``, student ``S`` and frozen teacher ``T``:

* ``pix = L1(S(x), y)`` and ``kd = L1(S(x), T(x))`` (the standard terms);
* ``zoom_in_kd = L1(F^-1(S(F(z))), T(z))`` for LR-sized tiles ``z`` of ``y`` and random paired
  augmentations ``F`` (label consistency); the teacher's output is the only target;
* ``zoom_out_pix = L1(S(d), x)`` and ``zoom_out_kd = L1(S(d), T(d))`` for ``d = x`` downscaled by
  ``s``: the LR patch is the ground truth.

Terms are reported unweighted; ``total`` weights ``*_pix`` terms by ``w_pix`` and ``*kd`` terms by
``w_kd``, times ``w_zoom_in`` / ``w_zoom_out`` for the upcycled terms. Modes: ``"gt"`` = pix only
(no teacher needed), ``"kd"`` = pix + kd, ``"dukd"`` = all.
The reference code backpropagates the standard and the auxiliary terms in two optimizer steps;
:func:`standard_terms` and :func:`dukd_aux_terms` give the two halves, :func:`compute_losses`
everything at once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from .augment import TRANSPOSE, apply_ops, invert_ops, sample_ops
from .upcycle import cut_cells, zoom_in_cells, zoom_in_count, zoom_out

__all__ = ["MODES", "TARGET_KEYS", "DukdConfig", "compute_losses", "dukd_aux_terms",
           "label_consistency_loss", "standard_terms"]

Net = Callable[[Tensor], Tensor]
MODES = ("gt", "kd", "dukd")
# Teacher outputs a trainer may precompute (e.g. from a cache): ``kd`` = T(lr), ``zoom_out`` =
# T(zoom_out(lr)), and ``zoom_in`` = the teacher's output of the whole HR patch (scale**2 times its
# pixels), from which the targets of the randomly drawn zoom-in tiles are cut.
TARGET_KEYS = ("kd", "zoom_in", "zoom_out")


@dataclass(frozen=True)
class DukdConfig:
    """Which DUKD terms to compute and how to weight them.

    Args:
        mode: ``"gt"`` (pix), ``"kd"`` (pix + kd) or ``"dukd"`` (plus zoom-in and zoom-out).
        w_pix: Weight of the ground-truth terms (``pix``, ``zoom_out_pix``).
        w_kd: Weight of the teacher terms (``kd``, ``zoom_in_kd``, ``zoom_out_kd``).
        w_zoom_in: Extra factor on the zoom-in term (on top of ``w_kd``), so the dose of one
            upcycled input can be set without touching the main pix / kd weights.
        w_zoom_out: Extra factor on both zoom-out terms (on top of ``w_pix`` / ``w_kd``).
        p: Probability of each label-consistency augmentation, per zoom-in tile.
        n_zoom_in: Zoom-in tiles per sample; 0 = the reference's 2 / 1 / 1 for x2 / x3 / x4.
        zoom_out: Include the zoom-out terms.
        reference_inverse: Undo the augmentations as the reference code does (wrong for
            transpose + exactly one flip); see :func:`qdukd.distill.augment.invert_ops`.
        schedule: ``"single"``: one optimizer step on all terms; ``"two_step"``: the reference's
            step on the standard terms, then one on the auxiliary terms (gradients accumulate).
        aux_updates_ranges: let the auxiliary terms train the learnable activation ranges of a
            quantized student (off: their gradients to the ranges are discarded).
    """

    mode: Literal["gt", "kd", "dukd"] = "dukd"
    w_pix: float = 1.0
    w_kd: float = 1.0
    w_zoom_in: float = 1.0
    w_zoom_out: float = 1.0
    p: float = 0.3
    n_zoom_in: int = 0
    zoom_out: bool = True
    reference_inverse: bool = False
    schedule: Literal["single", "two_step"] = "single"
    aux_updates_ranges: bool = False


def _mode(cfg: DukdConfig) -> str:
    if cfg.mode not in MODES:
        raise ValueError(f"unknown DUKD mode {cfg.mode!r}; choose one of {', '.join(MODES)}")
    return cfg.mode


def _targets(teacher_targets: Mapping[str, Tensor] | None) -> dict[str, Tensor]:
    targets = dict(teacher_targets or {})
    unknown = set(targets) - set(TARGET_KEYS)
    if unknown:
        raise ValueError(f"unknown teacher_targets keys {sorted(unknown)}; valid: {', '.join(TARGET_KEYS)}")
    return targets


def _teach(teacher: Net | None, x: Tensor) -> Tensor:
    if teacher is None:
        raise ValueError("this DUKD mode needs a teacher (or precomputed teacher_targets)")
    return teacher(x)


def _target(targets: dict[str, Tensor], name: str, teacher: Net | None, x: Tensor) -> Tensor:
    return targets[name].to(x.dtype) if name in targets else _teach(teacher, x)


def _weight(name: str, cfg: DukdConfig) -> float:
    base = cfg.w_pix if name.endswith("pix") else cfg.w_kd
    upcycled = {"zoom_in": cfg.w_zoom_in, "zoom_out": cfg.w_zoom_out}.get(name.rsplit("_", 1)[0], 1.0)
    return base * upcycled


def _with_total(terms: dict[str, Tensor], cfg: DukdConfig) -> dict[str, Tensor]:
    total = sum(v * _weight(name, cfg) for name, v in terms.items())
    return {**terms, "total": total}


def standard_terms(student: Net, teacher: Net | None, lr: Tensor, hr: Tensor, cfg: DukdConfig,
                   teacher_targets: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """The standard terms on the real LR/HR pair: ``pix`` and, unless mode is ``"gt"``, ``kd``.

    Args:
        student: The network being trained.
        teacher: The frozen teacher (e.g. :class:`~qdukd.distill.teacher.Teacher`); may be None
            in mode ``"gt"`` or when ``teacher_targets["kd"]`` is given.
        lr: LR batch ``(N, 3, h, w)``.
        hr: HR batch ``(N, 3, s*h, s*w)``.
        cfg: Mode and weights.
        teacher_targets: Optional precomputed ``{"kd": T(lr)}``.

    Returns:
        ``{"pix", ["kd"], "total"}``; ``total`` carries the gradient.
    """
    mode = _mode(cfg)
    targets = _targets(teacher_targets)
    out = student(lr)
    terms = {"pix": F.l1_loss(out, hr)}
    if mode != "gt":
        terms["kd"] = F.l1_loss(out, _target(targets, "kd", teacher, lr))
    return _with_total(terms, cfg)


def label_consistency_loss(student: Net, tiles: Tensor, ops: Tensor, target: Tensor,
                           reference_inverse: bool = False) -> Tensor:
    """Mean ``L1(F^-1(S(F(z))), target)`` over a batch of tiles with per-sample augmentations.

    Square tiles go through the student in one forward. For non-square tiles a transpose
    changes the shape, so the batch is split by the transpose flag into at most two
    same-shaped groups (one forward each); the group sums are divided by the total element
    count, which is exactly the mean over the whole batch.

    Args:
        student: The network being trained.
        tiles: Clean inputs ``z`` ``(M, 3, h, w)``.
        ops: Bool mask ``(M, len(OPS))`` from :func:`~qdukd.distill.augment.sample_ops`.
        target: Teacher outputs on the clean tiles, ``(M, 3, s*h, s*w)``.
        reference_inverse: Undo the ops as the reference code does (see
            :func:`~qdukd.distill.augment.invert_ops`).

    Returns:
        Scalar loss.
    """
    if tiles.shape[-2] == tiles.shape[-1]:
        groups: list[slice | Tensor] = [slice(None)]
    else:
        flag = ops[:, TRANSPOSE]
        groups = [idx for idx in (torch.nonzero(~flag).squeeze(1), torch.nonzero(flag).squeeze(1)) if idx.numel()]
    err = sum(F.l1_loss(invert_ops(student(apply_ops(tiles[g], ops[g])), ops[g], reference_inverse), target[g],
                        reduction="sum") for g in groups)
    return err / target.numel()


def _draw_zoom_in(hr: Tensor, scale: int, cfg: DukdConfig, generator: torch.Generator, targets: dict[str, Tensor],
                  shard: tuple[int, int] = (0, 1)) -> tuple[Tensor, Tensor, Tensor | None]:
    """Zoom-in tiles, their augmentations and, when ``targets`` has ``zoom_in``, their cached targets."""
    cells = zoom_in_cells(scale, zoom_in_count(scale, cfg.n_zoom_in), generator)
    tiles = cut_cells(hr, scale, cells)
    cached = cut_cells(targets["zoom_in"], scale, cells).to(hr.dtype) if "zoom_in" in targets else None
    rank, world = shard
    # Draw for the global batch and keep this rank's rows, so N processes draw exactly what one
    # process with the whole batch would (tiles are position-major: (n, world, local)).
    ops = sample_ops(tiles.shape[0] * world, cfg.p, generator)
    return tiles, ops.view(len(cells), world, hr.shape[0], -1)[:, rank].reshape(tiles.shape[0], -1), cached


def _aux_terms(student: Net, teacher: Net | None, lr: Tensor, scale: int, cfg: DukdConfig, tiles: Tensor,
               ops: Tensor, zoom_in_target: Tensor | None, targets: dict[str, Tensor]) -> dict[str, Tensor]:
    if zoom_in_target is None:
        zoom_in_target = _teach(teacher, tiles)
    terms = {"zoom_in_kd": label_consistency_loss(student, tiles, ops, zoom_in_target, cfg.reference_inverse)}
    if cfg.zoom_out:
        small = zoom_out(lr, scale)
        out = student(small)
        h, w = lr.shape[-2:]
        # s * ceil(h / s) exceeds h when s does not divide h; those rows/columns have no ground truth.
        terms["zoom_out_pix"] = F.l1_loss(out[..., :h, :w], lr)
        terms["zoom_out_kd"] = F.l1_loss(out, _target(targets, "zoom_out", teacher, small))
    return _with_total(terms, cfg)


def dukd_aux_terms(student: Net, teacher: Net, lr: Tensor, hr: Tensor, scale: int, cfg: DukdConfig,
                   generator: torch.Generator, teacher_targets: Mapping[str, Tensor] | None = None,
                   shard: tuple[int, int] = (0, 1)) -> dict[str, Tensor]:
    """DUKD's auxiliary terms on upcycled inputs (computed whatever ``cfg.mode`` says).

    Draws the zoom-in tile positions, then the augmentations, from ``generator`` (in that
    order), so a seeded generator reproduces the step exactly.

    Args:
        student: The network being trained.
        teacher: The frozen teacher (may be None when every target is precomputed).
        lr: LR batch ``(N, 3, h, w)``.
        hr: HR batch ``(N, 3, s*h, s*w)``; the zoom-in tiles are cut from it.
        scale: Upscaling factor ``s``.
        cfg: Weights, augmentation probability, tile count, zoom-out switch, inverse mode.
        generator: Source of all randomness.
        teacher_targets: Optional precomputed ``{"zoom_in": T(whole HR patch), "zoom_out":
            T(zoom_out(lr, s))}``; ``zoom_in`` is ``(N, 3, s*s*h, s*s*w)``, its cells are the
            targets of the drawn tiles.
        shard: ``(rank, world)`` when the global batch is split over processes: ``lr``/``hr``
            are this rank's contiguous share, and the random draws match a single process.

    Returns:
        ``{"zoom_in_kd", ["zoom_out_pix", "zoom_out_kd"], "total"}``.
    """
    targets = _targets(teacher_targets)
    tiles, ops, zoom_in_target = _draw_zoom_in(hr, scale, cfg, generator, targets, shard)
    return _aux_terms(student, teacher, lr, scale, cfg, tiles, ops, zoom_in_target, targets)


def compute_losses(student: Net, teacher: Net | None, lr: Tensor, hr: Tensor, scale: int, cfg: DukdConfig,
                   generator: torch.Generator,
                   teacher_targets: Mapping[str, Tensor] | None = None) -> dict[str, Tensor]:
    """All terms of ``cfg.mode`` for one step, with their weighted ``total``.

    In mode ``"dukd"`` the teacher runs once on the LR batch and the zoom-in tiles together
    (they have the same size) unless either is precomputed. Randomness is drawn
    exactly as in :func:`dukd_aux_terms`.

    Args:
        student: The network being trained.
        teacher: The frozen teacher; may be None in mode ``"gt"``.
        lr: LR batch ``(N, 3, h, w)``.
        hr: HR batch ``(N, 3, s*h, s*w)``.
        scale: Upscaling factor ``s``.
        cfg: Mode, weights and DUKD options.
        generator: Source of all randomness (unused outside mode ``"dukd"``).
        teacher_targets: Optional precomputed teacher outputs, keys in :data:`TARGET_KEYS`.

    Returns:
        Mode ``"gt"``: ``pix, total``; ``"kd"``: ``pix, kd, total``; ``"dukd"``: additionally
        ``zoom_in_kd`` and, with ``cfg.zoom_out``, ``zoom_out_pix, zoom_out_kd``.
    """
    targets = _targets(teacher_targets)
    if _mode(cfg) != "dukd":
        return standard_terms(student, teacher, lr, hr, cfg, targets)
    tiles, ops, zoom_in_target = _draw_zoom_in(hr, scale, cfg, generator, targets)
    if "kd" not in targets and zoom_in_target is None:
        # One teacher call for the LR patches and the zoom-in tiles: both are LR-sized.
        both = _teach(teacher, torch.cat([lr, tiles]))
        targets["kd"], zoom_in_target = both.split([lr.shape[0], tiles.shape[0]])
    std = standard_terms(student, teacher, lr, hr, cfg, targets)
    aux = _aux_terms(student, teacher, lr, scale, cfg, tiles, ops, zoom_in_target, targets)
    return {**std, **aux, "total": std["total"] + aux["total"]}
