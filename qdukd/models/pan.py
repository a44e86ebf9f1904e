"""PAN (Zhao et al., ECCVW 2020): pixel attention network.

Module names follow the authors' code (github.com/zhaohengyuan1/PAN) so their released
``PAN_x{2,3,4}.pth`` load with ``strict=True``. It works on [0, 1] RGB without mean shift.
Unlike the other models it upsamples features by nearest interpolation + conv (not
PixelShuffle) and adds a bilinear upscale of the input, exactly as the released weights expect.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .common import Add, check_scale

# The authors' LeakyReLU slope.
NEG_SLOPE = 0.2


class PixelAttention(nn.Module):
    """Per-pixel, per-channel sigmoid gate from a 1x1 conv.

    Args:
        channels: channels in and out.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv(x))


class PAConv(nn.Module):
    """3x3 conv gated by pixel attention, then another 3x3 conv.

    Args:
        channels: channels in and out.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.k2 = nn.Conv2d(channels, channels, 1)
        self.k3 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
        self.k4 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.k4(self.k3(x) * torch.sigmoid(self.k2(x)))


class SCPA(nn.Module):
    """Self-calibrated block with pixel attention.

    Two half-width branches: a plain 3x3 conv and a PAConv; concatenated, fused by a 1x1
    conv and added to the input.

    Args:
        channels: block width (even).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.conv1_a = nn.Conv2d(channels, half, 1, bias=False)
        self.conv1_b = nn.Conv2d(channels, half, 1, bias=False)
        # A Sequential only because the released checkpoints name this conv ``k1.0``.
        self.k1 = nn.Sequential(nn.Conv2d(half, half, 3, 1, 1, bias=False))
        self.PAConv = PAConv(half)
        self.conv3 = nn.Conv2d(half * 2, channels, 1, bias=False)
        self.lrelu = nn.LeakyReLU(NEG_SLOPE, inplace=True)
        self.add = Add()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.lrelu(self.k1(self.lrelu(self.conv1_a(x))))
        b = self.lrelu(self.PAConv(self.lrelu(self.conv1_b(x))))
        return self.add(x, self.conv3(torch.cat([a, b], dim=1)))


class PAN(nn.Module):
    """Pixel attention network (the paper's model: 40 channels, 24 upsampling channels, 16 SCPAs).

    Args:
        scale: upscaling factor, 2, 3 or 4 (x4 is two x2 stages, with a second set of
            ``upconv2``/``att2``/``HRconv2`` weights).
        num_feat: channels of the trunk (even).
        num_up_feat: channels of the upsampling stages.
        num_block: SCPA blocks in the trunk.
    """

    def __init__(self, scale: int, num_feat: int = 40, num_up_feat: int = 24, num_block: int = 16) -> None:
        super().__init__()
        check_scale("PAN", scale)
        self.scale = scale
        self.config = {"scale": scale, "num_feat": num_feat, "num_up_feat": num_up_feat, "num_block": num_block}

        self.conv_first = nn.Conv2d(3, num_feat, 3, 1, 1)
        self.SCPA_trunk = nn.Sequential(*(SCPA(num_feat) for _ in range(num_block)))
        self.trunk_conv = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.add_trunk = Add()

        self.upconv1 = nn.Conv2d(num_feat, num_up_feat, 3, 1, 1)
        self.att1 = PixelAttention(num_up_feat)
        self.HRconv1 = nn.Conv2d(num_up_feat, num_up_feat, 3, 1, 1)
        if scale == 4:
            self.upconv2 = nn.Conv2d(num_up_feat, num_up_feat, 3, 1, 1)
            self.att2 = PixelAttention(num_up_feat)
            self.HRconv2 = nn.Conv2d(num_up_feat, num_up_feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(num_up_feat, 3, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(NEG_SLOPE, inplace=True)
        self.add_image = Add()

    def _up(self, x: torch.Tensor, factor: int, upconv: nn.Module, att: nn.Module, hrconv: nn.Module) -> torch.Tensor:
        x = upconv(F.interpolate(x, scale_factor=factor, mode="nearest"))
        return self.lrelu(hrconv(self.lrelu(att(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.conv_first(x)
        fea = self.add_trunk(fea, self.trunk_conv(self.SCPA_trunk(fea)))
        if self.scale == 4:
            fea = self._up(fea, 2, self.upconv1, self.att1, self.HRconv1)
            fea = self._up(fea, 2, self.upconv2, self.att2, self.HRconv2)
        else:
            fea = self._up(fea, self.scale, self.upconv1, self.att1, self.HRconv1)
        base = F.interpolate(x, scale_factor=self.scale, mode="bilinear", align_corners=False)
        return self.add_image(self.conv_last(fea), base)
