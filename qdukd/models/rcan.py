"""RCAN (Zhang et al., ECCV 2018) with BasicSR's module names, so its checkpoints load as they are."""

from __future__ import annotations

import torch
from torch import nn

from ..errors import QdukdError
from .common import Add, MeanShiftResidualSR, check_scale


class ChannelAttention(nn.Module):
    """Squeeze-and-excitation gate: global average pool, bottleneck, sigmoid, rescale.

    Args:
        num_feat: channels.
        reduction: bottleneck channels are ``num_feat // reduction``.
    """

    def __init__(self, num_feat: int, reduction: int = 16) -> None:
        super().__init__()
        self.attention = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Conv2d(num_feat, num_feat // reduction, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(num_feat // reduction, num_feat, 1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.attention(x)


class RCAB(nn.Module):
    """Residual channel attention block: conv-ReLU-conv-attention plus a scaled skip.

    Args:
        num_feat: channels.
        reduction: channel-attention bottleneck ratio.
        res_scale: multiplies the residual branch.
    """

    def __init__(self, num_feat: int, reduction: int = 16, res_scale: float = 1.0) -> None:
        super().__init__()
        self.res_scale = res_scale
        self.rcab = nn.Sequential(
            nn.Conv2d(num_feat, num_feat, 3, 1, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(num_feat, num_feat, 3, 1, 1),
            ChannelAttention(num_feat, reduction),
        )
        self.add = Add()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add(x, self.rcab(x) * self.res_scale)


class ResidualGroup(nn.Module):
    """A run of RCABs and a conv, wrapped in its own skip connection.

    Args:
        num_feat: channels.
        num_block: RCABs in the group.
        reduction: channel-attention bottleneck ratio.
        res_scale: residual scaling inside each RCAB.
    """

    def __init__(self, num_feat: int, num_block: int, reduction: int = 16, res_scale: float = 1.0) -> None:
        super().__init__()
        self.residual_group = nn.Sequential(*(RCAB(num_feat, reduction, res_scale) for _ in range(num_block)))
        self.conv = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.add = Add()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add(x, self.conv(self.residual_group(x)))


class RCAN(MeanShiftResidualSR):
    """Residual channel attention network (residual-in-residual with channel attention).

    The paper's model is 10 groups x 20 blocks x 64 channels, reduction 16.

    Args:
        scale: upscaling factor, 2, 3 or 4.
        n_resgroups: residual groups in the body.
        n_resblocks: RCABs per group.
        num_feat: channels of the body.
        reduction: channel-attention bottleneck ratio (``num_feat // reduction`` must be >= 1).
        res_scale: residual scaling inside each RCAB.
    """

    def __init__(self, scale: int, n_resgroups: int = 10, n_resblocks: int = 20, num_feat: int = 64,
                 reduction: int = 16, res_scale: float = 1.0) -> None:
        check_scale("RCAN", scale)
        if num_feat // reduction < 1:
            raise QdukdError(f"RCAN needs num_feat >= reduction, got num_feat={num_feat}, reduction={reduction} "
                             "(lower reduction or raise num_feat)")
        super().__init__(scale, num_feat, nn.Sequential(
            *(ResidualGroup(num_feat, n_resblocks, reduction, res_scale) for _ in range(n_resgroups))))
        self.config = {"scale": scale, "n_resgroups": n_resgroups, "n_resblocks": n_resblocks,
                       "num_feat": num_feat, "reduction": reduction, "res_scale": res_scale}
