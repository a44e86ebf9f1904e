"""SPAN: swift parameter-free attention network, winner of the NTIRE 2024 efficient SR challenge.

Wan, Yu, Li, Chen, Zou, Liu, Yin and Zuo, "Swift Parameter-free Attention Network for Efficient
Super-Resolution", CVPR Workshops (NTIRE) 2024. Authors' code: github.com/hongyuanyu/SPAN
(``basicsr/archs/span_arch.py``); module names follow it.

A conv to ``num_feat`` channels, ``num_block`` swift parameter-free attention blocks (SPAB), a
conv, a 1x1 conv over the concatenation of four maps (the first conv's output, the last
block's convolved output, the first block's output and the last block's activated first
conv), and a conv + ``nn.PixelShuffle`` upsampler. A SPAB is three 3x3 convs (SiLU between them), a residual
from its input, and an attention with no parameters: the sum is multiplied by
``sigmoid(out) - 0.5`` of the last conv's output.

Every 3x3 conv except the upsampler's is a re-parameterizable ``Conv3XC``: trained as a 1x1
conv (to ``2x`` the input channels), a 3x3 conv (to ``2x`` the output channels) and a 1x1 conv,
applied to the zero-padded input, plus a 1x1 skip conv, and deployed as one 3x3 conv. Padding
*before* the first 1x1 conv keeps its bias at the border, so the collapse is exact.

Collapse contract (as :mod:`~qdukd.models.sesr`): ``collapsed=True`` builds the deployed form
(each ``Conv3XC`` holds only ``eval_conv``, the authors' name); :meth:`SPAN.collapse` converts an
expanded model in place, exactly up to float rounding (float64 products), is idempotent, sets
``config["collapsed"] = True`` and leaves a state dict that loads into ``collapsed=True``. The
authors' checkpoints hold both forms' weights: load them with ``strict=False`` into either.

Like the authors' network, ``forward`` subtracts the DIV2K mean and multiplies by 255 on the way
in and returns the upsampler's output as it is (the network learns [0, 1] output). Defaults:
52 channels and 6 SPABs, the paper's SPAN (498K parameters at x4, collapsed); the authors'
code defaults to 48 channels (426K). RGB in and out, as in the paper.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import DIV2K_RGB_MEAN, Add, check_scale

# Expansion of Conv3XC's hidden maps (the authors' ``gain1``).
GAIN = 2


class Conv3XC(nn.Module):
    """A 3x3 conv trained as 1x1 -> 3x3 -> 1x1 plus a 1x1 skip, collapsible into one 3x3 conv.

    Args:
        c_in: input channels.
        c_out: output channels.
        collapsed: build only the deployed conv (``eval_conv``).
    """

    def __init__(self, c_in: int, c_out: int, collapsed: bool) -> None:
        super().__init__()
        self.collapsed = collapsed
        if collapsed:
            self.eval_conv = nn.Conv2d(c_in, c_out, 3, 1, 1)
        else:
            self.sk = nn.Conv2d(c_in, c_out, 1)
            self.pad = nn.ZeroPad2d(1)
            self.conv = nn.Sequential(nn.Conv2d(c_in, c_in * GAIN, 1), nn.Conv2d(c_in * GAIN, c_out * GAIN, 3),
                                      nn.Conv2d(c_out * GAIN, c_out, 1))
            self.add = Add()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.collapsed:
            return self.eval_conv(x)
        return self.add(self.conv(self.pad(x)), self.sk(x))

    @torch.no_grad()
    def collapse(self) -> None:
        """Replace the expanded convs by the one 3x3 conv computing the same function; idempotent."""
        if self.collapsed:
            return
        first, mid, last = self.conv
        w0, b0 = first.weight[:, :, 0, 0].double(), first.bias.double()
        w1, b1 = mid.weight.double(), mid.bias.double()
        w2, b2 = last.weight[:, :, 0, 0].double(), last.bias.double()
        # The padded border holds zeros, so after the first 1x1 conv every pixel, border included,
        # carries b0: the 3x3 conv sees it under all nine taps.
        w = torch.einsum("om,mekl,ei->oikl", w2, w1, w0)
        b = w2 @ (w1.sum(dim=(2, 3)) @ b0 + b1) + b2
        w[:, :, 1, 1] += self.sk.weight[:, :, 0, 0].double()
        b += self.sk.bias.double()
        ref = mid.weight
        conv = nn.Conv2d(w.shape[1], w.shape[0], 3, 1, 1, device=ref.device, dtype=ref.dtype)
        conv.weight.copy_(w.to(ref.dtype))
        conv.bias.copy_(b.to(ref.dtype))
        del self.sk, self.pad, self.conv, self.add
        self.eval_conv = conv
        self.collapsed = True


class SPAB(nn.Module):
    """Swift parameter-free attention block.

    Args:
        channels: channels in and out.
        collapsed: build its convs in the deployed form.
    """

    def __init__(self, channels: int, collapsed: bool) -> None:
        super().__init__()
        self.c1_r = Conv3XC(channels, channels, collapsed)
        self.c2_r = Conv3XC(channels, channels, collapsed)
        self.c3_r = Conv3XC(channels, channels, collapsed)
        self.silu1 = nn.SiLU()
        self.silu2 = nn.SiLU()
        self.sigmoid = nn.Sigmoid()
        self.add = Add()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The block's output and its first conv's activated output (SPAN concatenates the last block's).

        The authors' code returns the first conv's output after its in-place SiLU, so the
        activated map is what their weights were trained with.
        """
        out1 = self.silu1(self.c1_r(x))
        out3 = self.c3_r(self.silu2(self.c2_r(out1)))
        return self.add(out3, x) * (self.sigmoid(out3) - 0.5), out1


class SPAN(nn.Module):
    """Swift parameter-free attention network.

    Args:
        scale: upscaling factor, 2, 3 or 4.
        num_feat: channels between the blocks.
        num_block: SPABs (at least 1).
        collapsed: build the deployed form (one 3x3 conv per ``Conv3XC``) directly.
    """

    def __init__(self, scale: int, num_feat: int = 52, num_block: int = 6, collapsed: bool = False) -> None:
        super().__init__()
        check_scale("SPAN", scale)
        self.scale = scale
        self.config = {"scale": scale, "num_feat": num_feat, "num_block": num_block, "collapsed": collapsed}
        self.register_buffer("mean", torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.conv_1 = Conv3XC(3, num_feat, collapsed)
        # block_1 ... block_N: the authors' names.
        for i in range(1, num_block + 1):
            self.add_module(f"block_{i}", SPAB(num_feat, collapsed))
        self.num_block = num_block
        self.conv_2 = Conv3XC(num_feat, num_feat, collapsed)
        self.conv_cat = nn.Conv2d(num_feat * 4, num_feat, 1)
        self.upsampler = nn.Sequential(nn.Conv2d(num_feat, 3 * scale * scale, 3, 1, 1), nn.PixelShuffle(scale))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.conv_1((x - self.mean) * 255.0)
        out, first = self.block_1(fea)
        out_b1 = out
        for i in range(2, self.num_block + 1):
            out, first = getattr(self, f"block_{i}")(out)
        out = self.conv_cat(torch.cat([fea, self.conv_2(out), out_b1, first], dim=1))
        return self.upsampler(out)

    def collapse(self) -> None:
        """Collapse every ``Conv3XC`` in place (idempotent); the model then equals ``collapsed=True``'s."""
        for block in [m for m in self.modules() if isinstance(m, Conv3XC)]:
            block.collapse()
        self.config["collapsed"] = True
