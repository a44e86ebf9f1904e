"""Score any "LR uint8 image -> SR uint8 image" function over benchmark sets.

The PyTorch model, an ONNX Runtime session and a TensorRT engine are all scored by this one
loop, so their numbers are comparable by construction.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .data import load_set, set_name
from .errors import NonFiniteOutput, QdukdError
from .images import to_tensor, to_uint8
from .metrics import SSIM_WINDOW, Convention, psnr, ssim

SRFunction = Callable[[np.ndarray], np.ndarray]


@dataclass
class ImageScore:
    name: str
    psnr_y: float
    ssim_y: float


@dataclass
class SetScore:
    name: str
    psnr_y: float
    ssim_y: float
    seconds: float
    images: list[ImageScore] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def torch_sr_function(model: nn.Module, device: str | torch.device = "cpu") -> SRFunction:
    """Wrap a float [0, 1] NCHW model as a uint8 -> uint8 function (eval mode, no autograd).

    Raises (when called):
        NonFiniteOutput: the output holds NaN or infinity (rounding would hide it as black or
            white pixels).
    """
    model.eval()

    def run(lr: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = model(to_tensor(lr).to(device))
        if not bool(torch.isfinite(out).all()):
            raise NonFiniteOutput(f"the model's output holds NaN or infinity on a {lr.shape[1]}x{lr.shape[0]} "
                                  "input: its weights are broken or overflow")
        return to_uint8(out)

    return run


def _check_size(img_name: str, root: str | Path, hr: np.ndarray, border: int) -> None:
    """SSIM needs its window inside the image after the border is cropped."""
    need = SSIM_WINDOW + 2 * border
    if min(hr.shape[:2]) < need:
        raise QdukdError(f"{img_name} in {root} is {hr.shape[1]}x{hr.shape[0]} (HR); scoring at this scale needs "
                         f"at least {need}x{need} ({border} px border cropped, {SSIM_WINDOW} px SSIM window): "
                         "remove it from the set")


def check_set(root: str | Path, scale: int, crop_border: int | None = None) -> int:
    """Check that a set can be scored (it exists, every image reads and is large enough); return its size.

    Args:
        root: an HR folder or a BasicSR-layout set.
        scale: SR scale.
        crop_border: pixels cropped at each border; defaults to ``scale``.

    Raises:
        QdukdError: naming the folder or image and the fix.
    """
    border = scale if crop_border is None else crop_border
    images = load_set(root, scale)
    for img_name, _, hr in images:
        _check_size(img_name, root, hr, border)
    return len(images)


def score_set(sr_fn: SRFunction, root: str | Path, scale: int, convention: Convention = "float",
              progress: bool = True, crop_border: int | None = None) -> SetScore:
    """PSNR_Y / SSIM_Y of ``sr_fn`` on one set (HR mod-cropped, border cropped by the scale).

    Args:
        sr_fn: LR HxWx3 uint8 -> SR (H*scale)x(W*scale)x3 uint8.
        root: an HR folder or a BasicSR-layout set.
        scale: SR scale.
        convention: Y convention, ``"float"`` or ``"uint8"``.
        progress: show a progress bar.
        crop_border: pixels cropped at each border; defaults to ``scale``.
    """
    border = scale if crop_border is None else crop_border
    name = set_name(root)
    images, seconds = [], 0.0
    for img_name, lr, hr in tqdm(load_set(root, scale), desc=f"{name} x{scale}", disable=not progress,
                                 leave=False):
        _check_size(img_name, root, hr, border)
        t0 = time.perf_counter()
        sr = sr_fn(lr)
        seconds += time.perf_counter() - t0
        if sr.shape != hr.shape:
            raise QdukdError(f"{img_name}: model output {sr.shape[1]}x{sr.shape[0]} does not match HR "
                             f"{hr.shape[1]}x{hr.shape[0]}; is the model really x{scale}?")
        images.append(ImageScore(img_name, psnr(sr, hr, border, True, convention),
                                 ssim(sr, hr, border, True, convention)))
    return SetScore(name, float(np.mean([i.psnr_y for i in images])),
                    float(np.mean([i.ssim_y for i in images])), seconds, images)


def format_table(sets: list[SetScore], title: str = "") -> str:
    """A plain-text table: set, PSNR_Y, SSIM_Y, images, seconds."""
    rows = [f"{'set':<16}{'PSNR_Y':>10}{'SSIM_Y':>9}{'images':>8}{'seconds':>9}"]
    rows += [f"{s.name:<16}{s.psnr_y:>10.4f}{s.ssim_y:>9.4f}{len(s.images):>8}{s.seconds:>9.2f}" for s in sets]
    return "\n".join(([title] if title else []) + rows)
