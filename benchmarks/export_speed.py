"""ONNX Runtime CPU speed of exported graphs: INT8 (fused) vs FP32, side by side, plus sizes.

For each export folder (written by ``python -m qdukd.export``) the FP32 twin and the INT8 Q/DQ
graph run in one process on the same input, alternating run by run, and the median of
``--runs`` timings is kept. The optimised INT8 graph is saved and its fused ops counted
(QLinearConv & co.): a Q/DQ conv fuses only when a QuantizeLinear follows it.

Usage:
    python benchmarks/export_speed.py out/edsr_ort out/edsr_trt [--size 256] [--runs 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx

from common import RESULTS, machine
from qdukd.atomic import write_json
from qdukd.config import from_dict
from qdukd.export.profiles import OnnxRuntimeSection
from qdukd.export.runtime import ort_session, session_config

def op_counts(path: Path) -> dict[str, int]:
    """Op types of an optimised graph (QLinearConv & co. are the fused int8 kernels)."""
    return dict(Counter(n.op_type for n in onnx.load(path).graph.node).most_common())


def bench_folder(folder: Path, size: int, runs: int, threads: int) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    config = session_config(from_dict(OnnxRuntimeSection, manifest["profile"]["onnxruntime"]))
    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / "int8_optimized.onnx"
        int8 = ort_session(folder / "model.onnx", session_config=config, threads=threads,
                           optimized_path=optimized)
        fused = op_counts(optimized)
    fp32 = ort_session(folder / "model_fp32.onnx", threads=threads)
    x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
    sessions = {"fp32": fp32, "int8": int8}
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(3):  # warm-up: allocations, prepacked weights
        for s in sessions.values():
            s.run(None, {"lr": x})
    for _ in range(runs):  # alternate so both see the same thermal / cache state
        for name, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, {"lr": x})
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    sizes = {f: (folder / f).stat().st_size for f in ("model_fp32.onnx", "model.onnx", "model_int4.onnx")
             if (folder / f).is_file()}
    return {"folder": str(folder), "profile": manifest["profile"]["name"], "model": manifest["source"]["model"],
            "args": manifest["source"]["args"], "session_config": config,
            "median_seconds": med, "speedup_int8_vs_fp32": med["fp32"] / med["int8"],
            "optimized_int8_ops": fused, "bytes": sizes,
            "size_ratio_vs_fp32": {f: b / sizes["model_fp32.onnx"] for f, b in sizes.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", nargs="+", type=Path, help="export folders (model.onnx + model_fp32.onnx)")
    ap.add_argument("--size", type=int, default=256, help="LR input side")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--name", default="export_speed", help="results file stem")
    args = ap.parse_args()
    rows = [bench_folder(f, args.size, args.runs, args.threads) for f in args.folders]
    for r in rows:
        m = r["median_seconds"]
        print(f"{r['profile']:<20} fp32 {m['fp32']:.3f}s  int8 {m['int8']:.3f}s  "
              f"speed-up {r['speedup_int8_vs_fp32']:.2f}x  ops {r['optimized_int8_ops']}  "
              f"size {', '.join(f'{k} {v:.3f}' for k, v in r['size_ratio_vs_fp32'].items())}")
    write_json(RESULTS / f"{args.name}.json", {"input": [1, 3, args.size, args.size], "runs": args.runs,
                                               "threads": args.threads, "results": rows, "machine": machine()})


if __name__ == "__main__":
    main()
