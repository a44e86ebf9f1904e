"""Find an SR network's head and tail from one forward pass, with no knowledge of the model.

The rule (documented in docs/QUANTIZATION.md):

- **head**: the first ``nn.Conv2d`` that runs;
- **upscaling op**: the first call (PixelShuffle, interpolate, transposed conv, ...) that turns
  a *feature map* into one at least twice as high and twice as wide as both that map and the
  network input. A feature map is a 4-D tensor whose channel count differs from the network
  input's, so a bicubic skip of the image itself is not it; an attention branch that pools a
  map and interpolates it back to the input's size (RLFN's ESA) is not it either;
- **tail**: every tracked layer that runs after the upscaling op or is it (a transposed conv);
  for a depth-to-space op (PixelShuffle: ``r^2 * C`` channels in, ``C`` out) also every tracked
  layer from the *sub-pixel conv* on: the last conv before the shuffle that made a map of the
  shuffle's input shape (EDSR's upsampler conv; in anchor nets such as ABPN, QuickSRNet and
  SESR the last conv, whose output meets the repeated input in an add, then maybe a clip);
  for an interpolation, the conv whose output it takes directly;
- **body**: everything else that runs.

Tracked layers are the modules of ``types`` (conv, transposed conv, linear, add). The pass runs
in eval mode under ``no_grad`` on a small random input, so it is cheap and leaves no trace on the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..errors import QdukdError

Role = Literal["head", "body", "tail"]

# Side of the default probe input: small (cheap for deep models) and a multiple of common windows.
PROBE_SIZE = 16


@dataclass(frozen=True)
class _Upscale:
    """The upscaling op's call: its time on the shared clock, its input and its output."""

    time: int
    src: torch.Tensor
    out: torch.Tensor


class _UpscaleSpy(TorchFunctionMode):
    """Remembers the first call that enlarges a feature map 2x or more, beyond twice the input's size."""

    def __init__(self, image: torch.Tensor, clock: list[int]) -> None:
        super().__init__()
        self.image_channels, self.image_size = image.shape[1], image.shape[-2:]
        self.clock = clock  # shared with the module hooks: a global execution order
        self.found: _Upscale | None = None

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self.found is None and isinstance(out, torch.Tensor) and out.dim() == 4:
            tensors = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)]
            src = tensors[0] if tensors else None
            if (src is not None and src.dim() == 4 and src.shape[1] != self.image_channels
                    and out.shape[0] == src.shape[0]
                    and all(out.shape[d] >= 2 * max(src.shape[d], self.image_size[d - 2]) for d in (2, 3))
                    # not a broadcast (gate * x): no operand already has the output's size
                    and all(t.shape[-2:] != out.shape[-2:] for t in tensors)):
                self.clock[0] += 1
                self.found = _Upscale(self.clock[0], src, out)
        return out


def probe_input(model: nn.Module) -> torch.Tensor:
    """A fixed (1, C, 16, 16) random image, C taken from the first registered ``nn.Conv2d``."""
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    if first is None:
        raise QdukdError(f"{type(model).__name__} has no Conv2d to infer the input channels from: "
                         "pass example_input=torch.rand(1, C, H, W)")
    param = next(model.parameters())
    # A private generator: preparing a model must not shift the caller's random stream.
    x = torch.rand(1, first.in_channels, PROBE_SIZE, PROBE_SIZE, generator=torch.Generator().manual_seed(0))
    return x.to(param.device, param.dtype)


@torch.no_grad()
def find_roles(model: nn.Module, types: tuple[type, ...], example_input: torch.Tensor | None = None) -> dict[str, Role]:
    """Role of every module of ``types`` that runs in one forward pass (see the module docstring).

    Args:
        model: the network (left in the train/eval mode it had).
        types: the module types to classify (exact types, not subclasses).
        example_input: the probe; default :func:`probe_input`.
    """
    x = probe_input(model) if example_input is None else example_input
    clock = [0]
    runs: list[tuple[int, str, nn.Module, Any]] = []  # (time, name, module, output)

    def hook(name: str):  # type: ignore[no-untyped-def]
        def record(module: nn.Module, args: Any, output: Any) -> None:
            clock[0] += 1
            runs.append((clock[0], name, module, output))
        return record

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if type(m) in types]
    spy = _UpscaleSpy(x, clock)
    was_training = model.training
    try:
        model.eval()
        with spy:
            model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return _classify(runs, spy.found)


def _tail_start(runs: list[tuple[int, str, nn.Module, Any]], upscale: _Upscale) -> int:
    """The time from which tracked layers are tail (see the module docstring)."""
    src, out = upscale.src, upscale.out
    if any(output is out for *_, output in runs):  # a transposed conv: the upsampler itself
        return upscale.time
    if out.shape[1] * (out.shape[2] // src.shape[2]) * (out.shape[3] // src.shape[3]) == src.shape[1]:
        subpixel = [t for t, _, m, output in runs if t < upscale.time and isinstance(m, nn.Conv2d)
                    and isinstance(output, torch.Tensor) and output.shape == src.shape]
        if subpixel:
            return max(subpixel)
    return min((t for t, _, m, output in runs if isinstance(m, nn.Conv2d) and output is src), default=upscale.time + 1)


def _classify(runs: list[tuple[int, str, nn.Module, Any]], upscale: _Upscale | None) -> dict[str, Role]:
    """Roles from the (time, name, module, output) of each layer run and the upscaling op's call."""
    roles: dict[str, Role] = {}
    head_done = False
    tail_start = None if upscale is None else _tail_start(runs, upscale)
    for time, name, module, _ in runs:
        if name in roles:  # a module called twice keeps the role of its first call
            continue
        if not head_done and isinstance(module, nn.Conv2d):
            roles[name], head_done = "head", True
        elif tail_start is not None and time >= tail_start:
            roles[name] = "tail"
        else:
            roles[name] = "body"
    return roles
