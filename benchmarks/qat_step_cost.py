"""Cost of a W4A4 QAT training step relative to the float step (target: <= 1.3x).

EDSR student (num_feat=32, num_block=4, x4), batch 16 of 48x48 LR patches, L1 loss, Adam.
The float model and its ``prepare_qat(QuantConfig.from_string("w4a4"))`` twin (defaults:
FP head/tail, LSQ, quantized adds) train side by side: steps are interleaved in one process,
alternating which goes first, so machine drift hits both alike. Reports the medians after
warm-up and the median of the per-pair ratios.

Usage:
    python benchmarks/qat_step_cost.py [--steps 20] [--warmup 3] [--threads 2] [--out PATH]
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from qdukd.atomic import write_json
from qdukd.models import build_model
from qdukd.quant import QuantConfig, calibrate, prepare_qat, quantized_layers

RESULTS = Path(__file__).resolve().parent / "results"
ARCH = {"name": "edsr", "scale": 4, "num_feat": 32, "num_block": 4}
BATCH, PATCH = 16, 48


def timed_step(model: nn.Module, opt: torch.optim.Optimizer, lr: torch.Tensor, hr: torch.Tensor) -> tuple[float, float]:
    """(wall, process CPU) seconds for one forward + L1 loss + backward + Adam step."""
    wall, cpu = time.perf_counter(), time.process_time()
    loss = F.l1_loss(model(lr), hr)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return time.perf_counter() - wall, time.process_time() - cpu


def main(argv: list[str] | None = None) -> int:
    """Time both steps, print a table and write JSON.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).
    """
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20, help="timed steps per model (median reported, >= 10)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps per model first")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--out", type=Path, default=RESULTS / "qat_step_cost.json", help="JSON output path")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    arch = dict(ARCH)
    fp = build_model(arch.pop("name"), arch.pop("scale"), **arch)
    qat = prepare_qat(copy.deepcopy(fp), QuantConfig.from_string("w4a4"))
    scale = ARCH["scale"]
    lr = torch.rand(BATCH, 3, PATCH, PATCH)
    hr = torch.rand(BATCH, 3, PATCH * scale, PATCH * scale)
    calibrate(qat, [lr], method="max")
    models = {"fp": fp, "w4a4": qat}
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-4) for k, m in models.items()}
    times: dict[str, list[float]] = {k: [] for k in models}
    cpu: dict[str, list[float]] = {k: [] for k in models}
    for i in range(args.warmup + args.steps):
        order = list(models) if i % 2 == 0 else list(reversed(models))
        for k in order:
            wall, used = timed_step(models[k], opts[k], lr, hr)
            if i >= args.warmup:
                times[k].append(wall)
                cpu[k].append(used)

    med = {k: statistics.median(v) for k, v in times.items()}
    med_cpu = {k: statistics.median(v) for k, v in cpu.items()}
    pair_ratio = statistics.median(q / f for q, f in zip(times["w4a4"], times["fp"], strict=True))
    ratio, cpu_ratio = med["w4a4"] / med["fp"], med_cpu["w4a4"] / med_cpu["fp"]
    min_ratio = min(times["w4a4"]) / min(times["fp"])
    n_quant = len(quantized_layers(qat))
    print(f"EDSR x{scale} num_feat={ARCH['num_feat']} num_block={ARCH['num_block']}, batch {BATCH}x3x{PATCH}x{PATCH}, "
          f"L1 + Adam, CPU {args.threads} threads, {args.steps} steps after {args.warmup} warm-up (interleaved)")
    print(f"{'model':<8} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'CPU ms':>8}")
    for k, v in times.items():
        print(f"{k:<8} {1000 * med[k]:>10.1f} {1000 * min(v):>8.1f} {1000 * max(v):>8.1f} {1000 * med_cpu[k]:>8.1f}")
    # Other processes on the machine inflate the many short elementwise ops of QAT more than the
    # convs; the ratio of the fastest steps shows the cost on an idle machine.
    print(f"ratio w4a4/fp: {ratio:.3f} (medians; per-pair median {pair_ratio:.3f}, CPU time {cpu_ratio:.3f}, "
          f"fastest steps {min_ratio:.3f}); target <= 1.30; {n_quant} quantized layers")

    write_json(args.out, {
        "model": ARCH, "batch": [BATCH, 3, PATCH, PATCH], "loss": "l1", "optimizer": "adam",
        "quant": QuantConfig.from_string("w4a4").to_dict(), "quantized_layers": n_quant,
        "threads": args.threads, "warmup": args.warmup, "steps": args.steps,
        "median_ms": {k: 1000 * v for k, v in med.items()},
        "median_cpu_ms": {k: 1000 * v for k, v in med_cpu.items()},
        "step_ms": {k: [1000 * t for t in v] for k, v in times.items()},
        "ratio": ratio, "pair_ratio_median": pair_ratio, "cpu_ratio": cpu_ratio,
        "min_ratio": min_ratio, "target": 1.3,
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "processor": platform.processor() or platform.machine()},
    })
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
