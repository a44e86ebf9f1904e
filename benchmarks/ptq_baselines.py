"""Post-training quantization baselines: real teachers calibrated on real training photos, no training.

For PAN x4 and IMDN x4: FP, then W8A8 / W4A8 / W4A4 after `qdukd.quant.calibrate` on LR patches
of ../shared/data/train (8 batches of 8 patches of 48x48), evaluated on Set5 and Set14 with
`python -m qdukd.eval --quant ... --calibrate ...`. This is what QAT has to beat.

Each evaluation's JSON is kept in benchmarks/results/ptq/; a rerun reuses the files that exist
(delete them, or pass --force, to redo them).

Usage:
    python benchmarks/ptq_baselines.py [--models pan imdn] [--specs w8a8 w4a8 w4a4] [--threads 2]
    python benchmarks/ptq_baselines.py --specs w8a8 w4a8 w4a4 w8a8,quantize_adds=true  # + INT8 adds
"""

from __future__ import annotations

import argparse
import json

from common import RESULTS, SHARED, machine
from qdukd.atomic import write_json
from qdukd.eval import main as eval_main


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["pan", "imdn"])
    ap.add_argument("--specs", nargs="+", default=["w8a8", "w4a8", "w4a4"])
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--force", action="store_true", help="re-run evaluations whose JSON already exists")
    args = ap.parse_args()
    out_dir = RESULTS / "ptq"
    calib = [str(SHARED / "train" / "BSD68"), str(SHARED / "train" / "SunHays80")]
    sets = [str(SHARED / "benchmarks" / "Set5"), str(SHARED / "benchmarks" / "Set14")]
    rows = []
    for model in args.models:
        base = ["--model", model, "--scale", "4", "--weights", str(SHARED / "teachers" / f"{model.upper()}_x4.pth"),
                "--data", *sets, "--threads", str(args.threads)]
        fp = None
        for spec in ["fp", *args.specs]:
            out = out_dir / f"{model}_x4_{spec.replace(',', '_').replace('=', '-')}.json"
            quant = [] if spec == "fp" else ["--quant", spec, "--calibrate", *calib]
            if args.force or not out.exists():
                assert eval_main([*base, *quant, "--json", str(out)]) == 0
            res = {s["name"]: s["psnr_y"] for s in json.loads(out.read_text())["sets"]}
            fp = fp or res
            rows.append({"model": model, "quant": spec, **res,
                         "drop_set5": fp["Set5"] - res["Set5"], "drop_set14": fp["Set14"] - res["Set14"]})
    write_json(out_dir / "summary.json", {"rows": rows, "machine": machine()})
    print("| model | quant | Set5 PSNR_Y | drop | Set14 PSNR_Y | drop |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['model']} x4 | {r['quant']} | {r['Set5']:.4f} | {r['drop_set5']:.3f} | {r['Set14']:.4f} | "
              f"{r['drop_set14']:.3f} |")


if __name__ == "__main__":
    main()
