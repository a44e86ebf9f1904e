"""Parity of exported students: ONNX Runtime (unfused reference and fused) vs PyTorch, per set.

Runs the export job (``qdukd.export.export_checkpoint``, the same code as the CLI) for each
checkpoint and target on Set5 and Set14, and also measures the student's own numerical
sensitivity: PyTorch with a 1e-6 relative perturbation at every quantizer input. A student
whose perturbed PSNR_Y moves by more than the gate's tolerance cannot meet it on any backend.

Usage:
    python benchmarks/export_parity.py runs/export_students/*.pt [--targets onnxruntime-int8-exact onnxruntime-int8]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from common import RESULTS, SHARED, machine
from qdukd.atomic import write_json
from qdukd.checkpoint import load_checkpoint, student_from_checkpoint
from qdukd.export import export_checkpoint, load_profile
from qdukd.quant import FakeQuantizer, freeze
from qdukd.scoring import score_set, torch_sr_function

SETS = ("Set5", "Set14")


def perturbed_delta(ckpt: Path, sets: list[Path], reference: dict[str, float], rel: float = 1e-6) -> dict[str, float]:
    """PSNR_Y change of PyTorch itself under a ``rel`` relative perturbation of quantizer inputs."""
    model = freeze(student_from_checkpoint(load_checkpoint(ckpt)))
    gen = torch.Generator().manual_seed(0)

    def jitter(module, args):  # type: ignore[no-untyped-def]
        return (args[0] * (1 + rel * torch.randn(args[0].shape, generator=gen)),)

    for m in model.modules():
        if isinstance(m, FakeQuantizer) and m.axis is None:  # inputs, not weights
            m.register_forward_pre_hook(jitter)
    scale = load_checkpoint(ckpt)["recipe"]["data"]["scale"]
    scores = [score_set(torch_sr_function(model), s, scale, progress=False) for s in sets]
    return {s.name: s.psnr_y - reference[s.name] for s in scores}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", type=Path)
    ap.add_argument("--targets", nargs="+", default=["onnxruntime-int8"], help="profile names or .toml paths")
    ap.add_argument("--name", default="export_parity", help="results file stem")
    args = ap.parse_args()
    torch.set_num_threads(2)
    sets = [SHARED / "benchmarks" / s for s in SETS]
    rows = []
    for ckpt in args.checkpoints:
        for target in args.targets:
            profile = load_profile(target)
            with tempfile.TemporaryDirectory() as tmp:
                result = export_checkpoint(ckpt, Path(tmp) / "out", profile, sets, log=lambda _: None,
                                           progress=False)
            report = result.report.to_dict()
            row = {"checkpoint": str(ckpt), "target": profile.name, "clip": profile.graph.clip,
                   "passed": report["passed"], "reference": report["reference"],
                   "backends": [b for b in report["backends"] if b["ran"]]}
            row["pytorch_perturbed_delta"] = perturbed_delta(ckpt, sets, report["reference"]["sets"])
            rows.append(row)
            for b in row["backends"]:
                deltas = ", ".join(f"{k} {v['delta_psnr_y']:+.4f}" for k, v in b["sets"].items())
                print(f"{str(ckpt):<40} {profile.name:<18} {b['name']:<26} dPSNR_Y {deltas}  "
                      f"max {b['max_abs_diff_levels']} levels")
            noise = ", ".join(f"{k} {v:+.4f}" for k, v in row["pytorch_perturbed_delta"].items())
            print(f"{str(ckpt):<40} {profile.name:<18} {'pytorch 1e-6 perturbed':<26} dPSNR_Y {noise}")
    write_json(RESULTS / f"{args.name}.json", {"sets": list(SETS), "results": rows, "machine": machine()})


if __name__ == "__main__":
    main()
