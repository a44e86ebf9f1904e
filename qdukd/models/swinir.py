"""SwinIR for classical SR (Liang et al., ICCVW 2021), PixelShuffle reconstruction.

Parameter names follow the official code / BasicSR (``patch_embed.norm``,
``layers.{i}.residual_group.blocks.{j}.attn.qkv``, ``conv_before_upsample.0``, ...) so their
checkpoints load. The official files also store two derived buffers,
``attn.relative_position_index`` and ``attn_mask``; they are recomputed here and dropped when
loading, because the shifted-window mask depends on the input size and is built in forward
so that any H x W (and ONNX export with dynamic H/W) works.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import QdukdError
from .common import DIV2K_RGB_MEAN, Add, Upsample, check_scale

# Logit added between tokens from different image regions after the cyclic shift (official value).
MASK_VALUE = -100.0


def window_partition(x: torch.Tensor, window: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * num_windows, window * window, C); H and W are multiples of ``window``."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, window * window, c)


def window_merge(windows: torch.Tensor, window: int, b: int, h: int, w: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`: (B * num_windows, window * window, C) -> (B, H, W, C)."""
    c = windows.shape[-1]
    x = windows.view(b, h // window, w // window, window, window, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, h, w, c)


def shifted_window_mask(h: int, w: int, window: int, shift: int, device: torch.device) -> torch.Tensor:
    """(num_windows, N, N) additive mask that stops attention across the seams of the cyclic shift.

    Each pixel gets a region id (3 bands per axis: the bulk, the last window minus the shift,
    the wrapped-around shift); tokens of a window attend only to tokens with the same id.
    Built from ``arange`` so that tracing keeps H and W symbolic.
    """
    rows = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)
    row_id = (rows >= h - window).long() + (rows >= h - shift).long()
    col_id = (cols >= w - window).long() + (cols >= w - shift).long()
    region = (row_id[:, None] * 3 + col_id[None, :])[None, :, :, None]
    ids = window_partition(region, window)[..., 0]  # indexing, not squeeze: no ONNX If node
    return (ids[:, None, :] != ids[:, :, None]).float() * MASK_VALUE


def drop_path(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero a sample's whole residual branch with probability ``p`` while training."""
    if p == 0.0 or not training:
        return x
    keep = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device) >= p
    return x * keep / (1.0 - p)


class PatchEmbed(nn.Module):
    """(B, C, H, W) feature map -> (B, H * W, C) layer-normed tokens (patch size 1).

    Args:
        dim: channels.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.flatten(2).transpose(1, 2))


class WindowAttention(nn.Module):
    """Multi-head self-attention inside a window, with a learned relative position bias.

    Args:
        dim: token channels.
        window: window side in pixels.
        num_heads: attention heads (``dim`` must divide evenly).
    """

    def __init__(self, dim: int, window: int, num_heads: int) -> None:
        super().__init__()
        self.window = window
        self.num_heads = num_heads
        self.qk_scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        # For each (query, key) pair, the table row of their (dy, dx) offset.
        coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
        rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (window - 1)
        self.register_buffer("relative_position_index", rel[..., 0] * (2 * window - 1) + rel[..., 1],
                             persistent=False)
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        # Official checkpoints store this derived index; it is rebuilt in __init__.
        state_dict.pop(prefix + "relative_position_index", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """Args:
            x: (B * num_windows, N, C) tokens, N = window * window.
            mask: (num_windows, N, N) additive mask, or None for unshifted windows.
        """
        bw, n, c = x.shape
        qkv = self.qkv(x).reshape(bw, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.qk_scale) @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        attn = attn + bias.permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(-1, nw, self.num_heads, n, n) + mask[None, :, None]
            attn = attn.view(-1, self.num_heads, n, n)
        x = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj(x)


class Mlp(nn.Module):
    """Two-layer GELU MLP.

    Args:
        dim: token channels.
        hidden: hidden channels.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinBlock(nn.Module):
    """Pre-norm (shifted-)window attention and MLP, each with a residual add.

    Args:
        dim: token channels.
        num_heads: attention heads.
        window: window side.
        shift: cyclic shift (0 for plain windows, ``window // 2`` for shifted ones).
        mlp_ratio: MLP hidden width relative to ``dim``.
        drop_path: stochastic-depth rate of both residual branches.
    """

    def __init__(self, dim: int, num_heads: int, window: int, shift: int, mlp_ratio: float,
                 drop_path: float) -> None:
        super().__init__()
        self.window = window
        self.shift = shift
        self.drop_path = drop_path
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads)
        self.add_attn = Add()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.add_mlp = Add()

    def _load_from_state_dict(self, state_dict: dict, prefix: str, *args: Any, **kwargs: Any) -> None:
        # Official checkpoints store the mask for their training size; it is rebuilt per input.
        state_dict.pop(prefix + "attn_mask", None)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, x: torch.Tensor, h: int, w: int, mask: torch.Tensor | None) -> torch.Tensor:
        """Args:
            x: (B, H * W, C) tokens; H and W are multiples of the window.
            h, w: the token grid's height and width.
            mask: :func:`shifted_window_mask` for this grid (used only if this block shifts).
        """
        b, _, c = x.shape
        y = self.norm1(x).view(b, h, w, c)
        if self.shift:
            y = torch.roll(y, shifts=(-self.shift, -self.shift), dims=(1, 2))
        y = self.attn(window_partition(y, self.window), mask if self.shift else None)
        y = window_merge(y, self.window, b, h, w)
        if self.shift:
            y = torch.roll(y, shifts=(self.shift, self.shift), dims=(1, 2))
        x = self.add_attn(x, drop_path(y.reshape(b, h * w, c), self.drop_path, self.training))
        return self.add_mlp(x, drop_path(self.mlp(self.norm2(x)), self.drop_path, self.training))


class BasicLayer(nn.Module):
    """A stack of Swin blocks alternating plain and shifted windows.

    Args:
        dim: token channels.
        depth: number of blocks.
        num_heads: attention heads.
        window: window side.
        shift: shift of the odd blocks (0 disables shifting).
        mlp_ratio: MLP hidden width relative to ``dim``.
        drop_path: stochastic-depth rate of each block.
    """

    def __init__(self, dim: int, depth: int, num_heads: int, window: int, shift: int, mlp_ratio: float,
                 drop_path: Sequence[float]) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(dim, num_heads, window, shift if i % 2 else 0, mlp_ratio, drop_path[i]) for i in range(depth))

    def forward(self, x: torch.Tensor, h: int, w: int, mask: torch.Tensor | None) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, h, w, mask)
        return x


class RSTB(nn.Module):
    """Residual Swin Transformer block: Swin blocks, a 3x3 conv on the image grid, and a skip.

    Args:
        dim: token channels.
        depth: Swin blocks.
        num_heads: attention heads.
        window: window side.
        shift: shift of the odd blocks.
        mlp_ratio: MLP hidden width relative to ``dim``.
        drop_path: stochastic-depth rate of each block.
    """

    def __init__(self, dim: int, depth: int, num_heads: int, window: int, shift: int, mlp_ratio: float,
                 drop_path: Sequence[float]) -> None:
        super().__init__()
        self.residual_group = BasicLayer(dim, depth, num_heads, window, shift, mlp_ratio, drop_path)
        self.conv = nn.Conv2d(dim, dim, 3, 1, 1)
        self.add = Add()

    def forward(self, x: torch.Tensor, h: int, w: int, mask: torch.Tensor | None) -> torch.Tensor:
        y = self.residual_group(x, h, w, mask)
        y = self.conv(y.transpose(1, 2).reshape(x.shape[0], -1, h, w))
        return self.add(x, y.flatten(2).transpose(1, 2))


class SwinIR(nn.Module):
    """SwinIR classical SR: shallow conv, residual Swin Transformer blocks, PixelShuffle upsampler.

    Any input size works: the input is reflect-padded to a multiple of the window (as the
    official code does) and the output cropped back. Defaults are the official SwinIR-M
    classical-SR model (DF2K, 64 x 64 patches, window 8).

    Args:
        scale: upscaling factor, 2, 3 or 4.
        img_size: training patch side; windows never exceed it and shifting is off when it
            fits in one window (as in the official code).
        window_size: attention window side.
        embed_dim: token channels (divisible by every entry of ``num_heads``).
        depths: Swin blocks in each RSTB.
        num_heads: attention heads in each RSTB (same length as ``depths``).
        mlp_ratio: MLP hidden width relative to ``embed_dim``.
        img_range: pixel range the network computes in (official classical SR: 1.0).
        drop_path_rate: stochastic depth, rising linearly from 0 to this over all blocks.
        num_feat: channels of the reconstruction stage.
    """

    def __init__(self, scale: int, img_size: int = 64, window_size: int = 8, embed_dim: int = 180,
                 depths: Sequence[int] = (6, 6, 6, 6, 6, 6), num_heads: Sequence[int] = (6, 6, 6, 6, 6, 6),
                 mlp_ratio: float = 2.0, img_range: float = 1.0, drop_path_rate: float = 0.1,
                 num_feat: int = 64) -> None:
        super().__init__()
        check_scale("SwinIR", scale)
        depths, num_heads = tuple(depths), tuple(num_heads)
        if len(depths) != len(num_heads):
            raise QdukdError(f"SwinIR needs one num_heads entry per depths entry, got depths={depths} "
                             f"and num_heads={num_heads}")
        if any(embed_dim % n for n in num_heads):
            raise QdukdError(f"SwinIR embed_dim={embed_dim} is not divisible by num_heads={num_heads} "
                             "(pick an embed_dim that every head count divides)")
        self.scale = scale
        self.config = {"scale": scale, "img_size": img_size, "window_size": window_size, "embed_dim": embed_dim,
                       "depths": depths, "num_heads": num_heads, "mlp_ratio": mlp_ratio, "img_range": img_range,
                       "drop_path_rate": drop_path_rate, "num_feat": num_feat}
        self.img_range = img_range
        self.register_buffer("mean", torch.tensor(DIV2K_RGB_MEAN).view(1, 3, 1, 1), persistent=False)
        self.window = min(window_size, img_size)
        self.shift = 0 if img_size <= window_size else window_size // 2

        self.conv_first = nn.Conv2d(3, embed_dim, 3, 1, 1)
        self.patch_embed = PatchEmbed(embed_dim)
        rates = torch.linspace(0, drop_path_rate, sum(depths)).tolist()
        starts = [sum(depths[:i]) for i in range(len(depths))]
        self.layers = nn.ModuleList(
            RSTB(embed_dim, d, n, self.window, self.shift, mlp_ratio, rates[s:s + d])
            for d, n, s in zip(depths, num_heads, starts))
        self.norm = nn.LayerNorm(embed_dim)
        self.conv_after_body = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1)
        self.add = Add()
        self.conv_before_upsample = nn.Sequential(nn.Conv2d(embed_dim, num_feat, 3, 1, 1), nn.LeakyReLU(inplace=True))
        self.upsample = Upsample(scale, num_feat)
        self.conv_last = nn.Conv2d(num_feat, 3, 3, 1, 1)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        # One mask for the whole network: every shifted block uses the same grid, window and shift.
        mask = shifted_window_mask(h, w, self.window, self.shift, x.device).to(x.dtype) if self.shift else None
        t = self.patch_embed(x)
        for layer in self.layers:
            t = layer(t, h, w, mask)
        return self.norm(t).transpose(1, 2).reshape(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[2], x.shape[3]
        pad_h = (self.window - h % self.window) % self.window
        pad_w = (self.window - w % self.window) % self.window
        # Reflect padding needs pad < size. Skipped while tracing, where sizes are symbolic.
        if not torch.jit.is_tracing() and (pad_h >= h or pad_w >= w):
            raise QdukdError(f"input {h}x{w} is too small for SwinIR with window {self.window}: "
                             f"give it more than {self.window // 2} pixels per side")
        x = F.pad(x, (0, pad_w, 0, pad_h), mode="reflect")
        x = (x - self.mean) * self.img_range
        x = self.conv_first(x)
        x = self.add(x, self.conv_after_body(self.forward_features(x)))
        x = self.conv_last(self.upsample(self.conv_before_upsample(x)))
        x = x / self.img_range + self.mean
        return x[:, :, : h * self.scale, : w * self.scale]
