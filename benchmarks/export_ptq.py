"""qdukd's export vs ONNX Runtime's own post-training quantizer, on the same FP student.

Both start from the same FP network and the same calibration images (LR patches of
../shared/data/train/BSD68):

- ``ort-ptq``: the FP32 ONNX through ``onnxruntime.quantization.quantize_static`` (QDQ,
  per-channel int8 weights, uint8 activations, MinMax calibration, every conv quantized);
- ``qdukd``: with ``--fp-checkpoint FP.pt --qat-checkpoint QAT.pt``, a student trained by
  ``python -m qdukd.train`` from that FP checkpoint (the real comparison: QAT vs ORT's PTQ);
  otherwise the released ``--model`` weights with ``prepare_qat`` + ``calibrate`` at W8A8, head
  and tail at 8 bits too (qdukd's PTQ). Exported with ``--target`` and its parity gate.

Reported: PSNR_Y on Set5 / Set14 (ONNX Runtime CPU, default optimisations) and the median of
``--runs`` timings on a 256x256 LR input with 2 threads, all three models side by side.

Usage:
    python benchmarks/export_ptq.py [--model pan] [--target onnxruntime-int8] [--runs 20]
    python benchmarks/export_ptq.py --fp-checkpoint runs/ablation/fp/last.pt \
        --qat-checkpoint runs/ablation/w8a8_dukd_seed0/last.pt --target onnxruntime-int8
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

from common import RESULTS, SHARED, machine
from export_students import calibration_batches, fp_student, make_student
from qdukd.atomic import write_json
from qdukd.checkpoint import load_checkpoint, student_from_checkpoint
from qdukd.export import export_checkpoint, load_profile
from qdukd.export.onnx_export import export_onnx
from qdukd.export.runtime import ort_session, session_config, session_function
from qdukd.export.verify import uint8_function
from qdukd.scoring import score_set

SETS = ("Set5", "Set14")


class _Patches(CalibrationDataReader):
    def __init__(self, scale: int) -> None:
        self.batches = iter([{"lr": b.numpy()} for b in calibration_batches(scale)])

    def get_next(self):  # type: ignore[no-untyped-def]
        return next(self.batches, None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="pan")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--target", default="onnxruntime-int8")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--fp-checkpoint", type=Path, help="an FP qdukd run's checkpoint (instead of --model)")
    ap.add_argument("--qat-checkpoint", type=Path, help="a quantized run trained from --fp-checkpoint")
    ap.add_argument("--name", help="results file stem (default export_ptq_MODEL_xSCALE)")
    args = ap.parse_args()
    if (args.fp_checkpoint is None) != (args.qat_checkpoint is None):
        ap.error("--fp-checkpoint and --qat-checkpoint go together")
    profile = load_profile(args.target)
    sets = [SHARED / "benchmarks" / s for s in SETS]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.fp_checkpoint:
            fp_ckpt = load_checkpoint(args.fp_checkpoint)
            args.model, args.scale = fp_ckpt["recipe"]["student"]["model"], fp_ckpt["recipe"]["data"]["scale"]
            fp_net = student_from_checkpoint(fp_ckpt)
        else:
            fp_net = fp_student(args.model, args.scale)
        export_onnx(fp_net, tmp / "fp32.onnx", profile.graph.opset)
        quantize_static(str(tmp / "fp32.onnx"), str(tmp / "ort_ptq.onnx"), _Patches(args.scale),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8)
        ckpt = args.qat_checkpoint or make_student(args.model, "w8a8,head_tail=int8", args.scale, tmp)
        gate = export_checkpoint(ckpt, tmp / "qdukd", profile, sets, log=lambda _: None, progress=False)
        models = {"fp32": tmp / "fp32.onnx", "ort-ptq": tmp / "ort_ptq.onnx", "qdukd": tmp / "qdukd" / "model.onnx"}
        sessions = {k: ort_session(p, session_config=session_config(profile.onnxruntime) if k == "qdukd" else None,
                                   threads=args.threads) for k, p in models.items()}
        psnr = {k: {s.name: s.psnr_y for s in (score_set(uint8_function(session_function(sess)), d, args.scale,
                                                         progress=False) for d in sets)}
                for k, sess in sessions.items()}
        x = np.random.default_rng(0).random((1, 3, args.size, args.size), dtype=np.float32)
        times: dict[str, list[float]] = {k: [] for k in sessions}
        for i in range(args.runs + 3):  # 3 warm-up rounds, then alternate the models run by run
            for k, sess in sessions.items():
                t0 = time.perf_counter()
                sess.run(None, {"lr": x})
                if i >= 3:
                    times[k].append(time.perf_counter() - t0)
        sizes = {k: p.stat().st_size for k, p in models.items()}
    med = {k: statistics.median(v) for k, v in times.items()}
    for k in models:
        print(f"{k:<8} " + "  ".join(f"{s} {v:.4f}" for s, v in psnr[k].items())
              + f"  {med[k]:.3f}s ({med['fp32'] / med[k]:.2f}x vs fp32)  {sizes[k] / sizes['fp32']:.3f}x size")
    print(f"qdukd parity gate ({profile.name}): {'passed' if gate.report.passed else 'FAILED'}")
    write_json(RESULTS / f"{args.name or f'export_ptq_{args.model}_x{args.scale}'}.json", {
        "model": args.model, "fp_checkpoint": str(args.fp_checkpoint or ""),
        "qat_checkpoint": str(args.qat_checkpoint or ""), "scale": args.scale, "target": profile.name,
        "clip": profile.graph.clip, "psnr_y": psnr,
        "median_seconds": med, "input": [1, 3, args.size, args.size], "runs": args.runs, "threads": args.threads,
        "bytes": sizes, "qdukd_gate": gate.report.to_dict(), "machine": machine()})


if __name__ == "__main__":
    main()
