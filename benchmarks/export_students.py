"""Quantized students for the export benchmarks, as qdukd checkpoints (until trained ones exist).

A student here is a released FP network (default PAN x4, the authors' weights) prepared with
``prepare_qat`` and calibrated on LR patches of ../shared/data/train images: post-training
quantization with realistic activations, no QAT training. Trained checkpoints from
``python -m qdukd.train`` can replace them in every export benchmark (``--checkpoint``).

Usage:
    python benchmarks/export_students.py pan:w8a8 pan:w4a8 pan:w4a4 [--out runs/export_students]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from common import SHARED
from qdukd.checkpoint import save_checkpoint
from qdukd.data import TrainPatches
from qdukd.models import build_model, load_weights
from qdukd.quant import QuantConfig, calibrate, freeze, prepare_qat, quant_state
from qdukd.recipe import DataSection, Recipe, StudentSection

CALIB_SETS = ("train/BSD68",)


def calibration_batches(scale: int, batches: int = 4, batch: int = 16, patch: int = 64) -> list[torch.Tensor]:
    """LR patches of the training images (stream 1: independent of any training stream)."""
    data = TrainPatches([SHARED / s for s in CALIB_SETS], scale, patch, seed=0, augment=False, progress=False)
    return [torch.stack([data.sample(b * batch + i, stream=1)["lr"] for i in range(batch)]).float()
            for b in range(batches)]


def fp_student(model: str, scale: int) -> torch.nn.Module:
    """The released FP weights of ``model`` from ../shared/data/teachers."""
    net = build_model(model, scale)
    return load_weights(net, SHARED / "teachers" / f"{model.upper()}_x{scale}.pth").eval()


def make_student(model: str, spec: str, scale: int, out: Path) -> Path:
    """Write a calibrated ``spec`` (e.g. ``"w4a8"``) student of ``model`` as a checkpoint; return its path."""
    net = fp_student(model, scale)
    cfg = QuantConfig.from_string(spec)
    prepare_qat(net, cfg)
    calibrate(net, calibration_batches(scale))
    freeze(net)
    recipe = Recipe(data=DataSection(train=tuple(str(SHARED / s) for s in CALIB_SETS), scale=scale),
                    student=StudentSection(model=model), quant=cfg)
    path = out / f"{model}_x{scale}_{spec.replace(',', '_').replace('=', '-')}.pt"
    save_checkpoint(path, {"recipe": recipe.to_dict(), "student": net.state_dict(), "quant": quant_state(net),
                           "ema": None, "step": 0})
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("students", nargs="+", metavar="MODEL:SPEC", help="e.g. pan:w8a8 pan:w4a4,head_tail=int8")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--out", type=Path, default=Path("runs/export_students"))
    args = ap.parse_args()
    for item in args.students:
        model, _, spec = item.partition(":")
        print(make_student(model, spec, args.scale, args.out))


if __name__ == "__main__":
    main()
