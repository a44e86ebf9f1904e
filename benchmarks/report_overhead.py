"""What writing ``report.html`` adds to the demo export's wall time (issue #12: at most 10%).

The demo export (``python -m qdukd.export runs/demo/last.pt --out runs/demo/export``: the default
target, the bundled demo val images) is run in this process ``--runs`` times with the report and
``--runs`` times with the report replaced by a no-op, alternating, and each run with the report
also times :func:`qdukd.report.export_page.write_export_report` inside it; wall and CPU time of
each export are recorded (on a machine shared with other jobs the wall time of one export varies
far more than the page costs, CPU time less). In-process timing leaves out the ~2-3 s of Python
imports the command line adds, so the percentages are upper bounds for the command. The training
report (written once at the end of ``qdukd.train``) is timed on the run folder as well.

Usage:
    python -m qdukd.train recipes/demo.toml --out runs/demo      # once, if runs/demo/last.pt is missing
    python benchmarks/report_overhead.py [runs/demo/last.pt] [--runs 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from common import RESULTS, machine
from qdukd.atomic import write_json
from qdukd.export import load_profile
from qdukd.export import pipeline
from qdukd.recipe import DEMO_DATA
from qdukd.report.training_page import write_training_report

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", nargs="?", default=str(ROOT / "runs" / "demo" / "last.pt"))
    p.add_argument("--runs", type=int, default=7, help="exports with and without the report, each (default 7)")
    p.add_argument("--out", default=str(RESULTS / "report_overhead.json"))
    args = p.parse_args()
    ckpt = Path(args.checkpoint)
    profile = load_profile("onnxruntime-int8")
    real = pipeline.write_export_report
    inside: list[float] = []

    def timed(*a, **k):
        t0 = time.perf_counter()
        real(*a, **k)
        inside.append(time.perf_counter() - t0)

    walls: dict[str, list[float]] = {"with_report": [], "without_report": []}
    cpu: dict[str, list[float]] = {"with_report": [], "without_report": []}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        pipeline.export_checkpoint(ckpt, Path(tmp) / "warmup", profile, [DEMO_DATA / "val"], log=lambda s: None,
                                   progress=False)  # first-call costs (imports, kernels) out of the numbers
        for i in range(2 * args.runs):
            kind = "with_report" if i % 2 == 0 else "without_report"
            pipeline.write_export_report = timed if kind == "with_report" else (lambda *a, **k: None)
            t0, c0 = time.perf_counter(), time.process_time()
            pipeline.export_checkpoint(ckpt, Path(tmp) / f"exp{i}", profile, [DEMO_DATA / "val"],
                                       log=lambda s: None, progress=False)
            walls[kind].append(time.perf_counter() - t0)
            cpu[kind].append(time.process_time() - c0)
            print(f"{kind:<15} {walls[kind][-1]:6.2f} s wall {cpu[kind][-1]:6.2f} s CPU"
                  + (f"  (report {inside[-1]:.3f} s)" if kind == "with_report" else ""))
        pipeline.write_export_report = real
        training = []
        if (ckpt.parent / "log.csv").is_file():
            for i in range(3):
                t0 = time.perf_counter()
                write_training_report([ckpt.parent], Path(tmp) / f"train{i}.html")
                training.append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in walls.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    report_s = statistics.median(inside)
    result = {
        "machine": machine(), "load_average_before_after": [load_before, os.getloadavg()],
        "command": "python -m qdukd.export runs/demo/last.pt --out runs/demo/export (in process)",
        "checkpoint": str(ckpt), "runs": args.runs,
        "seconds": {**walls, "report_inside_export": inside, "training_report": training},
        "cpu_seconds": cpu,
        "median_seconds": {**med, "report_inside_export": report_s,
                           "training_report": statistics.median(training) if training else None},
        "median_cpu_seconds": med_cpu,
        "report_share_of_export_pct": 100 * report_s / med["without_report"],
        "with_vs_without_wall_pct": 100 * (med["with_report"] / med["without_report"] - 1),
        "with_vs_without_cpu_pct": 100 * (med_cpu["with_report"] / med_cpu["without_report"] - 1),
    }
    write_json(args.out, result)
    print(f"report.html: {report_s:.3f} s = {result['report_share_of_export_pct']:.1f}% of the export "
          f"({med['without_report']:.2f} s without it). Medians with / without: wall {med['with_report']:.2f} / "
          f"{med['without_report']:.2f} s ({result['with_vs_without_wall_pct']:+.1f}%), CPU "
          f"{med_cpu['with_report']:.2f} / {med_cpu['without_report']:.2f} s "
          f"({result['with_vs_without_cpu_pct']:+.1f}%); wrote {args.out}")


if __name__ == "__main__":
    main()
