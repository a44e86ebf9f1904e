"""Distil the bundled demo teacher into your own network with DUKD at W8A8, export it, gate it.

Run from this folder (so ``tinysr`` is importable), on the bundled demo images, no ``../shared``:

    python distill.py [--out runs/tinysr] [--iters 300]

The same run from the command line: ``python -m qdukd.train tinysr_w8a8.toml --out runs/tinysr
--trust-model-code`` with ``student.model = "tinysr:TinySR"`` in the recipe (docs/CUSTOM_MODELS.md).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from qdukd.export import export_checkpoint, load_profile
from qdukd.models import build_model, load_weights
from qdukd.recipe import DEMO_DATA, Recipe
from qdukd.trainer import Trainer

from tinysr import TinySR


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/tinysr", help="run folder (the export goes to OUT/export)")
    p.add_argument("--iters", type=int, default=300, help="training iterations")
    args = p.parse_args()

    # The teacher: any zoo network with its weights (here the bundled EDSR 32x6 x4).
    teacher = load_weights(build_model("edsr", 4, num_feat=32, num_block=6), DEMO_DATA / "teacher_edsr_x4.pth")
    student = TinySR(scale=4, num_feat=16, num_block=2)
    recipe = Recipe.from_dict({
        "data": {"train": ["demo:train"], "scale": 4, "patch": 32, "batch": 8},
        "quant": {"w_bits": 8, "a_bits": 8, "quantize_adds": True},
        "dukd": {"mode": "dukd"},
        "train": {"iters": args.iters, "lr": 2e-3, "scheduler": "cosine", "log_every": 50},
        "eval": {"sets": ["demo:val"]},
    })
    trainer = Trainer(recipe, args.out, student=student, teacher=teacher, resume=True)
    trainer.fit()

    # The checkpoint names tinysr:TinySR by import path: rebuilding it runs this folder's code,
    # which we trust (we wrote it).
    result = export_checkpoint(Path(args.out) / "last.pt", Path(args.out) / "export", load_profile("onnxruntime-int8"),
                               [DEMO_DATA / "val"], trust_code=True)
    print(f"parity gate: {'PASSED' if result.report.passed else 'FAILED'}; "
          f"gain over bicubic {min(result.report.quality.gain_db.values()):+.3f} dB")
    return 0 if result.report.passed else 1


if __name__ == "__main__":
    sys.exit(main())
