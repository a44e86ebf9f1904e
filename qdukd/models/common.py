"""Building blocks shared by the architectures."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import QdukdError


class Add(nn.Module):
    """``a + b`` as a module, so a quantizer can find residual adds by type.

    It has no parameters, so it never changes a checkpoint's keys.
    """

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


# DIV2K training-set RGB mean; EDSR/RCAN/SwinIR subtract it inside forward (BasicSR convention).
DIV2K_RGB_MEAN = (0.4488, 0.4371, 0.4040)

SCALES = (2, 3, 4)


def check_scale(arch: str, scale: int) -> None:
    """Raise :class:`QdukdError` unless ``scale`` is one the zoo builds (2, 3 or 4)."""
    if scale not in SCALES:
        raise QdukdError(f"{arch} supports scale 2, 3 or 4, got {scale!r} (pass --scale 2, 3 or 4)")


class Upsample(nn.Sequential):
    """Conv + PixelShuffle stages as in BasicSR: x4 is two x2 stages, x3 a single x3 stage.

    Keeps BasicSR's indices (``upsample.0`` conv, ``upsample.2`` second conv) so checkpoints load.

    Args:
        scale: 2, 3 or 4.
        num_feat: channels in and out of every stage.
    """

    def __init__(self, scale: int, num_feat: int) -> None:
        factors = [2, 2] if scale == 4 else [scale]
        layers: list[nn.Module] = []
        for f in factors:
            layers += [nn.Conv2d(num_feat, f * f * num_feat, 3, 1, 1), nn.PixelShuffle(f)]
        super().__init__(*layers)
