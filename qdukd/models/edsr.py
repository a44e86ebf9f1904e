"""EDSR (Lim et al., CVPRW 2017) with BasicSR's module names, so its checkpoints load as they are."""

from __future__ import annotations

import torch
from torch import nn

from .common import Add, MeanShiftResidualSR, check_scale


class ResBlock(nn.Module):
    """conv-ReLU-conv with a scaled residual and no batch norm.

    Args:
        num_feat: channels.
        res_scale: multiplies the residual branch (0.1 keeps the 256-channel model stable).
    """

    def __init__(self, num_feat: int, res_scale: float = 1.0) -> None:
        super().__init__()
        self.res_scale = res_scale
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.add = Add()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add(x, self.conv2(self.relu(self.conv1(x))) * self.res_scale)


class EDSR(MeanShiftResidualSR):
    """Enhanced deep residual network for single-image super-resolution.

    The baseline is 64 channels x 16 blocks; the large model is 256 x 32 with ``res_scale=0.1``.

    Args:
        scale: upscaling factor, 2, 3 or 4.
        num_feat: channels of the body.
        num_block: residual blocks in the body.
        res_scale: residual scaling inside each block.
    """

    def __init__(self, scale: int, num_feat: int = 64, num_block: int = 16, res_scale: float = 1.0) -> None:
        check_scale("EDSR", scale)
        super().__init__(scale, num_feat, nn.Sequential(*(ResBlock(num_feat, res_scale) for _ in range(num_block))))
        self.config = {"scale": scale, "num_feat": num_feat, "num_block": num_block, "res_scale": res_scale}
