"""QuickSRNet: plain SR for real-time use on mobile platforms (Small, Medium, Large).

Berger, Dhingra, Mercier, Savani, Panchal and Porikli, "QuickSRNet: Plain Single-Image
Super-Resolution Architecture for Faster Inference on Mobile Platforms", CVPR Workshops 2023.
Reference code (by the authors' group, with released weights): the AIMET model zoo,
github.com/quic/aimet-model-zoo (``aimet_zoo_torch/quicksrnet/model/models.py``).

A plain stack of 3x3 convs, each followed by a ReLU clipped to [0, 1] (``nn.Hardtanh(0, 1)``),
then a 3x3 conv to ``3 * scale**2`` channels, an optional input-to-output (ITO) connection,
the output clipped to [0, 1], and depth to space. No residual connections inside: instead,
every hidden conv starts as the identity plus its random init (the first ``min(in, out)``
channels pass through), and, without the ITO connection, the last conv starts as the anchor
(each input channel copied to its ``scale**2`` output channels), so at initialization the
network is already close to nearest-neighbour upsampling. The ITO connection adds the anchor
explicitly (the input repeated ``scale**2`` times per channel: nearest-neighbour upsampling
after depth to space).

The three published variants (the defaults of the subclasses):

============  ============  =======================  ===
variant       num_channels  num_intermediate_layers  ito
============  ============  =======================  ===
Small         32            2                        no
Medium        32            5                        no
Large         64            11                       yes
============  ============  =======================  ===

Deviation: the reference's ITO connection is a 1x1 conv initialized to the anchor and left
trainable; here it is the fixed anchor (:class:`~qdukd.models.common.NearestAnchor`), which
has no weights to quantize. Module names follow the reference (``cnn.{0,2,...}``, ``conv_last``).
The reference's 1.5x mode is not built (the zoo's scales are
2, 3, 4). RGB in and out, as in the paper.
"""

from __future__ import annotations

import torch
from torch import nn

from .common import Add, NearestAnchor, check_scale


def _add_identity(conv: nn.Conv2d, source: list[int]) -> None:
    """Add 1 at the kernel centre from input channel ``source[o]`` to each output channel ``o``."""
    c = conv.kernel_size[0] // 2
    with torch.no_grad():
        for o, i in enumerate(source):
            conv.weight[o, i, c, c] += 1.0


class QuickSRNet(nn.Module):
    """QuickSRNet with any width and depth (the registry's S/M/L are the subclasses below).

    Args:
        scale: upscaling factor, 2, 3 or 4.
        num_channels: channels of the hidden convs.
        num_intermediate_layers: hidden 3x3 convs after the first one.
        ito: add the anchor (input-to-output connection) before the output clip.
    """

    def __init__(self, scale: int, num_channels: int = 32, num_intermediate_layers: int = 2, ito: bool = False) -> None:
        super().__init__()
        check_scale(type(self).__name__, scale)
        self.scale = scale
        self.config = {"scale": scale, "num_channels": num_channels,
                       "num_intermediate_layers": num_intermediate_layers, "ito": ito}
        layers: list[nn.Module] = [nn.Conv2d(3, num_channels, 3, 1, 1), nn.Hardtanh(0.0, 1.0)]
        for _ in range(num_intermediate_layers):
            layers += [nn.Conv2d(num_channels, num_channels, 3, 1, 1), nn.Hardtanh(0.0, 1.0)]
        self.cnn = nn.Sequential(*layers)
        self.conv_last = nn.Conv2d(num_channels, 3 * scale * scale, 3, 1, 1)
        if ito:
            self.anchor = NearestAnchor(scale)
            self.add = Add()
        self.clip = nn.Hardtanh(0.0, 1.0)
        self.shuffle = nn.PixelShuffle(scale)
        self.ito = ito

        for m in self.cnn:
            if isinstance(m, nn.Conv2d):
                _add_identity(m, list(range(min(m.in_channels, m.out_channels))))
        if not ito:
            _add_identity(self.conv_last, [o // (scale * scale) for o in range(self.conv_last.out_channels)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv_last(self.cnn(x))
        if self.ito:
            y = self.add(self.anchor(x), y)
        return self.shuffle(self.clip(y))


class QuickSRNetSmall(QuickSRNet):
    """QuickSRNet-Small: 32 channels, 2 intermediate convs, no ITO connection (see :class:`QuickSRNet`)."""

    def __init__(self, scale: int, num_channels: int = 32, num_intermediate_layers: int = 2, ito: bool = False) -> None:
        super().__init__(scale, num_channels, num_intermediate_layers, ito)


class QuickSRNetMedium(QuickSRNet):
    """QuickSRNet-Medium: 32 channels, 5 intermediate convs, no ITO connection (see :class:`QuickSRNet`)."""

    def __init__(self, scale: int, num_channels: int = 32, num_intermediate_layers: int = 5, ito: bool = False) -> None:
        super().__init__(scale, num_channels, num_intermediate_layers, ito)


class QuickSRNetLarge(QuickSRNet):
    """QuickSRNet-Large: 64 channels, 11 intermediate convs, ITO connection (see :class:`QuickSRNet`)."""

    def __init__(self, scale: int, num_channels: int = 64, num_intermediate_layers: int = 11, ito: bool = True) -> None:
        super().__init__(scale, num_channels, num_intermediate_layers, ito)
