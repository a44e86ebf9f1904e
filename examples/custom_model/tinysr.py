"""A user's own SR network, as it would live in their code base (not in qdukd).

It follows qdukd's conventions for custom models (docs/CUSTOM_MODELS.md): float RGB in [0, 1],
NCHW, a ``scale`` constructor argument, typed keyword arguments (so a checkpoint can rebuild it)
and one output tensor at ``scale`` times the input size. Its residual adds are plain ``a + b``:
qdukd finds them with torch.fx and quantizes them like its own ``Add`` modules.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class TinySR(nn.Module):
    """Bicubic upsampling plus a learned residual: conv head, residual blocks, pixel-shuffle tail.

    Args:
        scale: upscaling factor.
        num_feat: channels of the body.
        num_block: residual blocks.
    """

    def __init__(self, scale: int, num_feat: int = 16, num_block: int = 2) -> None:
        super().__init__()
        self.scale = scale
        self.config = {"scale": scale, "num_feat": num_feat, "num_block": num_block}
        self.head = nn.Conv2d(3, num_feat, 3, padding=1)
        self.blocks = nn.ModuleList(
            nn.Sequential(nn.Conv2d(num_feat, num_feat, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(num_feat, num_feat, 3, padding=1))
            for _ in range(num_block))
        self.tail = nn.Conv2d(num_feat, 3 * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)
        nn.init.zeros_(self.tail.weight)  # start as plain bicubic upsampling
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.head(x)
        for block in self.blocks:
            feat = feat + block(feat)
        base = F.interpolate(x, scale_factor=self.scale, mode="bicubic", align_corners=False)
        return base + self.shuffle(self.tail(feat))
