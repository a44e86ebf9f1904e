"""``python -m qdukd.upscale``: super-resolve images with an exported model or a checkpoint.

MODEL is an ONNX file (run by ONNX Runtime), a TensorRT ``.plan`` or a qdukd training
checkpoint. Images are cut into overlapping tiles of ``--tile`` LR pixels, by default 768 / scale
(output tiles of about 768x768: the network's working memory grows with the output tile); each
tile's border (``--overlap`` LR pixels, at least the network's receptive field) is discarded, so
the result matches a whole-image run to within one 8-bit level. Only the tile in flight is float:
the output is assembled in 8 bits per channel (a 12 MP photo at x4 takes 0.8 GB) and saved from
there as PNG.

Outputs go to ``--out`` (created, with its parents, if missing) under the inputs' file stems, each
written atomically, so a failed or interrupted batch leaves complete outputs and no partial file.
Inputs are never replaced: an ``--out`` that is an input folder, or an output that is the same
file as an input (through a symlink, a hard link or a case-insensitive disk), is refused before
any work.

Example:
    python -m qdukd.upscale out/edsr/model.onnx photo.jpg holiday/ --out upscaled/
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from .checkpoint import load_checkpoint, student_from_checkpoint
from .cli import EXIT_OK, Parser, check_input_file, check_writable_folder, run
from .errors import NonFiniteOutput, QdukdError
from .export import tensorrt_engine
from .export.profiles import OnnxRuntimeSection
from .export.runtime import ArrayFunction, Unavailable, ort_session, session_config, session_function
from .images import (IMAGE_SUFFIXES, image_size, list_images, read_image, set_max_pixels, to_tensor, to_uint8,
                     write_image)
from .models.custom import TRUST_FLAG
from .tiling import tile_outputs

PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}
# The default output tile side (the LR tile is this / scale). The network's working memory grows with
# it: ONNX Runtime's arena holds about 0.7 GB for the demo x4 model at 768 and 1.1 GB at 1024; a
# larger tile wastes less work on the overlap (768 takes ~20% more CPU time than 1024 at x4).
OUTPUT_TILE = 768
PROBE = (16, 24)  # the test input's H and W: unequal, so that a transposed output shows
REEXPORT = "re-export it with dynamic height and width (python -m qdukd.export CHECKPOINT --out DIR does)"


def _check_onnx_input(session, path: Path) -> None:
    """Refuse an ONNX model that cannot take RGB images of any size (fixed H/W, other rank, dtype or channels)."""
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise QdukdError(f"{path} has {len(inputs)} inputs; upscale runs models with one image input")
    shape, dtype = inputs[0].shape, inputs[0].type
    text = "x".join(str(d) for d in shape)
    fixed = [isinstance(d, int) for d in shape]  # ONNX Runtime gives a dynamic axis as a name or None
    if len(shape) != 4 or (fixed[0] and shape[0] != 1) or (fixed[1] and shape[1] != 3):
        raise QdukdError(f"{path} takes a {text} input; upscale needs N x 3 x H x W (RGB): {REEXPORT}")
    if fixed[2] or fixed[3]:
        raise QdukdError(f"{path} has a fixed input size ({text}) but images come in any size: {REEXPORT}")
    if dtype != "tensor(float)":
        raise QdukdError(f"{path} takes {dtype} input; upscale feeds float32 images: {REEXPORT}")


def load_runner(path: str | Path, provider: str = "cpu", trust_code: bool = False) -> ArrayFunction:
    """An NCHW float function for an ``.onnx``, a TensorRT ``.plan`` or a qdukd checkpoint.

    Args:
        path: the model file; ``.onnx``, ``.plan`` / ``.engine``, anything else is read as a checkpoint.
        provider: ONNX Runtime's execution provider for an ``.onnx``: a key of :data:`PROVIDERS`.
        trust_code: allow a checkpoint whose student is code outside qdukd (import path or plugin).

    Raises:
        QdukdError: missing, empty, corrupt or unsupported model file (an ONNX model with a fixed or
            non-RGB input), or an unusable backend.
    """
    path = check_input_file(path, "model", f"the model file (e.g. {Path(path) / 'model.onnx'})")
    suffix = path.suffix.lower()
    try:
        if suffix == ".onnx":
            session = ort_session(path, PROVIDERS[provider], session_config=session_config(OnnxRuntimeSection()))
            _check_onnx_input(session, path)
            return session_function(session)
        if suffix in (".plan", ".engine"):
            reason = tensorrt_engine.unavailable_reason()
            if reason:
                raise Unavailable(reason)
            return tensorrt_engine.TensorRTRunner(path)
    except Unavailable as e:
        raise QdukdError(f"cannot run {path}: {e}") from None
    model = student_from_checkpoint(load_checkpoint(path), trust_code=trust_code)

    def run_torch(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return run_torch


def _forward(fn: ArrayFunction, x: np.ndarray) -> np.ndarray:
    """``fn(x)``; a runtime's failure (ONNX Runtime, TensorRT and torch raise their own types) is one QdukdError."""
    try:
        y = fn(x)
    except MemoryError:
        raise QdukdError(f"out of memory on a {x.shape[-2]}x{x.shape[-1]} tile (a smaller --tile needs less)") from None
    except Exception as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise QdukdError(f"the model failed on a {x.shape[-2]}x{x.shape[-1]} input: {reason}") from None
    if not np.isfinite(y).all():  # rounding would hide NaN as black: refuse rather than write it
        raise NonFiniteOutput("the model returned NaN or infinite values (are its weights corrupt?)")
    return y


def model_scale(fn: ArrayFunction, name: str | Path = "the model") -> int:
    """The upscaling factor, measured on a small blank input; refuses a model that is not an SR model.

    Args:
        fn: the model as an NCHW float function.
        name: the model file, for messages.

    Raises:
        QdukdError: the model fails on the test input, returns NaN, or its output is not an integer
            multiple (the same in height and width) of the input.
    """
    h, w = PROBE
    try:
        out = _forward(fn, np.zeros((1, 3, h, w), np.float32))
    except QdukdError as e:
        raise QdukdError(f"{name}: {e}") from None
    shape = tuple(np.shape(out))
    scale = shape[-2] // h if len(shape) == 4 else 0
    if scale < 1 or shape != (1, 3, h * scale, w * scale):
        raise QdukdError(f"{name} maps a 1x3x{h}x{w} input to {'x'.join(map(str, shape))}, not to the input "
                         "times a scale factor (1x3x(s*H)x(s*W)); upscale runs super-resolution models")
    return scale


def upscale(fn: ArrayFunction, lr: np.ndarray, scale: int, tile: int, overlap: int) -> Image.Image:
    """Super-resolve one HxWx3 uint8 image, in overlapping tiles when it is larger than ``tile``.

    Each tile is made float, run, rounded to 8 bits as :func:`qdukd.images.to_uint8` does and pasted
    into the result, so memory is the 8-bit output plus one tile's worth of floats and network state.

    Args:
        fn: the model as an NCHW float function.
        lr: the input image.
        scale: the model's scale.
        tile: the largest LR tile side (0 = never tile).
        overlap: LR pixels of context added on each side of a tile and cropped from its output.

    Returns:
        An RGB image (``np.asarray`` gives HxWx3 uint8). Pillow's own pixels, so it is saved without a copy.

    Raises:
        QdukdError: the model fails on a tile or returns non-finite values or the wrong size.
    """
    h, w = lr.shape[:2]
    out = Image.new("RGB", (w * scale, h * scale))
    pieces = tile_outputs(lambda r, c: _forward(fn, to_tensor(lr[r, c]).numpy()), h, w, scale, tile, overlap)
    for rows, cols, sr in pieces:
        out.paste(Image.fromarray(to_uint8(torch.from_numpy(sr))), (cols.start, rows.start))
    return out


def collect_inputs(inputs: list[str]) -> list[Path]:
    """Image files from files and folders (a folder's images, sorted).

    Raises:
        QdukdError: a path is missing, a file is not an image, or a folder holds none.
    """
    files = []
    if not all(i.strip() for i in inputs):  # Path("") is the working folder: an empty "$VAR" is a slip
        raise QdukdError("an INPUT is an empty string; name image files or folders")
    for item in map(Path, inputs):
        if item.is_dir():
            files += list_images(item)
        elif item.is_file() and item.suffix.lower() in IMAGE_SUFFIXES:
            files.append(item)
        elif item.is_file():
            raise QdukdError(f"{item} is not an image ({', '.join(IMAGE_SUFFIXES)})")
        elif item.exists():
            raise QdukdError(f"input {item} is neither a file nor a folder")
        else:
            raise QdukdError(f"input not found: {item}")
    return files


def _file_id(path: Path) -> tuple[int, int] | None:
    """What makes two paths the same file (symlinks, hard links, case): device and inode; None if absent."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino


def output_paths(inputs: list[str], files: list[Path], out: Path) -> list[Path]:
    """Where each input's result goes (``out/<stem>.png``), refusing anything that would replace an input.

    Args:
        inputs: the INPUT arguments (files and folders).
        files: the image files found in them.
        out: the ``--out`` folder.

    Raises:
        QdukdError: ``--out`` is a file or an input folder, an output would be the same file as an
            input, a folder is where an output goes, or two inputs share a stem.
    """
    if out.exists() and not out.is_dir():
        raise QdukdError(f"--out {out} is not a folder; pass a folder (it is created if missing)")
    out_id = _file_id(out)
    for folder in (Path(i) for i in inputs if Path(i).is_dir()):
        if out_id is not None and out_id == _file_id(folder):
            raise QdukdError(f"--out {out} is the input folder {folder}; write the results to another folder")
    inputs_by_id = {_file_id(f): f for f in files}
    inputs_by_id.pop(None, None)  # a missing input (a broken link) is reported when it is read
    targets = [out / f"{f.stem}.png" for f in files]
    seen: dict[Path, Path] = {}
    for src, dst in zip(files, targets):
        same = inputs_by_id.get(_file_id(dst))
        if same is not None:
            alias = "" if dst == same else f" (under another path: {dst})"
            raise QdukdError(f"the result of {src} would replace the input {same}{alias}; choose another --out")
        if dst.is_dir():
            raise QdukdError(f"cannot write {dst}: a folder of that name is in the way")
        if dst in seen:
            raise QdukdError(f"{seen[dst]} and {src} would both be written to {dst}; upscale them separately")
        seen[dst] = src
    return targets


def _save(path: Path, img: Image.Image) -> None:
    try:
        write_image(path, img)
    except OSError as e:  # disk full, folder removed or made read-only mid-batch
        raise QdukdError(f"cannot write {path}: {e.strerror or e}") from None


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m qdukd.upscale", description=__doc__.splitlines()[0])
    p.add_argument("model", help="model.onnx, model.plan (TensorRT) or a qdukd checkpoint")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files or folders of images")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="output folder, created with its parents if missing (PNG, same file stems); "
                        "never an input folder")
    p.add_argument("--tile", type=int, default=None,
                   help=f"largest LR tile side; default {OUTPUT_TILE} / scale; 0 = whole images (most memory)")
    p.add_argument("--overlap", type=int, default=32, help="LR context pixels around each tile")
    p.add_argument("--provider", choices=sorted(PROVIDERS), default="cpu", help="ONNX Runtime provider")
    p.add_argument(TRUST_FLAG, action="store_true",
                   help="allow a checkpoint whose student is code outside qdukd (import path or plugin); this "
                        "imports and runs that code: use only for checkpoints you trust")
    p.add_argument("--max-pixels", type=int, default=None, metavar="N",
                   help=f"largest input image in pixels (default {Image.MAX_IMAGE_PIXELS:,}, Pillow's guard "
                        "against decompression bombs); 0 = no limit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)

    def body() -> int:
        if (args.tile or 0) < 0 or args.overlap < 0:
            raise QdukdError("--tile and --overlap must be >= 0")
        if args.max_pixels is not None:
            set_max_pixels(args.max_pixels)
        files = collect_inputs(args.inputs)
        if not args.out.strip():  # as for an empty INPUT
            raise QdukdError("--out is empty; name the output folder (--out . for the current one)")
        out = Path(args.out)
        targets = output_paths(args.inputs, files, out)
        for f in files:  # headers only: a non-image or an oversized one stops the batch before it starts
            image_size(f)
        fn = load_runner(args.model, args.provider, trust_code=args.trust_model_code)
        scale = model_scale(fn, args.model)
        tile = args.tile if args.tile is not None else max(1, OUTPUT_TILE // scale)
        check_writable_folder(out, f"--out {out}")
        for src, dst in tqdm(list(zip(files, targets)), desc=f"x{scale}", unit="img"):
            lr = read_image(src)
            try:
                sr = upscale(fn, lr, scale, tile, args.overlap)
            except QdukdError as e:
                raise QdukdError(f"cannot upscale {src} ({lr.shape[1]}x{lr.shape[0]} px): {e}") from None
            _save(dst, sr)
            del sr  # the next image's output is assembled from scratch: do not hold two
        print(f"wrote {len(files)} image(s) to {out}")
        return EXIT_OK

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
