"""DUKD ablation at CPU scale: GT-only vs KD vs DUKD for W4A4 / W8A8 students, several seeds.

Stage 1 trains one FP student (recipes/cpu/fp.toml); stage 2 runs QAT from it for every
precision x method x seed with the same recipe, iterations and data. Results are appended to
``benchmarks/results/dukd_ablation.json`` as each run finishes (a rerun skips finished runs), so
the script can be stopped and restarted. Two processes can split the work (e.g. one per
precision, ``--precisions w4a4 --out a.json`` and ``--precisions w8a8 --out b.json``); they share
the FP stage through its checkpoint.

Usage (from the project root, ../shared/data present):
    python benchmarks/dukd_ablation.py --seeds 0 1 2 --iters 1000 --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from common import RESULTS, machine, peak_rss_mib
from qdukd.atomic import write_json
from qdukd.recipe import load_recipe
from qdukd.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
SETS = '["../shared/data/benchmarks/Set5", "../shared/data/benchmarks/Set14"]'


def run(recipe_file: str, out: Path, overrides: list[str]) -> dict:
    recipe = load_recipe(ROOT / recipe_file, overrides)
    trainer = Trainer(recipe, out, progress=False)
    t0 = time.perf_counter()
    scores = trainer.fit()
    seconds = time.perf_counter() - t0
    if trainer.step < recipe.train.iters:  # stopped by a signal: record nothing
        raise SystemExit(f"stopped at step {trainer.step} of {out}; rerun to redo this run")
    return {"recipe": recipe_file, "overrides": overrides, "seconds": seconds,
            "it_per_s": recipe.train.iters / seconds, **{s.name.lower(): s.psnr_y for s in scores}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--iters", type=int, default=1500, help="QAT iterations per run")
    ap.add_argument("--fp-iters", type=int, default=2000)
    ap.add_argument("--precisions", nargs="+", default=["w4a4", "w8a8"])
    ap.add_argument("--methods", nargs="+", default=["gt", "kd", "dukd"])
    ap.add_argument("--runs", default=str(ROOT / "runs" / "ablation"))
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--out", type=Path, default=RESULTS / "dukd_ablation.json")
    args = ap.parse_args()
    out_file = args.out

    results = json.loads(out_file.read_text()) if out_file.exists() else {"runs": {}}
    results["machine"] = machine()
    runs_dir = Path(args.runs)
    fp = runs_dir / "fp"
    common = [f"eval.sets={SETS}", "train.log_every=100", f"train.threads={args.threads}"]
    if "fp" not in results["runs"]:
        if (fp / "last.pt").exists():  # trained by a sibling process: just score it
            results["runs"]["fp"] = {"checkpoint": str(fp / "last.pt")}
        else:
            results["runs"]["fp"] = run("recipes/cpu/fp.toml", fp, [f"train.iters={args.fp_iters}", *common])
        write_json(out_file, results)
    init = [f"student.init=\"{fp / 'last.pt'}\"", f"train.iters={args.iters}", *common]
    jobs = [(p, m, s) for s in args.seeds for p in args.precisions for m in args.methods]
    for precision, method, seed in jobs:
        key = f"{precision}/{method}/seed{seed}"
        if key in results["runs"]:
            continue
        recipe = "recipes/cpu/fp_distill.toml" if precision == "fp" else f"recipes/cpu/{precision}.toml"
        print(f"running {key}", flush=True)
        results["runs"][key] = run(recipe, runs_dir / key.replace("/", "_"),
                                   [*init, f"dukd.mode=\"{method}\"", f"train.seed={seed}"])
        results["peak_rss_mib"] = peak_rss_mib()
        write_json(out_file, results)
        print(f"  {key}: {results['runs'][key]}", flush=True)

    summary = {}
    for precision in args.precisions:
        for method in args.methods:
            rows = [v for k, v in results["runs"].items() if k.startswith(f"{precision}/{method}/")]
            if rows:
                summary[f"{precision}/{method}"] = {
                    s: {"mean": statistics.mean(r[s] for r in rows),
                        "std": statistics.stdev(r[s] for r in rows) if len(rows) > 1 else 0.0,
                        "n": len(rows)} for s in ("set5", "set14")}
                summary[f"{precision}/{method}"]["it_per_s"] = statistics.median(r["it_per_s"] for r in rows)
    results["summary"] = summary
    write_json(out_file, results)
    for k, v in summary.items():
        print(f"{k:<12} Set5 {v['set5']['mean']:.4f} ± {v['set5']['std']:.4f}   "
              f"Set14 {v['set14']['mean']:.4f} ± {v['set14']['std']:.4f}   (n={v['set5']['n']}, "
              f"{v['it_per_s']:.2f} it/s)")


if __name__ == "__main__":
    main()
