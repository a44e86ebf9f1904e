"""The model zoo: plain ``nn.Module`` SR networks, an explicit registry, and checkpoint loading.

Every model maps float32 RGB in [0, 1] (NCHW) to float32 RGB in [0, 1] at ``model.scale``
times the size, keeps its constructor arguments in ``model.config`` and routes its residual
adds through :class:`~qdukd.models.common.Add`.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import QdukdError
from ..torchfile import check_finite, read_torch_file
from . import custom
from .abpn import ABPN
from .bicubic import Bicubic
from .edsr import EDSR
from .espcn import ESPCN
from .fsrcnn import FSRCNN
from .imdn import IMDN
from .pan import PAN
from .quicksrnet import QuickSRNet, QuickSRNetLarge, QuickSRNetMedium, QuickSRNetSmall
from .rcan import RCAN
from .rlfn import RLFN, RLFNS
from .sesr import SESR, SESRM3, SESRM5, SESRM7, SESRM11, SESRXL
from .span import SPAN
from .swinir import SwinIR
from .xlsr import XLSR

MODELS: dict[str, type[nn.Module]] = {
    "bicubic": Bicubic, "edsr": EDSR, "rcan": RCAN, "swinir": SwinIR, "imdn": IMDN, "pan": PAN,
    # the deployable zoo: small plain networks that ship on phones, NPUs and GPUs
    "espcn": ESPCN, "fsrcnn": FSRCNN, "quicksrnet_s": QuickSRNetSmall, "quicksrnet_m": QuickSRNetMedium,
    "quicksrnet_l": QuickSRNetLarge, "xlsr": XLSR, "abpn": ABPN, "sesr_m3": SESRM3, "sesr_m5": SESRM5,
    "sesr_m7": SESRM7, "sesr_m11": SESRM11, "sesr_xl": SESRXL, "rlfn": RLFN, "rlfn_s": RLFNS, "span": SPAN,
}

# Where training frameworks nest the weights, most preferred first (BasicSR saves EMA as params_ema).
_WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model")
_SHOW = 5

__all__ = [
    "ABPN", "EDSR", "ESPCN", "FSRCNN", "IMDN", "MODELS", "PAN", "RCAN", "RLFN", "RLFNS", "SESR", "SESRM3", "SESRM5",
    "SESRM7", "SESRM11", "SESRXL", "SPAN", "XLSR", "Bicubic", "QuickSRNet", "QuickSRNetLarge", "QuickSRNetMedium",
    "QuickSRNetSmall", "SwinIR", "build_model", "load_weights", "model_config",
]


def _check_type(model: str, arg: str, value: Any, hint: Any) -> None:
    """Reject values that would only fail deep inside torch (e.g. ``num_feat="64"`` from a CLI)."""
    def ok(v: Any, t: Any) -> bool:
        if typing.get_origin(t) is not None:  # Sequence[int]: a list or tuple of ints
            return isinstance(v, (list, tuple)) and all(ok(x, typing.get_args(t)[0]) for x in v)
        if isinstance(v, bool) and t is not bool:
            return False
        return isinstance(v, (int, float)) if t is float else isinstance(v, t)

    if not ok(value, hint):
        want = hint.__name__ if typing.get_origin(hint) is None else f"a list of {typing.get_args(hint)[0].__name__}"
        raise QdukdError(f"argument {arg!r} of model {model!r} must be {want}, got {value!r}")


def build_model(name: str, scale: int, trust_code: bool = False, **kwargs: Any) -> nn.Module:
    """Build a zoo model, a plugin's model or a class named by import path.

    ``build_model(cfg["name"], **cfg["kwargs"])`` rebuilds a model from :func:`model_config`.

    Args:
        name: a registry name (one of :data:`MODELS`), a ``qdukd.models`` entry-point name, or
            ``"package.module:Class"`` (see :mod:`qdukd.models.custom`).
        scale: upscaling factor (2, 3 or 4 for the zoo).
        trust_code: allow importing the code a plugin name or import path names.
        **kwargs: the architecture's constructor arguments (see each class); omitted ones keep
            the paper's defaults.

    Raises:
        QdukdError: unknown name, foreign code without ``trust_code``, not an ``nn.Module``,
            unknown or mistyped argument, unsupported scale, a model breaking the conventions.
    """
    foreign = name not in MODELS
    if foreign and not custom.is_foreign(name):
        raise QdukdError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}, a name registered "
                         f"under the '{custom.ENTRY_POINT_GROUP}' entry points, or 'package.module:Class'")
    cls = custom.resolve_class(name, trust_code) if foreign else MODELS[name]
    params = inspect.signature(cls).parameters
    if "scale" not in params:
        raise QdukdError(f"model {name!r} must take its upscaling factor as a 'scale' constructor argument")
    valid = [p for p in params if p != "scale"]
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # a user's class with unresolvable annotations: no type checks
        hints = {}
    for arg, value in kwargs.items():
        if arg not in valid:
            raise QdukdError(f"unknown argument {arg!r} for model {name!r}; valid arguments: {', '.join(valid)}")
        if arg in hints:
            _check_type(name, arg, value, hints[arg])
    if not foreign:
        return cls(scale=scale, **kwargs)
    try:
        model = cls(scale=scale, **kwargs)
    except Exception as e:
        raise QdukdError(f"model {name!r} failed to build with {kwargs} at x{scale}: {type(e).__name__}: {e}") from None
    model.scale = scale
    custom.check_conventions(model, name, scale)
    return custom.expose_adds(model, name)


def _registry_name(model: nn.Module) -> str | None:
    return next((n for n, cls in MODELS.items() if type(model) is cls), None)


def model_config(model: nn.Module) -> dict[str, Any]:
    """``{"name": ..., "kwargs": {...}}`` with everything :func:`build_model` needs to rebuild ``model``.

    ``kwargs`` includes ``scale``.

    Raises:
        QdukdError: ``model`` is not one of the registry's classes.
    """
    name = _registry_name(model)
    if name is None:
        raise QdukdError(f"{type(model).__name__} is not a registry model "
                         f"(model_config works for: {', '.join(sorted(MODELS))})")
    return {"name": name, "kwargs": dict(model.config)}


def _read(source: str | Path | Mapping) -> tuple[Mapping, str]:
    """The raw object of a checkpoint source and a label for messages."""
    if isinstance(source, Mapping):
        return source, "state dict"
    path = Path(source)
    obj = read_torch_file(path, "checkpoint")
    if not isinstance(obj, Mapping):
        raise QdukdError(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict "
                         "(save model.state_dict(), not the model)")
    return obj, str(path)


def _unwrap(obj: Mapping, label: str) -> dict[str, torch.Tensor]:
    """Take the weights out of BasicSR / Lightning-style wrappers and drop DataParallel's prefix."""
    for key in _WRAPPER_KEYS:
        if isinstance(obj.get(key), Mapping):
            obj = obj[key]
            break
    not_tensors = [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if not_tensors or not obj:
        raise QdukdError(f"checkpoint {label} is not a state dict of tensors (keys: {_few(list(obj))}); "
                         f"pass the weights or a dict wrapping them under one of {', '.join(_WRAPPER_KEYS)}")
    sd = dict(obj)
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    check_finite(sd, f"checkpoint {label}")
    return sd


def _few(items: list[str]) -> str:
    more = f", ... ({len(items) - _SHOW} more)" if len(items) > _SHOW else ""
    return ", ".join(items[:_SHOW]) + more


def load_weights(model: nn.Module, source: str | Path | Mapping, strict: bool = True) -> nn.Module:
    """Load a checkpoint into ``model`` in place and return it.

    Args:
        model: the network, built with the architecture and scale the checkpoint was trained for.
        source: a ``.pth`` path, or an in-memory state dict. The weights may be wrapped in a
            dict under ``params_ema`` (preferred), ``params``, ``state_dict`` or ``model``, and
            may carry DataParallel's ``module.`` prefix.
        strict: require the keys to match exactly. With ``strict=False`` missing and
            unexpected keys are ignored; shape mismatches always raise.

    Raises:
        QdukdError: the file is missing or unreadable, or the weights do not fit ``model``
            (names missing/unexpected keys and shape mismatches). After this error the model
            holds the weights that did fit, as with ``torch.nn.Module.load_state_dict``.
    """
    obj, label = _read(source)
    sd = _unwrap(obj, label)
    own = model.state_dict()
    bad = {k for k, v in sd.items() if k in own and v.shape != own[k].shape}
    # Load the rest (torch would refuse the whole dict) so missing/unexpected keys come from
    # torch's own matching, which honours the models' hooks for derived buffers.
    result = model.load_state_dict({k: v for k, v in sd.items() if k not in bad}, strict=False)
    shapes = [f"{k} {tuple(sd[k].shape)} vs {tuple(own[k].shape)}" for k in sorted(bad)]
    missing = [k for k in result.missing_keys if k not in bad]
    unexpected = result.unexpected_keys
    if shapes or (strict and (missing or unexpected)):
        arch = _registry_name(model) or type(model).__name__
        scale = getattr(model, "scale", "?")
        parts = [f"{len(shapes)} shape mismatches (checkpoint vs model: {_few(shapes)})"] if shapes else []
        parts += [f"{len(missing)} missing keys ({_few(missing)})"] if missing else []
        parts += [f"{len(unexpected)} unexpected keys ({_few(unexpected)})"] if unexpected else []
        raise QdukdError(f"checkpoint {label} does not fit {arch} x{scale}: {'; '.join(parts)} "
                         "(wrong --model or --scale, or different --arch arguments, for these weights?)")
    return model
