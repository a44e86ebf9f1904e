"""The parity gate: every backend must score what PyTorch scores, to within a tolerance.

PyTorch (the frozen fake-quant student, eval mode) is the reference. Each backend is scored
by :func:`qdukd.scoring.score_set` on the same sets, and its 8-bit outputs are compared with
PyTorch's image by image. A backend that differs by more than the tolerance in PSNR_Y on any
set fails the gate; a backend that cannot run is reported as skipped with its reason, never
counted as a pass.

Agreement alone proves nothing about a broken model (PyTorch and a runtime agree on garbage),
so the gate also has a quality floor: the reference must be finite and beat bicubic
interpolation by at least ``min_gain_db`` on every set.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..errors import NonFiniteOutput
from ..images import to_tensor, to_uint8
from ..metrics import Convention
from ..models import Bicubic
from ..scoring import SetScore, SRFunction, score_set, torch_sr_function
from .runtime import ArrayFunction, Unavailable


@dataclass
class BackendResult:
    """One backend's row of the report (``sets``: per-set PSNR_Y and its difference to PyTorch)."""

    name: str
    ran: bool
    skipped_reason: str | None = None
    psnr_y: float | None = None
    delta_psnr_y: float | None = None
    max_abs_diff_levels: int | None = None
    seconds: float | None = None
    sets: dict[str, dict[str, float]] = field(default_factory=dict)
    passed: bool | None = None


@dataclass
class QualityFloor:
    """The reference against bicubic: ``gain_db`` per set, and why it failed (None: passed)."""

    min_gain_db: float
    bicubic_psnr_y: dict[str, float]
    gain_db: dict[str, float]
    failure: str | None = None

    @property
    def passed(self) -> bool:
        return self.failure is None


@dataclass
class GateReport:
    """The gate's verdict. ``images``: one row per verify image (``set``, ``name``, ``psnr_y`` of
    bicubic, PyTorch and every backend that ran, ``max_abs_diff_levels`` per backend), in set and
    file order; ``outputs``: the uint8 images in that order, ``"lr"`` (the inputs), ``"bicubic"``,
    ``"pytorch"`` and each backend that ran (for the HTML report; not in :meth:`to_dict`)."""

    passed: bool
    tolerance_db: float
    reference: BackendResult
    backends: list[BackendResult]
    quality: QualityFloor
    images: list[dict] = field(default_factory=list)
    outputs: dict[str, list[np.ndarray]] = field(default_factory=dict, repr=False)

    def to_dict(self) -> dict:
        ref, q = self.reference, self.quality
        return {"passed": self.passed, "tolerance_db": self.tolerance_db,
                "reference": {"name": ref.name, "psnr_y": ref.psnr_y, "seconds": ref.seconds,
                              "sets": {k: v["psnr_y"] for k, v in ref.sets.items()}},
                "quality_floor": {"passed": q.passed, "min_gain_over_bicubic_db": q.min_gain_db,
                                  "bicubic_psnr_y": q.bicubic_psnr_y, "gain_over_bicubic_db": q.gain_db,
                                  "failure": q.failure},
                "backends": [asdict(b) for b in self.backends], "images": self.images}


class _Recorder:
    """An SR function that keeps every output (and, with ``keep_inputs``, every input), to compare
    backends image by image. Only the reference keeps inputs: every backend sees the same ones."""

    def __init__(self, fn: SRFunction, keep_inputs: bool = False) -> None:
        self.fn, self.keep_inputs, self.inputs, self.outputs = fn, keep_inputs, [], []

    def __call__(self, lr: np.ndarray) -> np.ndarray:
        sr = self.fn(lr)
        if self.keep_inputs:
            self.inputs.append(lr)
        self.outputs.append(sr)
        return sr


def uint8_function(fn: ArrayFunction) -> SRFunction:
    """An NCHW float array function as the uint8 HxWx3 function scoring expects.

    Uses :func:`qdukd.images.to_tensor` / :func:`~qdukd.images.to_uint8`, so every backend's
    output is rounded to 8 bits exactly as PyTorch's is.
    """
    def run(lr: np.ndarray) -> np.ndarray:
        return to_uint8(torch.from_numpy(fn(to_tensor(lr).numpy())))

    return run


def _quality_floor(ref: dict[str, float], sets: list[Path], scale: int, convention: Convention,
                   min_gain_db: float) -> tuple[QualityFloor, list[SetScore], list[np.ndarray]]:
    """Bicubic's PSNR_Y on every set, and the first set where the reference's gain falls short
    (with bicubic's scores and outputs, image by image)."""
    rec = _Recorder(torch_sr_function(Bicubic(scale)))
    scores = [score_set(rec, p, scale, convention, False) for p in sets]
    bicubic = {s.name: s.psnr_y for s in scores}
    gain = {k: ref[k] - bicubic[k] for k in ref}
    short = next((k for k, g in gain.items() if not g >= min_gain_db), None)
    failure = None
    if short is not None:
        failure = (f"the PyTorch student scores {ref[short]:.2f} dB PSNR_Y on {short}, {gain[short]:+.2f} dB against "
                   f"bicubic ({bicubic[short]:.2f} dB); the floor is {min_gain_db:+.2f} dB. The checkpoint is broken "
                   "or undertrained (lower the floor with --min-gain-over-bicubic only for a student meant to be "
                   "worse than bicubic)")
    return QualityFloor(min_gain_db, bicubic, gain, failure), scores, rec.outputs


def run_gate(reference: SRFunction, backends: dict[str, Callable[[], ArrayFunction]], sets: list[Path],
             scale: int, tolerance_db: float, convention: Convention = "float",
             progress: bool = False, min_gain_db: float = 0.0) -> GateReport:
    """Score the reference and every backend; fail when one differs by more than the tolerance,
    or when the reference is not finite or does not beat bicubic by ``min_gain_db`` on every set.

    Args:
        reference: the PyTorch student as a uint8 SR function.
        backends: name -> a factory for its array function; the factory raises
            :class:`~qdukd.export.runtime.Unavailable` when the backend cannot run here.
        sets: verification sets (HR folders or BasicSR layouts).
        scale: SR scale.
        tolerance_db: the largest allowed |PSNR_Y difference| to PyTorch, per set.
        convention: the Y convention.
        progress: show progress bars.
        min_gain_db: the quality floor: the reference's PSNR_Y minus bicubic's, per set.
    """
    ref_rec = _Recorder(reference, keep_inputs=True)
    try:
        ref_scores = [score_set(ref_rec, s, scale, convention, progress) for s in sets]
    except NonFiniteOutput as e:  # nothing to compare: the model itself is broken
        ref = BackendResult("pytorch", True, sets={})
        return GateReport(False, tolerance_db, ref, [], QualityFloor(min_gain_db, {}, {}, f"PyTorch reference: {e}"))
    ref = BackendResult("pytorch", True, psnr_y=float(np.mean([s.psnr_y for s in ref_scores])),
                        seconds=sum(s.seconds for s in ref_scores),
                        sets={s.name: {"psnr_y": s.psnr_y} for s in ref_scores})
    quality, bicubic, bicubic_out = _quality_floor({s.name: s.psnr_y for s in ref_scores}, sets, scale, convention,
                                                   min_gain_db)
    images = [{"set": s.name, "name": i.name, "psnr_y": {"bicubic": b.psnr_y, "pytorch": i.psnr_y},
               "max_abs_diff_levels": {}}
              for s, bs in zip(ref_scores, bicubic) for i, b in zip(s.images, bs.images)]
    outputs = {"lr": ref_rec.inputs, "bicubic": bicubic_out, "pytorch": ref_rec.outputs}
    results = []
    for name, factory in backends.items():
        try:
            fn = factory()
        except Unavailable as e:
            results.append(BackendResult(name, False, skipped_reason=str(e)))
            continue
        fn(np.zeros((1, 3, 16, 16), np.float32))  # warm-up: one-time session and kernel setup
        rec = _Recorder(uint8_function(fn))
        scores = [score_set(rec, s, scale, convention, progress) for s in sets]
        per_set = {s.name: {"psnr_y": s.psnr_y, "delta_psnr_y": s.psnr_y - r.psnr_y}
                   for s, r in zip(scores, ref_scores)}
        psnr_y = float(np.mean([s.psnr_y for s in scores]))
        diffs = [int(np.abs(a.astype(np.int16) - b.astype(np.int16)).max())
                 for a, b in zip(rec.outputs, ref_rec.outputs)]
        for row, i, d in zip(images, (i for s in scores for i in s.images), diffs):
            row["psnr_y"][name], row["max_abs_diff_levels"][name] = i.psnr_y, d
        outputs[name] = rec.outputs
        ok = all(abs(v["delta_psnr_y"]) <= tolerance_db for v in per_set.values())
        results.append(BackendResult(name, True, psnr_y=psnr_y, delta_psnr_y=psnr_y - ref.psnr_y,
                                     max_abs_diff_levels=max(diffs), seconds=sum(s.seconds for s in scores),
                                     sets=per_set, passed=ok))
    passed = quality.passed and all(r.passed for r in results if r.ran)
    return GateReport(passed, tolerance_db, ref, results, quality, images, outputs)


def format_report(report: GateReport) -> str:
    """A readable table: one row per backend, skipped backends with their reason."""
    q = report.quality
    if report.reference.psnr_y is None:  # the reference itself failed
        return f"parity gate: FAILED\nquality floor: {q.failure}"
    rows = [f"{'backend':<28}{'PSNR_Y':>9}{'dPSNR_Y':>10}{'max|d| lv':>11}{'seconds':>9}  result"]
    r = report.reference
    bicubic = float(np.mean(list(q.bicubic_psnr_y.values())))
    rows.append(f"{'bicubic':<28}{bicubic:>9.4f}")
    rows.append(f"{'pytorch (reference)':<28}{r.psnr_y:>9.4f}{'':>10}{'':>11}{r.seconds:>9.2f}  "
                f"{'ok' if q.passed else 'FAIL'} (gain over bicubic {min(q.gain_db.values()):+.2f} dB on its worst "
                f"set, floor {q.min_gain_db:+.2f})")
    for b in report.backends:
        if not b.ran:
            rows.append(f"{b.name:<28}{'':>39}  skipped: {b.skipped_reason}")
            continue
        worst = max(b.sets.values(), key=lambda v: abs(v["delta_psnr_y"]))["delta_psnr_y"]
        verdict = "ok" if b.passed else f"FAIL (|{worst:+.4f}| dB > {report.tolerance_db} dB)"
        rows.append(f"{b.name:<28}{b.psnr_y:>9.4f}{b.delta_psnr_y:>+10.4f}{b.max_abs_diff_levels:>11d}"
                    f"{b.seconds:>9.2f}  {verdict}")
    rows.append(f"parity gate: {'PASSED' if report.passed else 'FAILED'} "
                f"(tolerance {report.tolerance_db} dB PSNR_Y per set)")
    if not q.passed:
        rows.append(f"quality floor: {q.failure}")
    if any(b.ran and not b.passed for b in report.backends):
        rows.append(_failure_hint(report))
    return "\n".join(rows)


def _failure_hint(report: GateReport) -> str:
    """What a failure means: the unfused reference failing too points at the student, not the kernels."""
    failed = {b.name for b in report.backends if b.ran and not b.passed}
    if "onnxruntime-cpu-reference" in failed:
        return ("hint: the unfused reference differs too: the graph is not exact (clip = \"container\" lets "
                "codes pass their grid where the student's learned ranges clip: export with "
                "--target onnxruntime-int8-exact), or the student amplifies float rounding differences between "
                "runtimes (one flipped code spreads through later low-bit layers; QAT-trained students are usually "
                "stable): docs/EXPORT.md, parity gate")
    return ("hint: only optimised kernels differ; a student trained with quant.quantize_bias = false gets its "
            "biases rounded by ONNX Runtime (retrain with the default), otherwise try the exact graph "
            "(--target onnxruntime-int8-exact) or exact_u8u8 = \"on\" in the profile (docs/EXPORT.md, parity gate)")
