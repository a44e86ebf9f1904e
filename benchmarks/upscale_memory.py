"""Peak memory of ``python -m qdukd.upscale`` on a 12 MP photo at x4: this code against an older revision.

The model is the demo W4A4 student (``recipes/demo.toml``, 2 iterations: memory does not depend
on how well it is trained) exported to ONNX with Q/DQ nodes, run by ONNX Runtime on the CPU. The
photo is a 4000x3000 mirror-padded mosaic of the bundled demo crops. Each run is a separate
``python -m qdukd.upscale`` process; its peak resident memory is the kernel's ``ru_maxrss`` for that
process alone (``os.wait4``), so the runs do not see each other's peaks. The code of ``--before``
is taken from git (``git archive``) into a temporary folder and run from there; the working tree
runs with its default settings and with ``--tile 512`` (the old default), and every output is
compared pixel by pixel with the old code's.

Runs are one after another, each with ONNX Runtime's default thread count; each records its wall
and CPU seconds (user + system), the latter less disturbed by other work on a shared machine.

Usage:
    python benchmarks/upscale_memory.py --before 09b5c90 [--model model.onnx] [--work DIR]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from common import RESULTS, machine
from qdukd.atomic import write_json
from qdukd.images import read_image, write_image

ROOT = Path(__file__).resolve().parents[1]
LR_SIZE = (3000, 4000)  # H, W: 12 MP
SCALE = 4


def build_model(work: Path) -> Path:
    """Train the demo student for 2 iterations and export it; returns its Q/DQ ``model.onnx``."""
    onnx_model = work / "export" / "model.onnx"
    if not onnx_model.is_file():
        subprocess.run([sys.executable, "-m", "qdukd.train", "recipes/demo.toml", "--out", str(work / "train"),
                        "train.iters=2"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        subprocess.run([sys.executable, "-m", "qdukd.export", str(work / "train" / "last.pt"), "--out",
                        str(work / "export"), "--no-progress"], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return onnx_model


def make_photo(path: Path) -> Path:
    """A 4000x3000 photo-like PNG: the demo crops as a 3x3 mosaic, mirror-padded to size."""
    if not path.is_file():
        crops = [read_image(p) for p in sorted((ROOT / "qdukd" / "demo_data").glob("*/*.png"))[:9]]
        mosaic = np.concatenate([np.concatenate(crops[i:i + 3], axis=1) for i in (0, 3, 6)], axis=0)
        pad = [(0, LR_SIZE[0] - mosaic.shape[0]), (0, LR_SIZE[1] - mosaic.shape[1]), (0, 0)]
        write_image(path, np.pad(mosaic, pad, mode="symmetric"))
    return path


def code_at(ref: str, dest: Path) -> str:
    """Unpack the ``qdukd`` package as of git revision ``ref`` into ``dest``; returns the full hash."""
    commit = subprocess.run(["git", "rev-parse", ref], cwd=ROOT, check=True, capture_output=True, text=True).stdout
    archive = subprocess.run(["git", "archive", ref, "qdukd"], cwd=ROOT, check=True, capture_output=True).stdout
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return commit.strip()


def measure(code: Path, model: Path, photo: Path, out: Path, extra: list[str]) -> dict[str, object]:
    """Run the upscaler from ``code`` (a folder holding ``qdukd/``) in its own process; its peak RSS and times.

    On a shared machine the wall time depends on the neighbours' load; the CPU time much less.

    Args:
        code: the working directory; ``python -m`` imports ``qdukd`` from it first.
        model: the model file.
        photo: the input image.
        out: the output folder.
        extra: more command-line arguments.
    """
    cmd = [sys.executable, "-m", "qdukd.upscale", str(model), str(photo), "--out", str(out), *extra]
    log = out.with_suffix(".log")
    out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    with open(log, "wb") as f:
        proc = subprocess.Popen(cmd, cwd=code, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak, not the max over all children
    seconds = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    proc.returncode = rc
    if rc != 0:
        raise SystemExit(f"{' '.join(cmd)} exited {rc}:\n{log.read_text()[-2000:]}")
    return {"args": extra, "peak_rss_mib": round(usage.ru_maxrss / 1024), "seconds": round(seconds, 1),
            "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, metavar="REV", help="git revision of the old code, e.g. 09b5c90")
    ap.add_argument("--model", help="an .onnx / checkpoint to use instead of the 2-iteration demo export")
    ap.add_argument("--work", default=str(Path(tempfile.gettempdir()) / "qdukd_upscale_memory"),
                    help="scratch folder (model, photo, outputs; several GB)")
    args = ap.parse_args()

    work = Path(args.work)
    model = Path(args.model) if args.model else build_model(work)
    photo = make_photo(work / "photo_12mp.png")
    commit = code_at(args.before, work / "before")
    runs = [("before", work / "before", []), ("after", ROOT, []), ("after", ROOT, ["--tile", "512"])]
    results = []
    for i, (label, code, extra) in enumerate(runs):
        out = work / f"out{i}"
        result = {"code": label, **measure(code, model, photo, out, extra)}
        results.append((result, out / "photo_12mp.png"))
        print(result, flush=True)

    Image.MAX_IMAGE_PIXELS = None  # the 192 MP outputs are over Pillow's default limit
    reference = read_image(results[0][1])
    for result, path in results[1:]:
        diff = np.abs(read_image(path).astype(np.int16) - reference)
        result["vs_before"] = {"max_abs_diff": int(diff.max()), "values_differing": int(np.count_nonzero(diff))}
    output_values = LR_SIZE[0] * LR_SIZE[1] * SCALE * SCALE * 3
    write_json(RESULTS / "upscale_memory.json", {
        "what": "peak RSS of one `python -m qdukd.upscale MODEL photo.png --out DIR` process, 4000x3000 LR, x4",
        "command": f"python benchmarks/upscale_memory.py --before {args.before}",
        "before_commit": commit,
        "model": "demo W4A4 EDSR 32x6 student, 2 iterations, ONNX Q/DQ on onnxruntime CPU" if not args.model
                 else str(model),
        "output_uint8_mib": round(output_values / 2**20),
        "target_mib": round((output_values + 1.5 * 2**30) / 2**20),
        "runs": [{**r, "bytes_per_output_value": round(r["peak_rss_mib"] * 2**20 / output_values, 2)}
                 for r, _ in results],
        "machine": machine(),
    })


if __name__ == "__main__":
    main()
