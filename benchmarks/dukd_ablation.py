"""DUKD ablation at CPU scale: GT-only vs KD vs DUKD for W4A4 / W8A8 students, several seeds.

Stage 1 trains one FP student (recipes/cpu/fp.toml); stage 2 runs QAT from it for every
precision x method x seed with the same recipe, iterations and data. Results are appended to
``benchmarks/results/dukd_ablation.json`` as each run finishes (a rerun skips finished runs), so
the script can be stopped and restarted. Two processes can split the work (e.g. one per
precision, ``--precisions w4a4 --out a.json`` and ``--precisions w8a8 --out b.json``); they share
the FP stage through its checkpoint.

A method ``M+cache`` is method M with the teacher cache on (``teacher.cache = true``). Extra
recipe overrides go in ``--set`` (e.g. ``dukd.w_pix=5``); a ``--tag`` names a variant (its runs are
stored as ``precision/method+tag/seedN``).

Usage (from the project root, ../shared/data present):
    python benchmarks/dukd_ablation.py --seeds 0 1 2 --iters 1000 --threads 1
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from common import RESULTS, machine, peak_rss_mib, read_results, train_run
from qdukd.atomic import write_json
from qdukd.eval import main as eval_main

ROOT = Path(__file__).resolve().parents[1]
SETS = '["../shared/data/benchmarks/Set5", "../shared/data/benchmarks/Set14"]'


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
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="recipe overrides of a variant")
    ap.add_argument("--tag", default="", help="variant name appended to the method, e.g. +wpix5")
    args = ap.parse_args()
    out_file = args.out

    results = (read_results(out_file, {"runs": dict}, "an ablation results file", "give --out a new file")
               if out_file.exists() else {"runs": {}})
    results["machine"] = machine()
    runs_dir = Path(args.runs)
    fp = runs_dir / "fp"
    common = [f"eval.sets={SETS}", "train.log_every=100", f"train.threads={args.threads}"]
    if "fp" not in results["runs"]:
        if (fp / "last.pt").exists():  # trained by a sibling process (or by hand): just score it
            scores = fp / "scores.json"
            assert eval_main(["--weights", str(fp / "last.pt"), "--data", *json.loads(SETS),
                              "--threads", str(args.threads), "--json", str(scores)]) == 0
            results["runs"]["fp"] = {"checkpoint": str(fp / "last.pt"), **{
                s["name"].lower(): s["psnr_y"] for s in json.loads(scores.read_text())["sets"]}}
        else:
            results["runs"]["fp"] = train_run(ROOT / "recipes/cpu/fp.toml", fp,
                                              [f"train.iters={args.fp_iters}", *common])
        write_json(out_file, results)
    # Section 5 measured single-step DUKD: pinned, so later recipe defaults cannot change what this reproduces.
    init = [f"student.init=\"{fp / 'last.pt'}\"", f"train.iters={args.iters}", 'dukd.schedule="single"', *common]
    methods = [m + args.tag for m in args.methods]
    jobs = [(p, m, s) for s in args.seeds for p in args.precisions for m in methods]
    for precision, method, seed in jobs:
        key = f"{precision}/{method}/seed{seed}"
        if key in results["runs"]:
            continue
        recipe = "recipes/cpu/fp_distill.toml" if precision == "fp" else f"recipes/cpu/{precision}.toml"
        print(f"running {key}", flush=True)
        base = method.removesuffix(args.tag)
        mode = base.removesuffix("+cache")
        results["runs"][key] = train_run(ROOT / recipe, runs_dir / key.replace("/", "_"),
                                   [*init, f"dukd.mode=\"{mode}\"", f"train.seed={seed}",
                                    f"teacher.cache={str(base.endswith('+cache')).lower()}", *args.set])
        results["peak_rss_mib"] = peak_rss_mib()
        write_json(out_file, results)
        print(f"  {key}: {results['runs'][key]}", flush=True)

    groups: dict[str, list[dict]] = {}
    for key, row in results["runs"].items():
        if key != "fp":
            groups.setdefault(key.rsplit("/", 1)[0], []).append(row)
    summary = {}
    for group, rows in sorted(groups.items()):
        summary[group] = {s: {"mean": statistics.mean(r[s] for r in rows),
                              "std": statistics.stdev(r[s] for r in rows) if len(rows) > 1 else 0.0,
                              "n": len(rows)} for s in ("set5", "set14")}
        summary[group]["it_per_s"] = statistics.median(r["it_per_s"] for r in rows)
    results["summary"] = summary
    write_json(out_file, results)
    for k, v in summary.items():
        print(f"{k:<20} Set5 {v['set5']['mean']:.4f} ± {v['set5']['std']:.4f}   "
              f"Set14 {v['set14']['mean']:.4f} ± {v['set14']['std']:.4f}   (n={v['set5']['n']}, "
              f"{v['it_per_s']:.2f} it/s)")


if __name__ == "__main__":
    main()
