"""Evaluation speed and peak memory: a teacher over a benchmark set, as `qdukd.eval` runs it.

Each image is run ``--runs`` times and its median kept; images/s = images / sum of medians.

Usage:
    python benchmarks/eval_speed.py [--model pan] [--scale 4] [--set Set14] [--runs 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from common import RESULTS, SHARED, machine, peak_rss_mib
from qdukd.atomic import write_json
from qdukd.data import load_set
from qdukd.models import build_model, load_weights
from qdukd.scoring import torch_sr_function


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="pan")
    ap.add_argument("--scale", type=int, default=4)
    ap.add_argument("--set", default="Set14")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model = build_model(args.model, args.scale)
    load_weights(model, SHARED / "teachers" / f"{args.model.upper()}_x{args.scale}.pth")
    sr_fn = torch_sr_function(model)
    images = load_set(SHARED / "benchmarks" / args.set, args.scale)
    sr_fn(images[0][1])  # warm-up
    medians = []
    for _, lr, _ in images:
        times = []
        for _ in range(args.runs):
            t0 = time.perf_counter()
            sr_fn(lr)
            times.append(time.perf_counter() - t0)
        medians.append(statistics.median(times))
    result = {"model": args.model, "scale": args.scale, "set": args.set, "images": len(images),
              "runs_per_image": args.runs, "images_per_second": len(images) / sum(medians),
              "seconds_per_image_median": statistics.median(medians), "peak_rss_mib": peak_rss_mib(),
              "machine": machine()}
    print(f"{args.model} x{args.scale} on {args.set}: {result['images_per_second']:.2f} images/s "
          f"(median of {args.runs} per image, {args.threads} threads), peak RSS {result['peak_rss_mib']:.0f} MiB")
    write_json(RESULTS / f"eval_speed_{args.model}_x{args.scale}_{args.set}.json", result)


if __name__ == "__main__":
    main()
