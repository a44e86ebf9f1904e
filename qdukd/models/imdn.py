"""IMDN (Hui et al., ACM MM 2019): information multi-distillation network.

Module names follow the authors' code (github.com/Zheng222/IMDN) so their released
``IMDN_x{2,3,4}.pth`` load with ``strict=True``. It works on [0, 1] RGB without mean shift.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import QdukdError
from .common import Add, check_scale

# The authors' LeakyReLU slope.
NEG_SLOPE = 0.05


class ContrastChannelAttention(nn.Module):
    """Channel gate driven by each channel's contrast (std) plus its mean.

    Args:
        channels: channels in and out.
        reduction: bottleneck channels are ``channels // reduction``.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.conv_du = nn.Sequential(
            nn.Conv2d(channels, channels // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels // reduction, channels, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean((2, 3), keepdim=True)
        std = (x - mean).pow(2).mean((2, 3), keepdim=True).sqrt()
        return x * self.conv_du(std + mean)


class IMDB(nn.Module):
    """Information multi-distillation block.

    Three 3x3 convs each keep a quarter of their output channels ("distilled") and pass the
    rest on; a fourth conv makes the last quarter. The four quarters are concatenated,
    gated by contrast-aware channel attention, fused by a 1x1 conv and added to the input.

    Args:
        channels: block width; must be a multiple of 4.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.distilled = channels // 4
        self.remaining = channels - self.distilled
        self.c1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.c2 = nn.Conv2d(self.remaining, channels, 3, 1, 1)
        self.c3 = nn.Conv2d(self.remaining, channels, 3, 1, 1)
        self.c4 = nn.Conv2d(self.remaining, self.distilled, 3, 1, 1)
        self.act = nn.LeakyReLU(NEG_SLOPE, inplace=True)
        self.c5 = nn.Conv2d(channels, channels, 1)
        self.cca = ContrastChannelAttention(channels)
        self.add = Add()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        split = (self.distilled, self.remaining)
        d1, r1 = torch.split(self.act(self.c1(x)), split, dim=1)
        d2, r2 = torch.split(self.act(self.c2(r1)), split, dim=1)
        d3, r3 = torch.split(self.act(self.c3(r2)), split, dim=1)
        d4 = self.c4(r3)
        return self.add(x, self.c5(self.cca(torch.cat([d1, d2, d3, d4], dim=1))))


class IMDN(nn.Module):
    """Information multi-distillation network (the paper's x2/x3/x4 model: 64 channels, 6 blocks).

    Blocks are attributes ``IMDB1`` .. ``IMDB{n}`` (the released checkpoints' names); every
    block's output feeds a 1x1 fusion conv, then a 3x3 conv, a global skip and one
    conv + PixelShuffle upsampler.

    Args:
        scale: upscaling factor, 2, 3 or 4.
        num_feat: channels; a multiple of 4 and at least 16 (channel attention squeezes by 16).
        num_modules: number of IMDBs.
    """

    def __init__(self, scale: int, num_feat: int = 64, num_modules: int = 6) -> None:
        super().__init__()
        check_scale("IMDN", scale)
        if num_feat % 4 or num_feat < 16:
            raise QdukdError(f"IMDN needs num_feat to be a multiple of 4 and >= 16, got {num_feat} (try 64)")
        self.scale = scale
        self.config = {"scale": scale, "num_feat": num_feat, "num_modules": num_modules}

        self.fea_conv = nn.Conv2d(3, num_feat, 3, 1, 1)
        self.block_names = [f"IMDB{i}" for i in range(1, num_modules + 1)]
        for name in self.block_names:
            self.add_module(name, IMDB(num_feat))
        self.c = nn.Sequential(nn.Conv2d(num_feat * num_modules, num_feat, 1), nn.LeakyReLU(NEG_SLOPE, inplace=True))
        self.LR_conv = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.add = Add()
        self.upsampler = nn.Sequential(nn.Conv2d(num_feat, 3 * scale * scale, 3, 1, 1), nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.fea_conv(x)
        outs = []
        out = fea
        for name in self.block_names:
            out = getattr(self, name)(out)
            outs.append(out)
        out = self.add(fea, self.LR_conv(self.c(torch.cat(outs, dim=1))))
        return self.upsampler(out)
