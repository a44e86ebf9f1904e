"""XLSR: extremely lightweight, quantization-robust SR, winner of Mobile AI 2021 (x3, NPU track).

Ayazoglu, "Extremely Lightweight Quantization Robust Real-Time Single-Image Super Resolution
for Mobile Devices", CVPR Workshops (Mobile AI) 2021. PyTorch reference: the AIMET model zoo
(github.com/quic/aimet-model-zoo, ``XLSRRelease`` in ``aimet_zoo_torch/quicksrnet/model/models.py``).

Two branches on the image: a 3x3 conv to 16 channels (a skip), and a main branch of a 3x3 conv
to 32 channels with ReLU (the paper's four parallel 8-filter convs, which are one 32-filter
conv), a 1x1 conv, and ``num_gblocks`` Gblocks. A Gblock ("root module") is a grouped 3x3
conv (4 groups) with ReLU, then a 1x1 conv that mixes the groups. The branches are
concatenated, a 1x1 conv with ReLU reduces them to 32 channels, a 3x3 conv makes
``3 * scale**2`` channels, depth to space, and a clipped ReLU (to [0, 1]) ends the network:
the bounded output is what makes it robust to 8-bit quantization. The paper's model (x3,
3 Gblocks, 32 channels, 4 groups; about 22K parameters, "30x fewer than VDSR") is the default;
other scales change only the last conv. RGB in and out, as in the paper.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import QdukdError
from .common import check_scale

# The paper's widths: the skip branch and the 1x1 convs after the concatenation.
SKIP_FEAT = 16


class GBlock(nn.Module):
    """Grouped 3x3 conv + ReLU, then a 1x1 conv across all channels.

    Args:
        channels: channels in and out (a multiple of ``groups``).
        groups: groups of the 3x3 conv.
    """

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.conv_group = nn.Conv2d(channels, channels, 3, 1, 1, groups=groups)
        self.relu = nn.ReLU(inplace=True)
        self.conv_mix = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_mix(self.relu(self.conv_group(x)))


class XLSR(nn.Module):
    """Extremely lightweight SR network.

    Args:
        scale: upscaling factor, 2, 3 or 4.
        num_feat: channels of the main branch (a multiple of ``groups``).
        num_gblocks: Gblocks in the main branch.
        groups: groups of each Gblock's 3x3 conv.
    """

    def __init__(self, scale: int, num_feat: int = 32, num_gblocks: int = 3, groups: int = 4) -> None:
        super().__init__()
        check_scale("XLSR", scale)
        if num_feat % groups:
            raise QdukdError(f"XLSR num_feat ({num_feat}) must be a multiple of groups ({groups})")
        self.scale = scale
        self.config = {"scale": scale, "num_feat": num_feat, "num_gblocks": num_gblocks, "groups": groups}
        self.skip = nn.Conv2d(3, SKIP_FEAT, 3, 1, 1)
        self.conv_first = nn.Conv2d(3, num_feat, 3, 1, 1)
        self.relu_first = nn.ReLU(inplace=True)
        self.conv_mix = nn.Conv2d(num_feat, num_feat, 1)
        self.gblocks = nn.Sequential(*(GBlock(num_feat, groups) for _ in range(num_gblocks)))
        self.conv_fuse = nn.Conv2d(num_feat + SKIP_FEAT, num_feat, 1)
        self.relu_fuse = nn.ReLU(inplace=True)
        self.conv_last = nn.Conv2d(num_feat, 3 * scale * scale, 3, 1, 1)
        self.shuffle = nn.PixelShuffle(scale)
        self.clip = nn.Hardtanh(0.0, 1.0)  # the clipped ReLU

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        main = self.gblocks(self.conv_mix(self.relu_first(self.conv_first(x))))
        fea = self.relu_fuse(self.conv_fuse(torch.cat([main, self.skip(x)], dim=1)))
        return self.clip(self.shuffle(self.conv_last(fea)))
