"""FSRCNN: the fast SR convolutional network with a learned (transposed-conv) upsampler.

Dong, Loy and Tang, "Accelerating the Super-Resolution Convolutional Neural Network",
ECCV 2016. The authors released Caffe/MATLAB code (mmlab.ie.cuhk.edu.hk/projects/FSRCNN.html);
github.com/yjn870/FSRCNN-pytorch is a widely used PyTorch reimplementation.

Five parts, every conv but the last followed by a per-channel PReLU: feature extraction
(5x5, ``d`` channels), shrinking (1x1 to ``s``), ``m`` 3x3 mapping convs at ``s`` channels,
expanding (1x1 back to ``d``), and a 9x9 ``nn.ConvTranspose2d`` with stride ``scale`` that
makes the high-resolution image. The paper's model, FSRCNN(56, 12, 4), is the default;
FSRCNN-s is ``d=32, s=5, m=1``. The paper works on the luminance channel (Y); here, as for
every zoo model, input and output are RGB (3 channels), which changes only the first conv and
the transposed conv.

The transposed conv's padding (4) and output padding (``scale - 1``) make the output exactly
``scale`` times the input in both dimensions.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import check_scale

# The paper's kernel sizes: feature extraction and the transposed conv.
FIRST_KERNEL = 5
LAST_KERNEL = 9


class FSRCNN(nn.Module):
    """FSRCNN(d, s, m).

    Args:
        scale: upscaling factor, 2, 3 or 4 (the transposed conv's stride).
        d: channels of feature extraction and expanding (the "LR feature dimension").
        s: channels of the mapping convs (shrinking).
        m: number of 3x3 mapping convs.
    """

    def __init__(self, scale: int, d: int = 56, s: int = 12, m: int = 4) -> None:
        super().__init__()
        check_scale("FSRCNN", scale)
        self.scale = scale
        self.config = {"scale": scale, "d": d, "s": s, "m": m}
        self.feature = nn.Sequential(nn.Conv2d(3, d, FIRST_KERNEL, 1, FIRST_KERNEL // 2), nn.PReLU(d))
        layers: list[nn.Module] = [nn.Conv2d(d, s, 1), nn.PReLU(s)]
        for _ in range(m):
            layers += [nn.Conv2d(s, s, 3, 1, 1), nn.PReLU(s)]
        layers += [nn.Conv2d(s, d, 1), nn.PReLU(d)]
        self.body = nn.Sequential(*layers)
        self.deconv = nn.ConvTranspose2d(d, 3, LAST_KERNEL, stride=scale, padding=LAST_KERNEL // 2,
                                         output_padding=scale - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.deconv(self.body(self.feature(x)))
