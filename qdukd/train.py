"""``python -m qdukd.train RECIPE --out DIR [--resume] [key=value ...]``: distil a student.

Exit codes: 0 trained; 2 bad input (recipe, data, a folder holding another run or in use, a run
that diverges); 128 + N stopped by signal N (SIGINT 130, SIGTERM 143) after saving a checkpoint;
3 a crash (traceback).

Under ``torchrun --nproc_per_node N`` the same command trains with DistributedDataParallel
(gloo on CPU, NCCL on GPU); the global batch stays ``data.batch``.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
from pathlib import Path

import torch.distributed as dist

from .cli import EXIT_OK, Parser, run
from .errors import QdukdError
from .recipe import load_recipe
from .models import build_model
from .models.custom import TRUST_FLAG
from .report.training_page import write_training_report
from .scoring import SetScore
from .trainer import Trainer


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m qdukd.train", description=__doc__.splitlines()[0])
    p.add_argument("recipe", help="a recipe file, or a shipped recipe's name (demo, cpu/w4a4, ...); an existing "
                                  "file wins")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="recipe overrides, e.g. train.iters=1000")
    p.add_argument("--out", required=True, help="run folder: checkpoints DIR/step_*.pt and DIR/last.pt, log.csv, "
                                                "val.csv, and the curves in DIR/report.html")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out (same recipe; iterations, logging and validation may change); "
                        "with no checkpoint there, start a new run")
    p.add_argument(TRUST_FLAG, action="store_true",
                   help="allow student/teacher models named by import path or plugin (code outside qdukd); this "
                        "imports and runs that code: use only for recipes and code you trust")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (for logs)")
    return p


def _print_summary(trainer: Trainer, scores: list[SetScore]) -> None:
    """The student's validation PSNR beside its teacher's and bicubic's, on the same sets."""
    r = trainer.recipe
    if not scores:
        print(f"stopped at step {trainer.step}; resume with --resume")
    else:
        rows = {"student": scores, "bicubic": trainer.score(build_model("bicubic", r.data.scale))}
        if trainer.teacher is not None:
            rows["teacher"] = trainer.score(trainer.teacher.net)
        print(f"step {trainer.step}/{r.train.iters}, PSNR_Y ({r.eval.convention} Y convention):")
        names = [s.name for s in scores]
        print(f"{'model':<10}" + "".join(f"{n:>12}" for n in names))
        for label, sets in rows.items():
            print(f"{label:<10}" + "".join(f"{s.psnr_y:>12.4f}" for s in sets))
    # ru_maxrss is KiB on Linux (bytes on macOS, where this reads 1024x high).
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"checkpoint: {trainer.out / 'last.pt'} (peak memory {peak:.0f} MiB)")


def _write_report(out: Path) -> None:
    """The run's curves as ``DIR/report.html`` (as ``python -m qdukd.report DIR`` writes it). The
    checkpoint is already saved: a log the report cannot read is a warning, not a failed run."""
    if not (out / "log.csv").is_file():  # stopped before its first logged step
        return
    try:
        print(f"report: {write_training_report([out], out / 'report.html')} (open it in a browser)")
    except QdukdError as e:
        print(f"warning: no training report: {e}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)

    def body() -> int:
        recipe = load_recipe(args.recipe, args.overrides)
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if recipe.train.device.startswith("cuda") else "gloo")
        try:
            trainer = Trainer(recipe, args.out, resume=args.resume, progress=not args.no_progress,
                              trust_code=args.trust_model_code)
            if args.resume and trainer.resumed_from is None and trainer.dist.main:
                print(f"no checkpoint in {args.out}: starting a new run", file=sys.stderr)
            scores = trainer.fit()
            if trainer.dist.main:
                _print_summary(trainer, scores)
                _write_report(trainer.out)
            # Stopped by a signal: the checkpoint is saved, but the run is not finished.
            return EXIT_OK if trainer.stop_signal is None else 128 + trainer.stop_signal
        finally:
            if dist.is_initialized():
                dist.destroy_process_group()

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
