"""MATLAB-compatible bicubic resize (``imresize(img, scale, 'bicubic')``).

Reproduces MATLAB's ``imresize`` with the default ``'bicubic'`` method and antialiasing:

* cubic convolution kernel with ``a = -0.5``; when downscaling (``scale < 1``) the kernel is
  stretched to width ``4 / scale`` and scaled by ``scale`` (antialiasing);
* tap positions and weights as MATLAB's ``contributions()``: ``u = x / scale + 0.5 * (1 -
  1 / scale)``, ``ceil(width) + 2`` taps, weights normalised to sum to 1, out-of-range taps
  mirrored symmetrically (edge pixel repeated);
* output size ``ceil(in * scale)`` along each of H and W;
* dimension 1 (height) is resized first, then dimension 2 (width); for integer images the
  result of *each* pass is rounded half away from zero and clipped to the dtype's range, as
  MATLAB does. Measured on the MATLAB-made Set5/Set14 ``LR_bicubic`` files this gives 100 %
  pixel agreement at x2, x3 and x4.

Both the numpy path (:func:`imresize`) and the torch path (:func:`imresize_torch`) apply the
same dense ``(out_len, in_len)`` matrix from :func:`bicubic_weight_matrix`, in which the
symmetric padding is already folded in, so each pass is a single matrix product.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

__all__ = ["bicubic_weight_matrix", "cubic", "imresize", "imresize_torch", "output_length"]

_KERNEL_WIDTH = 4.0  # support of the cubic kernel at scale 1 (|x| < 2)


def cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with ``a = -0.5`` (MATLAB's ``cubic``).

    Args:
        x: Offsets (any shape).

    Returns:
        Kernel values, float64, same shape as ``x``; zero for ``|x| >= 2``.
    """
    absx = np.abs(np.asarray(x, dtype=np.float64))
    absx2 = absx * absx
    absx3 = absx2 * absx
    return (1.5 * absx3 - 2.5 * absx2 + 1.0) * (absx <= 1) + (
        -0.5 * absx3 + 2.5 * absx2 - 4.0 * absx + 2.0
    ) * ((absx > 1) & (absx <= 2))


def _check_scale(scale: float) -> float:
    try:
        s = float(scale)
    except (TypeError, ValueError):
        raise ValueError(f"scale must be a positive finite number, got {scale!r}") from None
    if not math.isfinite(s) or s <= 0:
        raise ValueError(f"scale must be a positive finite number, got {scale!r}")
    return s


def output_length(in_len: int, scale: float) -> int:
    """Length of one resized dimension, MATLAB's ``ceil(in_len * scale)``.

    Args:
        in_len: Input length (>= 1).
        scale: Scale factor (> 0), e.g. ``1 / 4`` to downscale by 4.

    Returns:
        The output length.

    Raises:
        ValueError: If ``in_len < 1`` or ``scale`` is not a positive finite number.
    """
    s = _check_scale(scale)
    if int(in_len) != in_len or in_len < 1:
        raise ValueError(f"input length must be a positive integer, got {in_len!r}")
    return int(math.ceil(int(in_len) * s))


@functools.lru_cache(maxsize=256)
def _weight_matrix_cached(in_len: int, scale: float) -> np.ndarray:
    out_len = output_length(in_len, scale)
    if scale < 1:  # antialiasing: stretched, rescaled kernel
        width = _KERNEL_WIDTH / scale

        def kernel(t: np.ndarray) -> np.ndarray:
            return scale * cubic(scale * t)

    else:
        width = _KERNEL_WIDTH
        kernel = cubic

    # MATLAB contributions(), 1-based coordinates.
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    idx = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]  # (out, taps), 1-based
    weights = kernel(u[:, None] - idx)
    weights = weights / weights.sum(axis=1, keepdims=True)

    # Symmetric padding: aux = [1..n, n..1], indices = aux(mod(idx - 1, 2n) + 1).
    period = 2 * in_len
    m = np.mod(idx.astype(np.int64) - 1, period)  # 0-based position in aux
    src = np.where(m < in_len, m, period - 1 - m)  # 0-based input index

    mat = np.zeros((out_len, in_len), dtype=np.float64)
    rows = np.broadcast_to(np.arange(out_len)[:, None], src.shape)
    np.add.at(mat, (rows, src), weights)
    mat.setflags(write=False)
    return mat


def bicubic_weight_matrix(in_len: int, scale: float) -> np.ndarray:
    """Dense MATLAB bicubic resampling matrix for one dimension.

    ``out = W @ in`` resizes a length-``in_len`` signal by ``scale``. The symmetric border
    padding of MATLAB's ``contributions()`` is folded in (mirrored taps are summed onto the
    input sample they reference), so every row sums to 1.

    Args:
        in_len: Input length (>= 1).
        scale: Scale factor (> 0); < 1 downscales with the antialiased kernel of width
            ``4 / scale``, >= 1 uses the plain width-4 kernel.

    Returns:
        Read-only float64 array of shape ``(ceil(in_len * scale), in_len)`` (cached).

    Raises:
        ValueError: If ``in_len < 1`` or ``scale`` is not a positive finite number.
    """
    s = _check_scale(scale)
    output_length(in_len, s)  # validates in_len
    return _weight_matrix_cached(int(in_len), s)


def _round_half_away(x: np.ndarray) -> np.ndarray:
    return np.copysign(np.floor(np.abs(x) + 0.5), x)


def imresize(img: np.ndarray, scale: float) -> np.ndarray:
    """Resize an image like MATLAB ``imresize(img, scale, 'bicubic')``.

    Height is resized first, then width. Integer images (e.g. uint8) are rounded half away
    from zero and clipped to the dtype's range after *each* pass, exactly as MATLAB does, and
    returned in the input dtype. Floating images are computed in float64 without rounding or
    clipping and returned in the input dtype.

    Args:
        img: ``HxW`` or ``HxWxC`` array (uint8/other integer or floating dtype).
        scale: Scale factor (> 0), e.g. ``1 / 2`` to downscale by 2, ``4`` to upscale by 4.
            Output size is ``ceil(H * scale) x ceil(W * scale)``.

    Returns:
        The resized array, same dtype and number of dimensions as ``img``.

    Raises:
        ValueError: On a non-positive/non-finite scale, an empty image, a wrong number of
            dimensions or an unsupported dtype.
    """
    s = _check_scale(scale)
    arr = np.asarray(img)
    if arr.ndim not in (2, 3):
        raise ValueError(f"imresize expects an HxW or HxWxC array, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"imresize got an empty image of shape {arr.shape}")
    dtype = arr.dtype
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        lo, hi = float(info.min), float(info.max)

        def finish(y: np.ndarray) -> np.ndarray:
            return np.clip(_round_half_away(y), lo, hi)

    elif np.issubdtype(dtype, np.floating):

        def finish(y: np.ndarray) -> np.ndarray:
            return y

    else:
        raise ValueError(f"imresize supports integer or floating images, got dtype {dtype}")

    h, w = arr.shape[:2]
    wh = bicubic_weight_matrix(h, s)
    ww = bicubic_weight_matrix(w, s)
    x = arr.astype(np.float64)
    x = finish(np.tensordot(wh, x, axes=(1, 0)))  # (oh, W[, C])
    x = finish(np.moveaxis(np.tensordot(ww, x, axes=(1, 1)), 0, 1))  # (oh, ow[, C])
    return np.ascontiguousarray(x.astype(dtype))


@functools.lru_cache(maxsize=128)
def _torch_weight_matrix(
    in_len: int, scale: float, device: torch.device, dtype: torch.dtype
) -> torch.Tensor:
    mat = _weight_matrix_cached(in_len, scale)
    return torch.tensor(mat, dtype=dtype, device=device)


def imresize_torch(x: torch.Tensor, scale: float) -> torch.Tensor:
    """MATLAB-style bicubic resize of a float tensor (differentiable, any device).

    Same kernel, antialiasing, symmetric padding and output size as :func:`imresize`, but no
    rounding or clipping. Each pass is one matrix product with a cached ``(out, in)`` weight
    matrix built on ``x.device`` / ``x.dtype``.

    Args:
        x: Floating tensor of shape ``(N, C, H, W)`` or ``(C, H, W)``.
        scale: Scale factor (> 0), e.g. ``1 / 4``; output is ``ceil(H*scale) x ceil(W*scale)``.

    Returns:
        Resized tensor with the same leading dimensions, dtype and device as ``x``.

    Raises:
        ValueError: On a non-positive/non-finite scale, a non-floating tensor, an empty
            tensor or a wrong number of dimensions.
    """
    s = _check_scale(scale)
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"imresize_torch expects a torch.Tensor, got {type(x).__name__}")
    if x.dim() not in (3, 4):
        raise ValueError(
            f"imresize_torch expects an (N, C, H, W) or (C, H, W) tensor, got shape {tuple(x.shape)}"
        )
    if x.numel() == 0:
        raise ValueError(f"imresize_torch got an empty tensor of shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"imresize_torch expects a floating tensor, got dtype {x.dtype}")
    h, w = x.shape[-2], x.shape[-1]
    wh = _torch_weight_matrix(int(h), s, x.device, x.dtype)
    ww = _torch_weight_matrix(int(w), s, x.device, x.dtype)
    return torch.matmul(torch.matmul(wh, x), ww.transpose(0, 1))
