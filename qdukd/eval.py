"""``python -m qdukd.eval``: PSNR_Y / SSIM_Y of a model on benchmark sets.

Example:
    python -m qdukd.eval --model pan --scale 4 --weights PAN_x4.pth \\
        --data ../shared/data/benchmarks/Set5 ../shared/data/benchmarks/Set14 --json pan_x4.json
"""

from __future__ import annotations

import argparse
import sys

import torch

from torch import nn

from .atomic import write_json
from .checkpoint import read_checkpoint, student_from_checkpoint
from .cli import EXIT_OK, Parser, check_output_file, parse_kv, run
from .data import TrainPatches, calibration_batches
from .errors import QdukdError
from .images import set_max_pixels
from .metrics import CONVENTIONS
from .models import MODELS, build_model, load_weights
from .models.custom import TRUST_FLAG
from .quant import QuantConfig, calibrate, prepare_qat
from .quant.policy import CONFIG_ATTR
from .scoring import format_table, score_set, torch_sr_function


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m qdukd.eval", description=__doc__.splitlines()[0])
    p.add_argument("--model", metavar="NAME", help=f"architecture: {', '.join(sorted(MODELS))}, a plugin's name or "
                   "package.module:Class (not needed for a qdukd checkpoint)")
    p.add_argument("--scale", type=int, choices=(2, 3, 4), help="SR scale (not needed for a qdukd checkpoint)")
    p.add_argument("--weights", help="a qdukd training checkpoint, or a state_dict / BasicSR file for --model")
    p.add_argument("--arch", nargs="*", default=[], metavar="KEY=VALUE",
                   help="constructor arguments, e.g. num_feat=256 num_block=32 res_scale=0.1")
    p.add_argument("--data", nargs="+", required=True, metavar="DIR",
                   help="HR folders or BasicSR-layout sets (HR/ + LR_bicubic/X{s}/)")
    p.add_argument("--ycbcr", choices=CONVENTIONS, default="float",
                   help="Y convention: float (BasicSR, RCAN, PAN, IMDN) or uint8 (rounded Y)")
    p.add_argument("--json", metavar="OUT", help="write the per-image results here")
    p.add_argument("--quant", metavar="SPEC", help="post-training quantization before evaluating, e.g. w8a8 "
                   "or w4a4,head_tail=int8 (needs --calibrate)")
    p.add_argument("--calibrate", nargs="+", metavar="DIR", help="images whose LR patches set the --quant ranges")
    p.add_argument("--calib-batches", type=int, default=8, help="calibration batches of 8 patches (48 px LR)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help="largest image in pixels (default: Pillow's decompression-bomb guard); 0 = no limit")
    p.add_argument(TRUST_FLAG, action="store_true",
                   help="allow a model whose code lives outside qdukd (import path or plugin); this imports and "
                        "runs that code: use only for code and checkpoints you trust")
    return p


def _load_model(args: argparse.Namespace) -> tuple[str, int, nn.Module]:
    """(name, scale, model) from --weights as a qdukd checkpoint, or from --model/--scale."""
    ckpt = read_checkpoint(args.weights) if args.weights else None
    if ckpt is not None:
        scale = ckpt["recipe"]["data"]["scale"]
        if args.scale not in (None, scale):
            raise QdukdError(f"{args.weights} is a x{scale} model, not x{args.scale}: drop --scale or fix it")
        student = student_from_checkpoint(ckpt, trust_code=args.trust_model_code)
        return ckpt["recipe"]["student"]["model"], scale, student
    if not args.model or not args.scale:
        raise QdukdError("--model and --scale are required unless --weights is a qdukd training checkpoint")
    model = build_model(args.model, args.scale, trust_code=args.trust_model_code, **parse_kv(args.arch, "--arch"))
    if args.weights:
        load_weights(model, args.weights)
    return args.model, args.scale, model


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        if args.threads is not None and args.threads < 1:
            raise QdukdError(f"--threads must be >= 1, got {args.threads}")
        if args.threads:
            torch.set_num_threads(args.threads)
        if args.max_pixels is not None:
            set_max_pixels(args.max_pixels)
        if args.json:
            check_output_file(args.json, "--json")
        name, scale, model = _load_model(args)
        if args.quant:
            if getattr(model, CONFIG_ATTR, None) is not None:
                raise QdukdError(f"--quant quantizes an FP model after training; {args.weights} is already "
                                 "quantized (drop --quant)")
            if args.calib_batches < 1:
                raise QdukdError(f"--calib-batches must be >= 1, got {args.calib_batches}")
            if not args.calibrate:
                raise QdukdError("--quant needs --calibrate DIR [DIR ...]: images to set the ranges from")
            prepare_qat(model, QuantConfig.from_string(args.quant))
            patches = TrainPatches(args.calibrate, scale, patch=48, augment=False)
            calibrate(model, calibration_batches(patches, 8, args.calib_batches))
            name += f" ({args.quant} PTQ)"
        sr_fn = torch_sr_function(model)
        sets = [score_set(sr_fn, d, scale, args.ycbcr) for d in args.data]
        if args.json:  # before the table: a reader that stops early (``| head``) does not lose it
            write_json(args.json, {"model": name, "scale": scale, "convention": args.ycbcr,
                                   "quant": args.quant, "sets": [s.to_dict() for s in sets]})
        print(format_table(sets, f"{name} x{scale}, PSNR/SSIM on Y ({args.ycbcr} convention)"))
        return EXIT_OK

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
