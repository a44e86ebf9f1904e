"""Where a low-bit QAT run starts: PSNR_Y of a calibrated student with one quantizer on at a time.

A QAT run begins from its FP student with every range calibrated; this scores that start on the
validation split (``recipes/splits/photos_val.txt``, held out of the calibration batches) with
all quantizers off (the FP student), all on (QAT's step 0), and each one alone on
(:func:`qdukd.quant.sensitivity.quantizer_sensitivity`). It runs in the DUKD study's setting:
48-px patches for the calibration batches, seed 0, one thread; ``--set`` changes the rest
(bits, the FP checkpoint). Each case is appended to ``--out`` under ``--name`` (a rerun
replaces it).

Usage (from the project root, ../shared/data present):
    python benchmarks/quant_sensitivity.py recipes/deploy/quicksrnet_s_x2_w8a8.toml --name x2-fp4000it-w4a4 \
        --set quant.w_bits=4 quant.a_bits=4 \
        'student.init="runs/study/quicksrnet_s_x2/x2-4000it_fp_kd_seed0/last.pt"'
    python benchmarks/quant_sensitivity.py --table
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from common import RESULTS, machine, read_results

from qdukd.atomic import write_json
from qdukd.errors import QdukdError
from qdukd.quant.sensitivity import quantizer_sensitivity
from qdukd.recipe import load_recipe
from qdukd.trainer import Trainer

VAL = "recipes/splits/photos_val.txt"
STUDY = ["data.patch=48", f"data.holdout=[\"{VAL}\"]", f"eval.sets=[\"{VAL}\"]", 'dukd.mode="gt"',
         "train.seed=0", "train.threads=1"]


def sensitivity(recipe_file: Path, overrides: list[str]) -> dict[str, float]:
    """PSNR_Y on the validation split per quantizer switch (see the module docstring)."""
    recipe = load_recipe(recipe_file, [*STUDY, *overrides])
    if recipe.quant is None:
        raise QdukdError(f"{recipe_file} has no [quant] section: give a QAT recipe")
    with tempfile.TemporaryDirectory() as out:  # the trainer calibrates; nothing is trained or kept
        trainer = Trainer(recipe, out, progress=False)
        try:
            return quantizer_sensitivity(trainer.student, lambda m: trainer.score(m)[0].psnr_y)
        finally:
            trainer.close()


def table(results: dict) -> None:
    for name, case in results["cases"].items():
        scores = case["psnr_y"]
        print(f"\n{name}: FP {scores['none']:.3f} dB, all quantizers on {scores['all']:.3f} dB")
        print("| quantizer alone on | val PSNR_Y | - FP |\n|---|---|---|")
        for q, s in scores.items():
            if q not in ("none", "all"):
                print(f"| `{q}` | {s:.3f} | {s - scores['none']:+.3f} |")


def load(out: Path) -> dict:
    """The cases recorded in ``out`` (none yet if it does not exist)."""
    if not out.exists():
        return {"cases": {}}
    return read_results(out, {"cases": dict}, "a quant_sensitivity results file", "give another --out")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe", type=Path, nargs="?", help="a QAT recipe (its [quant] section)")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="recipe overrides, in order")
    ap.add_argument("--name", help="the case's name in --out")
    ap.add_argument("--out", type=Path, default=RESULTS / "quant_sensitivity.json")
    ap.add_argument("--table", action="store_true", help="print the cases in --out and exit")
    args = ap.parse_args()
    results = load(args.out)
    if args.table:
        table(results)
        return
    if args.recipe is None or not args.name:
        ap.error("give a recipe and --name (or --table)")
    try:
        scores = sensitivity(args.recipe, args.set)
    except QdukdError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    results["cases"][args.name] = {"recipe": str(args.recipe), "overrides": [*STUDY, *args.set],
                                   "psnr_y": scores, "machine": machine()}
    write_json(args.out, results)
    table({"cases": {args.name: results["cases"][args.name]}})


if __name__ == "__main__":
    main()
