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


class MeanShiftResidualSR(nn.Module):
    """The outer network EDSR and RCAN share (BasicSR module names, so their checkpoints load).

    ``(x - mean) * 255 -> conv_first -> + conv_after_body(body(.)) -> upsample -> conv_last``,
    then back to [0, 1]. The mean is a constant, not a weight: BasicSR checkpoints do not store it.

    Args:
        scale: 2, 3 or 4.
        num_feat: channels of the body.
        body: the architecture's body (a stack of residual blocks or groups).
    """

    def __init__(self, scale: int, num_feat: int, body: nn.Module) -> None:
        super().__init__()
        self.scale = scale
        self.register_buffer("mean", torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.conv_first = nn.Conv2d(3, num_feat, 3, 1, 1)
        self.body = body
        self.conv_after_body = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.add = Add()
        self.upsample = Upsample(scale, num_feat)
        self.conv_last = nn.Conv2d(num_feat, 3, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.mean) * 255.0
        x = self.conv_first(x)
        x = self.add(x, self.conv_after_body(self.body(x)))
        x = self.conv_last(self.upsample(x))
        return x / 255.0 + self.mean


class NearestAnchor(nn.Module):
    """The input repeated ``scale**2`` times per channel, the "anchor" of plain mobile SR nets.

    Added to the last conv's ``C * scale**2`` channels before ``nn.PixelShuffle(scale)``, it is
    nearest-neighbour upsampling of the input, so the convs learn only a residual (ABPN,
    QuickSRNet, SESR). ``torch.repeat_interleave`` exports to ONNX as Unsqueeze/Tile/Reshape,
    without control flow. No parameters.

    Args:
        scale: upscaling factor.
    """

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.repeats = scale * scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.repeat_interleave(x, self.repeats, dim=1)
