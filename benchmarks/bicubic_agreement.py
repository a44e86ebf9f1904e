"""Agreement of qdukd.resize.imresize with MATLAB's bicubic LR files, plus imresize_torch timing.

For Set5 and Set14 at x2/x3/x4 this computes ``imresize(modcrop(HR, s), 1/s)`` and compares it
with the MATLAB-made ``LR_bicubic/X{s}/<name>x{s}.png``: share of pixels (all RGB channels)
equal and the largest absolute difference. It then times ``imresize_torch`` on a
16x3x48x48 float32 batch downscaled by 4 (median of 50 runs).

Usage:
    python benchmarks/bicubic_agreement.py [--data ../shared/data] [--out PATH]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

from common import RESULTS, SHARED, machine, median_seconds
from qdukd.atomic import write_json
from qdukd.data import find_pairs
from qdukd.images import modcrop, read_image
from qdukd.resize import imresize, imresize_torch

SETS = ("Set5", "Set14")
SCALES = (2, 3, 4)


def agreement(bench_dir: Path, set_name: str, s: int) -> dict:
    """Compare imresize with MATLAB's LR files for one set and scale.

    Args:
        bench_dir: The ``benchmarks`` folder holding ``<set>/HR`` and ``<set>/LR_bicubic``.
        set_name: ``Set5`` or ``Set14``.
        s: Integer downscaling factor.

    Returns:
        A table row: set, scale, images, pixels, pct_pixels_equal, max_abs_diff.
    """
    n_img = n_pix = n_eq = 0
    max_diff = 0
    for pair in find_pairs(bench_dir / set_name, s):
        hr, lr = read_image(pair.hr_path), read_image(pair.lr_path)
        out = imresize(modcrop(hr, s), 1 / s)
        if out.shape != lr.shape:
            raise SystemExit(f"error: shape mismatch for {pair.name} x{s}: {out.shape} vs {lr.shape}")
        diff = np.abs(out.astype(np.int16) - lr.astype(np.int16))
        n_img += 1
        n_pix += diff.shape[0] * diff.shape[1]
        n_eq += int((diff.max(axis=-1) == 0).sum())
        max_diff = max(max_diff, int(diff.max()))
    return {
        "set": set_name,
        "scale": s,
        "images": n_img,
        "pixels": n_pix,
        "pct_pixels_equal": 100.0 * n_eq / n_pix,
        "max_abs_diff": max_diff,
    }


def time_torch(runs: int = 50, backward: bool = False) -> float:
    """Median wall time (ms) of imresize_torch on a 16x3x48x48 float32 batch -> 1/4."""
    x = torch.rand(16, 3, 48, 48, requires_grad=backward)

    def run() -> None:
        y = imresize_torch(x, 1 / 4)
        if backward:
            y.sum().backward()

    # Warm-up builds and caches the weight matrices.
    return 1000.0 * median_seconds(run, runs, warmup=5)


def main(argv: list[str] | None = None) -> int:
    """Run the agreement table and the timing; print both and write JSON to --out.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        Process exit code.
    """
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=SHARED,
                    help="reference data folder (default: ../shared/data)")
    ap.add_argument("--out", type=Path, default=RESULTS / "bicubic_agreement.json",
                    help="JSON output path")
    ap.add_argument("--runs", type=int, default=50, help="timing runs (median reported)")
    args = ap.parse_args(argv)

    bench_dir = args.data / "benchmarks"
    if not bench_dir.is_dir():
        print(f"error: reference data missing: {bench_dir}", file=sys.stderr)
        return 2

    rows = [agreement(bench_dir, set_name, s) for set_name in SETS for s in SCALES]
    print(f"{'set':<6} {'scale':>5} {'images':>6} {'% pixels equal':>15} {'max abs diff':>12}")
    for r in rows:
        print(f"{r['set']:<6} {'x' + str(r['scale']):>5} {r['images']:>6} "
              f"{r['pct_pixels_equal']:>15.4f} {r['max_abs_diff']:>12}")

    fwd_ms = time_torch(args.runs)
    fwd_bwd_ms = time_torch(args.runs, backward=True)
    threads = torch.get_num_threads()
    print(f"imresize_torch 16x3x48x48 float32 -> 1/4 (CPU, {threads} threads), median of "
          f"{args.runs}: forward {fwd_ms:.3f} ms, forward+backward {fwd_bwd_ms:.3f} ms")

    result = {
        "agreement": rows,
        "timing": {
            "op": "imresize_torch(x, 1/4), x = 16x3x48x48 float32",
            "device": "cpu",
            "torch_threads": threads,
            "runs": args.runs,
            "forward_median_ms": fwd_ms,
            "forward_backward_median_ms": fwd_bwd_ms,
        },
        "machine": machine(),
    }
    write_json(args.out, result)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
