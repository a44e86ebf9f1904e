"""Cost of a DUKD iteration: DUKD / KD / GT-only step times on the same batch, and the teacher's share.

CPU-scale setting (recipes/cpu/w4a4.toml): PAN x4 teacher, W4A4 EDSR 32x4 student, batch 8 of
32x32 LR patches. Six trainers run interleaved, one step each in turn, so the machine's load
affects them alike; medians over ``--steps`` rounds after warm-up: GT-only, KD and DUKD with
on-the-fly teacher targets, KD and DUKD with the teacher cache (``teacher.cache = true``: the
``kd`` targets cropped from the teacher's whole-image outputs, computed once before training),
and DUKD with the zoom-in cache too (``teacher.cache_zoom_in = true``: zoom-in targets cut from
the teacher's output of the whole HR image). Cached outputs are kept in ``--cache-dir`` and
reused from there; the one-off pass that fills it is slow (docs/RESULTS.md, section 5).

Usage:
    python benchmarks/dukd_cost.py [--steps 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from common import RESULTS, machine, peak_rss_mib
from qdukd.atomic import write_json
from qdukd.recipe import load_recipe
from qdukd.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]


class TimedTeacher(torch.nn.Module):
    """The trainer's teacher with a stopwatch around every call."""

    def __init__(self, teacher: torch.nn.Module) -> None:
        super().__init__()
        self.teacher, self.seconds = teacher, 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t0 = time.perf_counter()
        y = self.teacher(x)
        self.seconds += time.perf_counter() - t0
        return y


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runs", default=str(ROOT / "runs" / "cost"))
    ap.add_argument("--cache-dir", default=str(ROOT / "runs" / "teacher_cache"), help="teacher-target cache folder")
    args = ap.parse_args()

    setup: dict[str, float] = {}
    trainers = {}
    for mode in ("gt", "kd", "dukd", "kd+cache", "dukd+cache", "dukd+zoomcache"):
        method, cached, zoom = mode.split("+")[0], "+" in mode, mode.endswith("zoomcache")
        recipe = load_recipe(ROOT / "recipes" / "cpu" / "w4a4.toml",
                             [f"dukd.mode=\"{method}\"", f"teacher.cache={str(cached).lower()}",
                              f"teacher.cache_zoom_in={str(zoom).lower()}", f"teacher.cache_dir=\"{args.cache_dir}\"",
                              "student.init=\"\"", f"train.threads={args.threads}"])
        t0 = time.perf_counter()
        trainers[mode] = Trainer(recipe, Path(args.runs) / mode, progress=False)
        if cached:
            setup[mode] = time.perf_counter() - t0  # the one-off teacher pass, or reading its files
        if trainers[mode].teacher is not None:
            trainers[mode].teacher = TimedTeacher(trainers[mode].teacher)
    times: dict[str, list[float]] = {m: [] for m in trainers}
    teacher_share: dict[str, list[float]] = {"dukd": [], "dukd+cache": [], "dukd+zoomcache": []}
    for step in range(args.steps + 3):
        for mode, trainer in trainers.items():
            if mode != "gt":
                trainer.teacher.seconds = 0.0
            t0 = time.perf_counter()
            trainer.train_step(0)  # same batch every time
            dt = time.perf_counter() - t0
            if step >= 3:
                times[mode].append(dt)
                if mode in teacher_share:
                    teacher_share[mode].append(trainer.teacher.seconds / dt)
    med = {m: statistics.median(t) for m, t in times.items()}
    result = {
        "setting": "PAN x4 teacher, W4A4 EDSR 32x4 student, batch 8 of 32x32 LR, single-step schedule",
        "median_step_seconds": med, "steps": args.steps, "threads": args.threads,
        "dukd_over_kd": med["dukd"] / med["kd"], "dukd_over_gt": med["dukd"] / med["gt"],
        "kd_over_gt": med["kd"] / med["gt"],
        "dukd_cache_over_gt": med["dukd+cache"] / med["gt"], "dukd_cache_over_dukd": med["dukd+cache"] / med["dukd"],
        "dukd_zoomcache_over_gt": med["dukd+zoomcache"] / med["gt"],
        "teacher_share": {m: statistics.median(v) for m, v in teacher_share.items()},
        "cache_setup_seconds": setup,
        "peak_rss_mib": peak_rss_mib(), "machine": machine(),
    }
    write_json(RESULTS / "dukd_cost.json", result)
    print("median step: " + ", ".join(f"{m} {t * 1e3:.1f} ms" for m, t in med.items()))
    print(f"DUKD/KD {result['dukd_over_kd']:.2f}x, DUKD/GT {result['dukd_over_gt']:.2f}x, "
          f"DUKD+cache/GT {result['dukd_cache_over_gt']:.2f}x, "
          f"DUKD+zoomcache/GT {result['dukd_zoomcache_over_gt']:.2f}x; "
          "teacher share: " + ", ".join(f"{m} {v:.0%}" for m, v in result["teacher_share"].items()))


if __name__ == "__main__":
    main()
