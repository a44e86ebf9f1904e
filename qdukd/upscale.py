"""``python -m qdukd.upscale``: super-resolve images with an exported model or a checkpoint.

MODEL is an ONNX file (run by ONNX Runtime), a TensorRT ``.plan`` or a qdukd training
checkpoint. Images larger than ``--tile`` are cut into overlapping tiles; each tile's border
(``--overlap`` LR pixels, at least the network's receptive field) is discarded, so the result
matches a whole-image run to within one 8-bit level.

Example:
    python -m qdukd.upscale out/edsr/model.onnx photo.jpg holiday/ --out upscaled/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from .checkpoint import load_checkpoint, student_from_checkpoint
from .cli import EXIT_OK, run
from .errors import QdukdError
from .export import tensorrt_engine
from .export.profiles import OnnxRuntimeSection
from .export.runtime import ArrayFunction, Unavailable, ort_session, session_config, session_function
from .images import IMAGE_SUFFIXES, list_images, read_image, to_tensor, to_uint8, write_image
from .tiling import tiled_forward

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


def load_runner(path: str | Path, provider: str = "cpu") -> ArrayFunction:
    """An NCHW float function for an ``.onnx``, a TensorRT ``.plan`` or a qdukd checkpoint.

    Raises:
        QdukdError: missing, corrupt or unsupported model file, or an unusable backend.
    """
    path = Path(path)
    if not path.is_file():
        raise QdukdError(f"model not found: {path}")
    try:
        if path.suffix == ".onnx":
            return session_function(ort_session(path, PROVIDERS[provider], session_config=session_config(
                OnnxRuntimeSection())))
        if path.suffix in (".plan", ".engine"):
            reason = tensorrt_engine.unavailable_reason()
            if reason:
                raise Unavailable(reason)
            return tensorrt_engine.TensorRTRunner(path)
    except Unavailable as e:
        raise QdukdError(f"cannot run {path}: {e}") from None
    model = student_from_checkpoint(load_checkpoint(path))

    def run_torch(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return run_torch


def model_scale(fn: ArrayFunction, probe: int = 16) -> int:
    """The upscaling factor, measured on a small blank input."""
    out = fn(np.zeros((1, 3, probe, probe), np.float32))
    return out.shape[-1] // probe


def upscale(fn: ArrayFunction, lr: np.ndarray, scale: int, tile: int, overlap: int) -> np.ndarray:
    """Super-resolve one HxWx3 uint8 image, in overlapping tiles when it is larger than ``tile``.

    Args:
        fn: the model as an NCHW float function.
        lr: the input image.
        scale: the model's scale.
        tile: the largest LR tile side (0 = never tile).
        overlap: LR pixels of context added on each side of a tile and cropped from its output.
    """
    return to_uint8(torch.from_numpy(tiled_forward(fn, to_tensor(lr).numpy(), scale, tile, overlap)))


def collect_inputs(inputs: list[str]) -> list[Path]:
    """Image files from files and folders (a folder's images, sorted).

    Raises:
        QdukdError: a path is missing, a file is not an image, or a folder holds none.
    """
    files = []
    for item in map(Path, inputs):
        if item.is_dir():
            files += list_images(item)
        elif item.is_file() and item.suffix.lower() in IMAGE_SUFFIXES:
            files.append(item)
        elif item.is_file():
            raise QdukdError(f"{item} is not an image ({', '.join(IMAGE_SUFFIXES)})")
        else:
            raise QdukdError(f"input not found: {item}")
    return files


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m qdukd.upscale", description=__doc__.splitlines()[0])
    p.add_argument("model", help="model.onnx, model.plan (TensorRT) or a qdukd checkpoint")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (PNG, same file stems)")
    p.add_argument("--tile", type=int, default=512, help="largest LR tile side; 0 = whole images")
    p.add_argument("--overlap", type=int, default=32, help="LR context pixels around each tile")
    p.add_argument("--provider", choices=sorted(PROVIDERS), default="cpu", help="ONNX Runtime provider")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)

    def body() -> int:
        if args.tile < 0 or args.overlap < 0:
            raise QdukdError("--tile and --overlap must be >= 0")
        files = collect_inputs(args.inputs)
        targets = [Path(args.out) / f"{f.stem}.png" for f in files]
        clash = next((t for t in targets if targets.count(t) > 1), None)
        if clash is not None:
            raise QdukdError(f"two inputs would both be written to {clash}; upscale them separately")
        fn = load_runner(args.model, args.provider)
        scale = model_scale(fn)
        for src, dst in tqdm(list(zip(files, targets)), desc=f"x{scale}", unit="img"):
            write_image(dst, upscale(fn, read_image(src), scale, args.tile, args.overlap))
        print(f"wrote {len(files)} image(s) to {args.out}")
        return EXIT_OK

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
