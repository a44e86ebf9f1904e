"""ESPCN: the efficient sub-pixel convolutional network.

Shi, Caballero, Huszár, Totz, Aitken, Bishop, Rueckert and Wang, "Real-Time Single Image and
Video Super-Resolution Using an Efficient Sub-Pixel Convolutional Neural Network", CVPR 2016.
The authors released no code; github.com/yjn870/ESPCN-pytorch is a widely used PyTorch
reimplementation.

Three convs on the low-resolution image, the last one making ``3 * scale**2`` channels that
``nn.PixelShuffle`` (the paper's "periodic shuffling") rearranges into the output. The
paper's configuration is the default: ``(f1, n1) = (5, 64)``, ``(f2, n2) = (3, 32)``,
``f3 = 3``, tanh activations. The paper works on the luminance channel; here, as for every
zoo model, input and output are RGB (3 channels), which changes only the first and last convs.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import check_scale


class ESPCN(nn.Module):
    """Efficient sub-pixel CNN.

    Args:
        scale: upscaling factor, 2, 3 or 4.
        num_feat: channels of the first conv (``n1``).
        num_feat2: channels of the second conv (``n2``).
    """

    def __init__(self, scale: int, num_feat: int = 64, num_feat2: int = 32) -> None:
        super().__init__()
        check_scale("ESPCN", scale)
        self.scale = scale
        self.config = {"scale": scale, "num_feat": num_feat, "num_feat2": num_feat2}
        self.conv1 = nn.Conv2d(3, num_feat, 5, 1, 2)
        self.act1 = nn.Tanh()
        self.conv2 = nn.Conv2d(num_feat, num_feat2, 3, 1, 1)
        self.act2 = nn.Tanh()
        self.conv3 = nn.Conv2d(num_feat2, 3 * scale * scale, 3, 1, 1)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act2(self.conv2(self.act1(self.conv1(x))))
        return self.shuffle(self.conv3(x))
