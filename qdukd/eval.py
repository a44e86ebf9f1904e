"""``python -m qdukd.eval``: PSNR_Y / SSIM_Y of a model on benchmark sets.

Example:
    python -m qdukd.eval --model pan --scale 4 --weights PAN_x4.pth \\
        --data ../shared/data/benchmarks/Set5 ../shared/data/benchmarks/Set14 --json pan_x4.json
"""

from __future__ import annotations

import argparse
import sys

import torch

from .atomic import write_json
from .cli import EXIT_OK, parse_kv, run
from .metrics import CONVENTIONS
from .models import MODELS, build_model, load_weights
from .scoring import format_table, score_set, torch_sr_function


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m qdukd.eval", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, choices=sorted(MODELS), help="architecture")
    p.add_argument("--scale", type=int, required=True, choices=(2, 3, 4), help="SR scale")
    p.add_argument("--weights", help="state_dict / BasicSR checkpoint (omit for random weights)")
    p.add_argument("--arch", nargs="*", default=[], metavar="KEY=VALUE",
                   help="constructor arguments, e.g. num_feat=256 num_block=32 res_scale=0.1")
    p.add_argument("--data", nargs="+", required=True, metavar="DIR",
                   help="HR folders or BasicSR-layout sets (HR/ + LR_bicubic/X{s}/)")
    p.add_argument("--ycbcr", choices=CONVENTIONS, default="float",
                   help="Y convention: float (BasicSR, RCAN, PAN, IMDN) or uint8 (rounded Y)")
    p.add_argument("--json", metavar="OUT", help="write the per-image results here")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        if args.threads:
            torch.set_num_threads(args.threads)
        model = build_model(args.model, args.scale, **parse_kv(args.arch, "--arch"))
        if args.weights:
            load_weights(model, args.weights)
        sr_fn = torch_sr_function(model)
        sets = [score_set(sr_fn, d, args.scale, args.ycbcr) for d in args.data]
        print(format_table(sets, f"{args.model} x{args.scale}, PSNR/SSIM on Y ({args.ycbcr} convention)"))
        if args.json:
            write_json(args.json, {"model": args.model, "scale": args.scale, "convention": args.ycbcr,
                                   "sets": [s.to_dict() for s in sets]})
        return EXIT_OK

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
