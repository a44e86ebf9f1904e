"""``python -m qdukd.export``: export a trained student for a deployment target and gate it.

Example:
    python -m qdukd.export runs/edsr_w4a8/last.pt --out out/edsr_w4a8 --target tensorrt-lowbit \\
        --verify-data ../shared/data/benchmarks/Set5 ../shared/data/benchmarks/Set14

Exit codes: 0 exported and the gate passed; 1 the gate failed: a backend differs from PyTorch by
more than the tolerance, or the PyTorch student is not finite or does not beat bicubic (the
artifacts are written, ``report.json`` says ``"passed": false`` and why); 2 bad input (missing,
corrupt or non-finite checkpoint, unknown profile, a layer the target cannot run); 3 a crash.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections import Counter
from pathlib import Path

from ..cli import EXIT_FAILED, EXIT_OK, Parser, run
from ..data import set_name
from ..models.custom import TRUST_FLAG
from ..errors import QdukdError
from ..recipe import DEMO_DATA
from .pipeline import export_checkpoint
from .profiles import available_profiles, load_profile
from .verify import format_report

DEFAULT_TARGET = "onnxruntime-int8"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m qdukd.export", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("checkpoint", help="qdukd training checkpoint (carries its recipe and quant state)")
    p.add_argument("--out", required=True, metavar="DIR", help="export folder (created; an earlier export is replaced)")
    p.add_argument("--target", default=DEFAULT_TARGET, metavar="PROFILE",
                   help=f"profile name ({', '.join(available_profiles())}) or a .toml path; "
                        f"default {DEFAULT_TARGET}")
    p.add_argument("--verify-data", nargs="+", metavar="DIR", default=[str(DEMO_DATA / "val")],
                   help="HR folders or BasicSR-layout sets for the parity gate (default: bundled demo images)")
    p.add_argument("--max-psnr-drop", type=float, metavar="DB",
                   help="largest |PSNR_Y difference| to PyTorch per set (default: the profile's, 0.01 dB)")
    p.add_argument("--min-gain-over-bicubic", type=float, default=0.0, metavar="DB",
                   help="quality floor: the PyTorch student must beat bicubic by this many dB PSNR_Y on every "
                        "verify set (default 0; negative only for a student meant to be worse than bicubic)")
    p.add_argument(TRUST_FLAG, action="store_true",
                   help="rebuild a student whose code lives outside qdukd (an import path or plugin the checkpoint "
                        "names); this imports and runs that code: use only for checkpoints you trust")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        profile = load_profile(args.target)
        if args.max_psnr_drop is not None:
            if args.max_psnr_drop < 0:
                raise QdukdError(f"--max-psnr-drop must be >= 0, got {args.max_psnr_drop}")
            profile = dataclasses.replace(profile, verify=dataclasses.replace(
                profile.verify, max_psnr_drop=args.max_psnr_drop))
        sets = [Path(d) for d in args.verify_data]
        for d in sets:
            if not d.is_dir():
                what = "a file" if d.exists() else "missing"
                raise QdukdError(f"--verify-data {d} is {what}; pass folders of images")
        names = [set_name(d) for d in sets]
        twice = next((n for n in names if names.count(n) > 1), None)
        if twice is not None:
            raise QdukdError(f"two --verify-data folders are both named {twice!r}; the report keys sets by name")
        result = export_checkpoint(args.checkpoint, args.out, profile, sets, progress=not args.no_progress,
                                   min_gain_db=args.min_gain_over_bicubic, trust_code=args.trust_model_code)
        print(format_report(result.report))
        if result.float_ops:
            counts = Counter(op["op"] for op in result.float_ops)
            print(f"float on ONNX Runtime CPU: {len(result.float_ops)} node(s): "
                  f"{', '.join(f'{op} x{n}' for op, n in counts.most_common())} (report.json names each, and why)")
        print(f"wrote {args.out}: {', '.join(result.files)}, triton/")
        print(f"report: {Path(args.out) / 'report.html'} (open it in a browser: gate, every image, crops, model card)")
        return EXIT_OK if result.report.passed else EXIT_FAILED

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
