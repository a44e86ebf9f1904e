"""ABPN: the anchor-based plain net, winner of the Mobile AI 2021 real-time SR challenge.

Du, Sun, Zhang, Wang and Wang, "Anchor-based Plain Net for Mobile Image Super-Resolution",
CVPR Workshops (Mobile AI) 2021. Authors' code (TensorFlow):
github.com/NJU-Jet/SR_Mobile_Quantization (``solvers/networks/base7.py``).

A plain stack of 3x3 convs with ReLU: one from the image to ``num_feat`` channels, ``num_block``
more at ``num_feat``, then two convs in "image space" at ``3 * scale**2`` channels (a ReLU
between them), the anchor (the input repeated ``scale**2`` times per channel) added, depth to
space, and the output clipped to [0, 1]. No other skip connections, so it quantizes well to
8 bits and runs fast on mobile NPUs. The paper's model (28 channels, 4 middle convs, x3:
42.54K parameters) is the default. RGB in and out, as in the paper.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import Add, NearestAnchor, check_scale


class ABPN(nn.Module):
    """Anchor-based plain net.

    Args:
        scale: upscaling factor, 2, 3 or 4.
        num_feat: channels of the feature convs.
        num_block: 3x3 convs between the first conv and the two image-space convs.
    """

    def __init__(self, scale: int, num_feat: int = 28, num_block: int = 4) -> None:
        super().__init__()
        check_scale("ABPN", scale)
        self.scale = scale
        self.config = {"scale": scale, "num_feat": num_feat, "num_block": num_block}
        out = 3 * scale * scale
        layers: list[nn.Module] = [nn.Conv2d(3, num_feat, 3, 1, 1), nn.ReLU(inplace=True)]
        for _ in range(num_block):
            layers += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.ReLU(inplace=True)]
        layers += [nn.Conv2d(num_feat, out, 3, 1, 1), nn.ReLU(inplace=True), nn.Conv2d(out, out, 3, 1, 1)]
        self.body = nn.Sequential(*layers)
        self.anchor = NearestAnchor(scale)
        self.add = Add()
        self.shuffle = nn.PixelShuffle(scale)
        self.clip = nn.Hardtanh(0.0, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.clip(self.shuffle(self.add(self.anchor(x), self.body(x))))
