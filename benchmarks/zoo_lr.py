"""Learning rate of the deployable-zoo FP recipes, chosen on the validation split (issue #10/#11).

The shared FP budget of recipes/deploy/base.toml (600 iterations, cosine, KD from PAN x4, 32-px
patches) at several rates, with ``recipes/splits/photos_val.txt`` held out of training and scored
(Set5/Set14 are scored too, for the record, not for the choice). Resumable: finished runs are kept in
``benchmarks/results/zoo_lr.json``.

Usage (from the project root, ../shared/data present):
    python benchmarks/zoo_lr.py [--nets quicksrnet_s espcn xlsr] [--lrs 3e-4 1e-3 3e-3]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import RESULTS, machine, read_results, train_run
from qdukd.atomic import write_json

ROOT = Path(__file__).resolve().parents[1]
VAL = "recipes/splits/photos_val.txt"
SETS = [VAL, "../shared/data/benchmarks/Set5", "../shared/data/benchmarks/Set14"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", nargs="+", default=["quicksrnet_s", "espcn", "xlsr"])
    ap.add_argument("--lrs", nargs="+", default=["3e-4", "1e-3", "3e-3"])
    ap.add_argument("--iters", type=int, default=600)
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "zoo_lr")
    ap.add_argument("--out", type=Path, default=RESULTS / "zoo_lr.json")
    args = ap.parse_args()
    results = (read_results(args.out, {"runs": dict}, "a rate-sweep results file", "give --out a new file")
               if args.out.exists() else {"runs": {}})
    results["machine"] = machine()
    for net in args.nets:
        for lr in args.lrs:
            key = f"{net}/lr{lr}"
            if key in results["runs"]:
                continue
            print(f"running {key}", flush=True)
            results["runs"][key] = train_run(
                ROOT / "recipes" / "deploy" / f"{net}_x4_fp.toml", args.runs / key.replace("/", "_"),
                [f"train.lr={lr}", f"train.iters={args.iters}", "train.threads=1",
                 f"data.holdout=[\"{VAL}\"]", f"eval.sets={json.dumps(SETS)}"])
            write_json(args.out, results)
            print(f"  {key}: {results['runs'][key]}", flush=True)
    for net in args.nets:
        rows = {k.split("/")[1]: v for k, v in results["runs"].items() if k.startswith(net + "/")}
        best = max(rows, key=lambda k: rows[k]["photos_val"])
        print(f"{net}: " + ", ".join(f"{k} val {v['photos_val']:.3f} (Set5 {v['set5']:.3f})" for k, v in rows.items())
              + f"  -> {best}")


if __name__ == "__main__":
    main()
