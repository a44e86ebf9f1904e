"""The prepared GPU check (issue #11): training speed, a short DUKD-vs-KD run, export parity on CUDA.

On a CUDA machine (301 s on one H200, docs/RESULTS.md section 10) it records, into ``--out`` (JSON, written
after each part, so a cut run keeps what finished):

1. **speed**: it/s and peak CUDA memory of GT-only, KD and DUKD steps (``recipes/cpu/w4a4.toml``:
   W4A4 EDSR-baseline x4 student, 64 features x 16 blocks, PAN x4 teacher), batch 16 of 48x48 LR
   patches, medians over timed steps after warm-up (``torch.cuda.synchronize`` around each);
2. **dukd_vs_kd**: an FP student (KD, ``--fp-iters``), then W4A4 QAT from it with KD and with DUKD
   (``--qat-iters`` each, same seed), PSNR_Y on the validation split and Set5;
3. **parity**: the DUKD student exported with the ``onnxruntime-int8-exact`` profile, the gate run
   on ONNX Runtime CPU (reference and optimised) and its CUDA provider; a backend that cannot run
   here is recorded as ``skipped: <reason>``, never as a pass.

``--quick`` runs the same three parts on CPU in well under a minute (a 16x2 EDSR student, batch 2
of 16x16 patches, a few iterations, the bundled demo teacher and images; no ../shared needed):
the test suite runs it, so the script works before a GPU session spends time on it.

Usage:
    python benchmarks/gpu_check.py [--out benchmarks/results/gpu_check.json]   # CUDA machine
    python benchmarks/gpu_check.py --quick --out /tmp/gpu_check.json          # anywhere
    python benchmarks/gpu_check.py --profile --speed-only   # where the step time goes (GPU busy, launches)
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from common import machine, peak_rss_mib
from qdukd.atomic import write_json
from qdukd.export import export_checkpoint, load_profile
from qdukd.recipe import Recipe, load_recipe, resolve_path
from qdukd.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
VAL = "recipes/splits/photos_val.txt"
SET5 = "../shared/data/benchmarks/Set5"
# The full check: the EDSR baseline student of the issue on the shared photos, PAN x4 teacher.
FULL = ["student.args={num_feat=64, num_block=16}", "data.batch=16", "data.patch=48", 'student.init=""',
        f'data.holdout=["{VAL}"]', f'eval.sets=["{VAL}", "{SET5}"]']
# --quick: the bundled demo teacher and images, a tiny student; minutes become seconds.
QUICK = ['data.train=["demo:train"]', 'teacher.model="edsr"', 'teacher.weights="demo:teacher_edsr_x4.pth"',
         "teacher.args={num_feat=32, num_block=6}", "student.args={num_feat=16, num_block=2}", 'student.init=""',
         "data.batch=2", "data.patch=16", 'eval.sets=["demo:val"]', "train.calib_batches=1"]


def recipe(args: argparse.Namespace, name: str, *overrides: str) -> Recipe:
    """``recipes/cpu/<name>.toml`` at this check's size (full or quick) on this check's device."""
    device = "cpu" if args.quick else "cuda"
    return load_recipe(ROOT / "recipes" / "cpu" / f"{name}.toml", [
        *(QUICK if args.quick else FULL), f"train.device=\"{device}\"", f"train.threads={1 if args.quick else 0}",
        "train.log_every=50", *overrides])


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def speed(args: argparse.Namespace, tmp: Path) -> dict:
    """it/s and peak memory of one step of each method (same batch sequence for every method)."""
    out = {}
    for mode in ("gt", "kd", "dukd"):
        trainer = Trainer(recipe(args, "w4a4", f'dukd.mode="{mode}"'), tmp / f"speed_{mode}", progress=False)
        for step in range(args.warmup):
            trainer.train_step(step)
        sync()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        times = []
        for step in range(args.warmup, args.warmup + args.steps):
            t0 = time.perf_counter()
            trainer.train_step(step)
            sync()
            times.append(time.perf_counter() - t0)
        peak = (torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else peak_rss_mib())
        out[mode] = {"it_per_s": 1 / statistics.median(times), "median_step_ms": 1e3 * statistics.median(times),
                     "peak_memory_mib": peak, "memory_kind": "cuda_max_allocated" if torch.cuda.is_available()
                     else "process_peak_rss"}
        if args.profile:
            out[mode]["profile"] = profile_steps(trainer, args.warmup + args.steps, 5)
            busy = out[mode]["profile"]["gpu_kernel_ms_per_step"] / out[mode]["median_step_ms"]
            out[mode]["profile"]["gpu_busy_fraction"] = busy
        trainer.close()
        del trainer
    out["dukd_over_kd"] = out["dukd"]["median_step_ms"] / out["kd"]["median_step_ms"]
    return out


def profile_steps(trainer: Trainer, first: int, steps: int) -> dict:
    """Where a step's time goes: GPU kernel time and launches per step, the costliest ops on the CPU side.

    Profiled steps run slower than timed ones, so the GPU's busy fraction is taken against the
    un-profiled median step (in :func:`speed`).
    """
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        t0 = time.perf_counter()
        for step in range(first, first + steps):
            trainer.train_step(step)
        sync()
        wall = time.perf_counter() - t0
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    averages = prof.key_averages()
    top = sorted(averages, key=lambda e: e.self_cpu_time_total, reverse=True)[:10]
    return {"steps": steps, "profiled_step_ms": 1e3 * wall / steps,
            # CPU time inside torch ops; the rest of a profiled step is Python and data loading.
            "torch_ops_cpu_ms_per_step": sum(e.self_cpu_time_total for e in averages) / 1e3 / steps,
            "gpu_kernels_per_step": len(kernels) / steps,
            "gpu_kernel_ms_per_step": sum(e.time_range.elapsed_us() for e in kernels) / 1e3 / steps,
            "top_self_cpu_ops": [{"op": e.key, "calls_per_step": e.count / steps,
                                  "self_cpu_ms_per_step": e.self_cpu_time_total / 1e3 / steps} for e in top]}


def dukd_vs_kd(args: argparse.Namespace, tmp: Path) -> tuple[dict, Path]:
    """FP (KD) student, then W4A4 QAT with KD and with DUKD from it; returns scores and DUKD's checkpoint."""
    fp = tmp / "fp"
    Trainer(recipe(args, "fp", 'dukd.mode="kd"', f"train.iters={args.fp_iters}"), fp,
            progress=False).fit()
    out = {}
    for mode in ("kd", "dukd"):
        t0 = time.perf_counter()
        scores = Trainer(recipe(args, "w4a4", f'dukd.mode="{mode}"', f'student.init="{fp / "last.pt"}"',
                                f"train.iters={args.qat_iters}"), tmp / mode, progress=False).fit()
        out[mode] = {"seconds": time.perf_counter() - t0, **{s.name: s.psnr_y for s in scores}}
    out["dukd_minus_kd"] = {k: out["dukd"][k] - out["kd"][k] for k in out["kd"] if k != "seconds"}
    return out, tmp / "dukd" / "last.pt"


def parity(args: argparse.Namespace, checkpoint: Path, tmp: Path) -> dict:
    sets = [resolve_path("demo:val")] if args.quick else [resolve_path(SET5)]
    # A --quick student has had 4 iterations: it cannot beat bicubic, so its quality floor is off.
    result = export_checkpoint(checkpoint, tmp / "export", load_profile("onnxruntime-int8-exact"), sets,
                               log=lambda _: None, progress=False,
                               min_gain_db=float("-inf") if args.quick else 0.0)
    return json.loads((tmp / "export" / "report.json").read_text()) | {"engine": result.engine_status}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a tiny CPU run of every part (seconds)")
    ap.add_argument("--out", type=Path, help="default: benchmarks/results/gpu_check.json (--speed-only: "
                    "gpu_profile.json, so a profile never replaces a recorded check)")
    ap.add_argument("--profile", action="store_true",
                    help="also profile 5 steps of each method (GPU busy fraction, kernel launches, top CPU ops)")
    ap.add_argument("--speed-only", action="store_true", help="stop after the speed part")
    ap.add_argument("--steps", type=int, default=None, help="timed steps per method (default 50; quick 3)")
    ap.add_argument("--fp-iters", type=int, default=None, help="FP stage (default 1000; quick 4)")
    ap.add_argument("--qat-iters", type=int, default=None, help="each QAT run (default 600; quick 4)")
    args = ap.parse_args()
    results = ROOT / "benchmarks" / "results"
    args.out = args.out or results / ("gpu_profile.json" if args.speed_only else "gpu_check.json")
    args.warmup = 2 if args.quick else 10
    args.steps = args.steps or (3 if args.quick else 50)
    args.fp_iters = args.fp_iters or (4 if args.quick else 1000)
    args.qat_iters = args.qat_iters or (4 if args.quick else 600)
    if not args.quick and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA device: run this on a GPU machine, or add --quick for the CPU check")
    result: dict = {"quick": args.quick, "steps": args.steps, "fp_iters": args.fp_iters, "qat_iters": args.qat_iters,
                    "machine": machine(),
                    "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result["speed"] = speed(args, Path(tmp))
        write_json(args.out, result)
        if args.speed_only:
            print(json.dumps(result["speed"], indent=1))
            return
        result["dukd_vs_kd"], ckpt = dukd_vs_kd(args, Path(tmp))
        write_json(args.out, result)
        result["parity"] = parity(args, ckpt, Path(tmp))
    result["seconds"] = time.perf_counter() - t0
    write_json(args.out, result)
    s, d = result["speed"], result["dukd_vs_kd"]["dukd_minus_kd"]
    print("speed: " + ", ".join(f"{m} {s[m]['it_per_s']:.2f} it/s ({s[m]['peak_memory_mib']:.0f} MiB)"
                                for m in ("gt", "kd", "dukd")))
    print("DUKD - KD: " + ", ".join(f"{k} {v:+.4f} dB" for k, v in d.items()))
    print("parity: " + ", ".join(f"{b['name']} " + (f"{b['delta_psnr_y']:+.4f} dB" if b["ran"] else
                                                   f"skipped: {b['skipped_reason']}")
                                 for b in result["parity"]["backends"])
          + f"; passed {result['parity']['passed']}; {result['seconds']:.0f} s; written {args.out}")


if __name__ == "__main__":
    main()
