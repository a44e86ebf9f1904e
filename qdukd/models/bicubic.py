"""MATLAB bicubic upscaling as a model: the baseline every SR table starts from."""

from __future__ import annotations

import torch
from torch import nn

from ..resize import imresize_torch
from .common import check_scale


class Bicubic(nn.Module):
    """No parameters: ``imresize(x, scale, 'bicubic')`` exactly as MATLAB computes it.

    Args:
        scale: upscaling factor (2, 3 or 4).
    """

    def __init__(self, scale: int) -> None:
        super().__init__()
        check_scale("Bicubic", scale)
        self.scale = scale
        self.config = {"scale": scale}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return imresize_torch(x, float(self.scale))
