"""RLFN: residual local feature network, winner of the NTIRE 2022 efficient SR challenge (runtime track).

Kong, Li, Chen, Liu, Wang, Xu, Cao, Xiao, Wang and Huang, "Residual Local Feature Network for
Efficient Super-Resolution", CVPR Workshops (NTIRE) 2022. Authors' code and weights:
github.com/bytedance/RLFN. Module names follow it, so its ``rlfn_x{2,4}.pth`` and
``rlfn_s_x{2,4}.pth`` load with ``strict=True`` (into ``rlfn`` and ``rlfn_s``).

A 3x3 conv to ``num_feat`` channels, ``num_block`` residual local feature blocks (RLFB), a 3x3
conv with a residual from the first conv's output, and a conv + ``nn.PixelShuffle`` upsampler.
An RLFB is three 3x3 convs with LeakyReLU(0.05) and a residual, a 1x1 conv, and enhanced spatial
attention (ESA): a 1x1 reduction to ``esa_feat`` channels, a strided 3x3 conv, 7x7/3 max
pooling, a 3x3 conv, bilinear upsampling back to the block's size, a 1x1 conv from the
reduction added, a 1x1 expansion and a sigmoid gate on the block's features.

Variants: ``rlfn`` (the paper's RLFN: 52 channels, 6 blocks, ESA 16; 0.543M parameters at x4)
and ``rlfn_s`` (RLFN-S: 48 channels). The NTIRE 2022 challenge entry (0.317M at x4) is
``build_model("rlfn", 4, num_feat=46, mid_feat=48, num_block=4)``.

The authors' network works on [0, 255]; ``forward`` scales the [0, 1] input up and the output
back down, so their weights work unchanged. RGB in and out, as in the paper. ESA's pooled
branch needs an input of at least 15x15 pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import QdukdError
from .common import Add, check_scale

# The authors' LeakyReLU slope and ESA pooling.
NEG_SLOPE = 0.05
POOL_KERNEL, POOL_STRIDE = 7, 3
# Smallest input side ESA's strided conv + pooling accept.
MIN_SIZE = 15


class ESA(nn.Module):
    """Enhanced spatial attention as RLFN uses it (RFANet's ESA without its ``conv_max``/``conv3_``).

    Args:
        esa_feat: channels of the attention branch.
        channels: channels of the gated features.
    """

    def __init__(self, esa_feat: int, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, esa_feat, 1)
        self.conv_f = nn.Conv2d(esa_feat, esa_feat, 1)
        self.conv2 = nn.Conv2d(esa_feat, esa_feat, 3, 2, 0)
        self.pool = nn.MaxPool2d(POOL_KERNEL, POOL_STRIDE)
        self.conv3 = nn.Conv2d(esa_feat, esa_feat, 3, 1, 1)
        self.add = Add()
        self.conv4 = nn.Conv2d(esa_feat, channels, 1)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        reduced = self.conv1(x)
        low = self.conv3(self.pool(self.conv2(reduced)))
        low = F.interpolate(low, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return x * self.sigmoid(self.conv4(self.add(low, self.conv_f(reduced))))


class RLFB(nn.Module):
    """Residual local feature block.

    Args:
        channels: channels in and out.
        mid_feat: channels of the three 3x3 convs' hidden maps.
        esa_feat: channels of the ESA branch.
    """

    def __init__(self, channels: int, mid_feat: int, esa_feat: int) -> None:
        super().__init__()
        self.c1_r = nn.Conv2d(channels, mid_feat, 3, 1, 1)
        self.c2_r = nn.Conv2d(mid_feat, mid_feat, 3, 1, 1)
        self.c3_r = nn.Conv2d(mid_feat, channels, 3, 1, 1)
        self.act = nn.LeakyReLU(NEG_SLOPE, inplace=True)
        self.add = Add()
        self.c5 = nn.Conv2d(channels, channels, 1)
        self.esa = ESA(esa_feat, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.act(self.c3_r(self.act(self.c2_r(self.act(self.c1_r(x))))))
        return self.esa(self.c5(self.add(out, x)))


class RLFN(nn.Module):
    """Residual local feature network.

    Args:
        scale: upscaling factor, 2, 3 or 4.
        num_feat: channels between the blocks.
        num_block: RLFBs.
        esa_feat: channels of each ESA branch.
        mid_feat: hidden channels of each RLFB's 3x3 convs; 0 means ``num_feat``.
    """

    def __init__(self, scale: int, num_feat: int = 52, num_block: int = 6, esa_feat: int = 16,
                 mid_feat: int = 0) -> None:
        super().__init__()
        check_scale(type(self).__name__, scale)
        self.scale = scale
        self.config = {"scale": scale, "num_feat": num_feat, "num_block": num_block, "esa_feat": esa_feat,
                       "mid_feat": mid_feat}
        self.conv_1 = nn.Conv2d(3, num_feat, 3, 1, 1)
        # block_1 ... block_N: the authors' names.
        for i in range(1, num_block + 1):
            self.add_module(f"block_{i}", RLFB(num_feat, mid_feat or num_feat, esa_feat))
        self.num_block = num_block
        self.conv_2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.add = Add()
        self.upsampler = nn.Sequential(nn.Conv2d(num_feat, 3 * scale * scale, 3, 1, 1), nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if min(x.shape[-2:]) < MIN_SIZE:
            raise QdukdError(f"RLFN needs an input of at least {MIN_SIZE}x{MIN_SIZE} pixels "
                             f"(ESA pools {POOL_KERNEL}x{POOL_KERNEL}), got {tuple(x.shape[-2:])}")
        fea = self.conv_1(x * 255.0)
        out = fea
        for i in range(1, self.num_block + 1):
            out = getattr(self, f"block_{i}")(out)
        out = self.add(self.conv_2(out), fea)
        return self.upsampler(out) / 255.0


class RLFNS(RLFN):
    """RLFN-S: 48 channels (see :class:`RLFN`)."""

    def __init__(self, scale: int, num_feat: int = 48, num_block: int = 6, esa_feat: int = 16,
                 mid_feat: int = 0) -> None:
        super().__init__(scale, num_feat, num_block, esa_feat, mid_feat)
