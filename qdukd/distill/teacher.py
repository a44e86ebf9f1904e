"""The frozen full-precision teacher: eval mode, no parameter gradients, no autograd graph."""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

__all__ = ["Teacher"]


class Teacher(nn.Module):
    """Wrap an SR network as a frozen teacher whose outputs are plain target tensors.

    * Eval mode is re-asserted on every call: a ``.train()`` on a parent module (or on the
      network itself) must not switch on dropout or stochastic depth in the teacher.
    * Calls run under ``torch.no_grad()``, not ``torch.inference_mode()``: inference tensors
      cannot be saved for backward or updated in place outside inference mode, so an MSE or
      Charbonnier loss, a product with the student's output, or an in-place clamp of a cached
      target would fail. ``no_grad`` costs practically the same and gives ordinary tensors.
    * Outputs are not clamped to [0, 1], as in the reference code: the student is matched to
      the teacher's actual function, overshoot included.

    Args:
        net: The teacher network (weights already loaded, on its device).
        channels_last: Convert the network and its inputs to channels-last memory format
            (faster convolutions on tensor-core GPUs).
        autocast_dtype: Run the forward under ``torch.autocast`` with this dtype (e.g.
            ``torch.bfloat16`` on CUDA); the output is cast back to the input's dtype. None
            (default) runs in the input's precision.
    """

    def __init__(self, net: nn.Module, channels_last: bool = False,
                 autocast_dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.channels_last = channels_last
        self.autocast_dtype = autocast_dtype
        if channels_last:
            self.net.to(memory_format=torch.channels_last)

    def forward(self, x: Tensor) -> Tensor:
        """Teacher output for ``x`` ``(N, C, h, w)``; ``requires_grad`` is False."""
        self.net.eval()
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        amp = (torch.autocast(x.device.type, dtype=self.autocast_dtype) if self.autocast_dtype is not None
               else contextlib.nullcontext())
        with torch.no_grad(), amp:
            return self.net(x).to(x.dtype)
