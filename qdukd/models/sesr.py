"""SESR: super-efficient SR with collapsible linear blocks (M3, M5, M7, M11, XL).

Bhardwaj, Milosavljevic, O'Neil, Gope, Matas, Chalfin, Suda, Meng and Loh, "Collapsible
Linear Blocks for Super-Efficient Super Resolution", MLSys 2022. Authors' code (TensorFlow):
github.com/ARM-software/sesr; a PyTorch port is in the AIMET model zoo
(github.com/quic/aimet-model-zoo, ``SESRRelease``).

A *linear block* is a kxk conv that expands to ``expand`` channels followed by a 1x1 conv that
projects to the output channels, with no activation between them, so it equals a single kxk
conv. SESR is trained in this expanded (over-parameterized) form and deployed collapsed:

- head: 5x5 linear block, image -> ``num_feat`` channels (no activation);
- body: ``num_block`` 3x3 linear blocks at ``num_feat`` channels, each with a short residual
  (``x + block(x)``, which collapses into the kernel's centre) and a per-channel PReLU;
- a long residual from the head's output around the body;
- tail: 5x5 linear block to ``3 * scale**2`` channels, plus the anchor (the input repeated
  ``scale**2`` times per channel), depth to space, output clipped to [0, 1].

Variants (registry names, the paper's ``f`` and ``m``; ``expand`` from the reference's
training commands): ``sesr_m3`` / ``sesr_m5`` / ``sesr_m7`` (f=16, m=3/5/7, expand 256),
``sesr_m11`` (f=16, m=11, expand 64), ``sesr_xl`` (f=32, m=11, expand 64). SESR-M5 is the
paper's main model. The paper counts the collapsed convs' weights: SESR-M5 has 13.52K (x2) on
the luminance channel.

Collapse contract: ``collapsed=True`` builds the deployed form directly (each linear block one
``nn.Conv2d`` named ``<block>.conv``); :meth:`SESR.collapse` turns an expanded model into it in
place, exactly up to float rounding (the product is formed in float64), is idempotent, sets
``config["collapsed"] = True`` and leaves a state dict that loads into
``build_model(name, scale, collapsed=True)``.

Deviations: RGB in and out (the paper and the reference work on Y; only the head and tail
convs change). The reference subtracts 0.5 from the input before the head; here the head's
bias absorbs that shift (exactly, except where the zero padding meets the border).
``prelu=False`` uses ReLU, as the reference does for quantization-aware training.
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import QdukdError
from .common import Add, NearestAnchor, check_scale

# The paper's kernel sizes: 5x5 head and tail, 3x3 body.
OUTER_KERNEL = 5
BODY_KERNEL = 3


class LinearBlock(nn.Module):
    """kxk conv to ``expand`` channels + 1x1 conv to ``out_ch`` (optionally + the input), or its collapsed conv.

    Args:
        in_ch: input channels.
        out_ch: output channels.
        kernel_size: odd kernel size of the first conv.
        expand: channels between the two convs (unused when collapsed).
        residual: add the input (needs ``in_ch == out_ch``).
        collapsed: build the single collapsed conv.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel_size: int, expand: int, residual: bool, collapsed: bool) -> None:
        super().__init__()
        if residual and in_ch != out_ch:
            raise QdukdError(f"a residual linear block needs as many input as output channels, got {in_ch} -> {out_ch}")
        self.residual = residual
        self.collapsed = collapsed
        pad = kernel_size // 2
        if collapsed:
            self.conv = nn.Conv2d(in_ch, out_ch, kernel_size, 1, pad)
        else:
            self.expand = nn.Conv2d(in_ch, expand, kernel_size, 1, pad, bias=False)
            self.squeeze = nn.Conv2d(expand, out_ch, 1)
            if residual:
                self.add = Add()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.collapsed:
            return self.conv(x)
        y = self.squeeze(self.expand(x))
        return self.add(x, y) if self.residual else y

    @torch.no_grad()
    def collapse(self) -> None:
        """Replace the two convs (and the residual) by one conv computing the same function; idempotent."""
        if self.collapsed:
            return
        w1 = self.expand.weight
        w = torch.einsum("oe,eikl->oikl", self.squeeze.weight[:, :, 0, 0].double(), w1.double())
        if self.residual:
            centre = w.shape[-1] // 2
            idx = torch.arange(w.shape[0], device=w.device)
            w[idx, idx, centre, centre] += 1.0
        conv = nn.Conv2d(w.shape[1], w.shape[0], w.shape[-1], 1, w.shape[-1] // 2, device=w1.device, dtype=w1.dtype)
        conv.weight.copy_(w.to(w1.dtype))
        conv.bias.copy_(self.squeeze.bias)
        del self.expand, self.squeeze
        if self.residual:
            del self.add
        self.conv = conv
        self.collapsed = True


class SESR(nn.Module):
    """SESR with any width and depth (the registry's variants are the subclasses below).

    Args:
        scale: upscaling factor, 2, 3 or 4.
        num_feat: channels between the blocks (the paper's ``f``).
        num_block: 3x3 linear blocks in the body (the paper's ``m``).
        expand: channels inside each linear block in the expanded form.
        prelu: per-channel PReLU after each body block (the paper); False: ReLU.
        collapsed: build the deployed form (one conv per linear block) directly.
    """

    def __init__(self, scale: int, num_feat: int = 16, num_block: int = 5, expand: int = 256, prelu: bool = True,
                 collapsed: bool = False) -> None:
        super().__init__()
        check_scale(type(self).__name__, scale)
        self.scale = scale
        self.config = {"scale": scale, "num_feat": num_feat, "num_block": num_block, "expand": expand,
                       "prelu": prelu, "collapsed": collapsed}
        self.head = LinearBlock(3, num_feat, OUTER_KERNEL, expand, False, collapsed)
        body: list[nn.Module] = []
        for _ in range(num_block):
            body += [LinearBlock(num_feat, num_feat, BODY_KERNEL, expand, True, collapsed),
                     nn.PReLU(num_feat) if prelu else nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*body)
        self.add_long = Add()
        self.tail = LinearBlock(num_feat, 3 * scale * scale, OUTER_KERNEL, expand, False, collapsed)
        self.anchor = NearestAnchor(scale)
        self.add_anchor = Add()
        self.shuffle = nn.PixelShuffle(scale)
        self.clip = nn.Hardtanh(0.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fea = self.head(x)
        fea = self.add_long(self.body(fea), fea)
        out = self.add_anchor(self.anchor(x), self.tail(fea))
        return self.clip(self.shuffle(out))

    def collapse(self) -> None:
        """Collapse every linear block in place (idempotent); the model then equals ``collapsed=True``'s."""
        for block in [m for m in self.modules() if isinstance(m, LinearBlock)]:
            block.collapse()
        self.config["collapsed"] = True


class SESRM3(SESR):
    """SESR-M3: f=16, m=3 (see :class:`SESR`)."""

    def __init__(self, scale: int, num_feat: int = 16, num_block: int = 3, expand: int = 256, prelu: bool = True,
                 collapsed: bool = False) -> None:
        super().__init__(scale, num_feat, num_block, expand, prelu, collapsed)


class SESRM5(SESR):
    """SESR-M5, the paper's main model: f=16, m=5 (see :class:`SESR`)."""

    def __init__(self, scale: int, num_feat: int = 16, num_block: int = 5, expand: int = 256, prelu: bool = True,
                 collapsed: bool = False) -> None:
        super().__init__(scale, num_feat, num_block, expand, prelu, collapsed)


class SESRM7(SESR):
    """SESR-M7: f=16, m=7 (see :class:`SESR`)."""

    def __init__(self, scale: int, num_feat: int = 16, num_block: int = 7, expand: int = 256, prelu: bool = True,
                 collapsed: bool = False) -> None:
        super().__init__(scale, num_feat, num_block, expand, prelu, collapsed)


class SESRM11(SESR):
    """SESR-M11: f=16, m=11, expanded to 64 channels (see :class:`SESR`)."""

    def __init__(self, scale: int, num_feat: int = 16, num_block: int = 11, expand: int = 64, prelu: bool = True,
                 collapsed: bool = False) -> None:
        super().__init__(scale, num_feat, num_block, expand, prelu, collapsed)


class SESRXL(SESR):
    """SESR-XL: f=32, m=11, expanded to 64 channels (see :class:`SESR`)."""

    def __init__(self, scale: int, num_feat: int = 32, num_block: int = 11, expand: int = 64, prelu: bool = True,
                 collapsed: bool = False) -> None:
        super().__init__(scale, num_feat, num_block, expand, prelu, collapsed)
