"""Networks from outside the zoo: import paths, plugins, the trust opt-in, and their residual adds.

A model is named three ways: a zoo name (``"edsr"``), a name an installed package registers in
the ``qdukd.models`` entry-point group, or an import path ``"package.module:Class"``. The last
two run code that is not qdukd's, so they are imported only when the caller opts in
(``trust_code=True``, the CLIs' ``--trust-model-code``): a checkpoint or recipe from elsewhere
can name any code. Even then the object must be an ``nn.Module`` subclass before anything calls it.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect
import operator
import warnings
from typing import Any

import torch
from torch import fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from ..errors import QdukdError
from .common import Add

ENTRY_POINT_GROUP = "qdukd.models"
TRUST_FLAG = "--trust-model-code"


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def is_foreign(name: str) -> bool:
    """Whether ``name`` names code outside qdukd (an import path or a plugin's entry point)."""
    return ":" in name or name in _entry_points()


def resolve_class(name: str, trust_code: bool) -> type[nn.Module]:
    """The class an import path or entry-point name stands for.

    Args:
        name: ``"package.module:Class"`` or a ``qdukd.models`` entry-point name.
        trust_code: the user's opt-in to import it; without it nothing is imported.

    Raises:
        QdukdError: no opt-in, not importable, or not an ``nn.Module`` subclass.
    """
    ep = _entry_points().get(name)
    target = ep.value if ep is not None else name
    if not trust_code:
        raise QdukdError(f"model {name!r} is code outside qdukd ({target}); it runs only if you trust its source: "
                         f"pass {TRUST_FLAG} (or trust_code=True)")
    module_name, _, attr = target.partition(":")
    if not module_name or not attr:
        raise QdukdError(f"model {name!r}: an import path looks like 'package.module:Class'")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attr.split("."):
            obj = getattr(obj, part)
    except ImportError as e:
        raise QdukdError(f"model {name!r}: cannot import {module_name} ({e}); is its package installed or its "
                         "folder on PYTHONPATH?") from None
    except AttributeError:
        raise QdukdError(f"model {name!r}: {module_name} has no {attr}") from None
    if not (inspect.isclass(obj) and issubclass(obj, nn.Module)):
        raise QdukdError(f"model {name!r} is {type(obj).__name__} {target}, not an nn.Module subclass; "
                         "qdukd builds only networks")
    return obj


def check_conventions(model: nn.Module, name: str, scale: int, probe: int = 16) -> None:
    """A qdukd model maps (N, 3, h, w) float RGB in [0, 1] to (N, 3, scale*h, scale*w).

    Raises:
        QdukdError: naming the convention the model breaks.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            y = model(torch.rand(1, 3, probe, probe))
    except Exception as e:
        raise QdukdError(f"model {name!r} cannot run on a (1, 3, {probe}, {probe}) RGB batch ({type(e).__name__}: "
                         f"{e}); qdukd models take NCHW RGB in [0, 1]") from None
    finally:
        model.train(was_training)
    want = (1, 3, probe * scale, probe * scale)
    if not isinstance(y, torch.Tensor) or tuple(y.shape) != want or not y.is_floating_point():
        got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
        raise QdukdError(f"model {name!r} maps (1, 3, {probe}, {probe}) to {got}, not {want}: a qdukd model returns "
                         f"one float RGB tensor at x{scale} (its 'scale' argument)")


def expose_adds(model: nn.Module, name: str) -> nn.Module:
    """Route a model's tensor + tensor additions through :class:`~qdukd.models.common.Add` modules.

    The quantizer finds residual adds by module type; a user's ``forward`` writes them as
    ``a + b``. torch.fx finds them; the result is a ``GraphModule`` with the same parameters
    and state-dict keys (``Add`` has none), plus ``scale`` and ``config`` copied over. A model
    FX cannot trace is returned as it is, with a one-line warning: it trains and exports with
    float adds.

    Args:
        model: the network (RGB NCHW; it has passed :func:`check_conventions`).
        name: how messages name it.
    """
    try:
        gm = fx.symbolic_trace(model)
        gm.eval()  # the probe must not move batch-norm statistics
        with torch.no_grad():
            ShapeProp(gm).propagate(torch.rand(1, 3, 16, 16))  # tells tensors from shape arithmetic
        gm.train(model.training)
    except Exception as e:
        warnings.warn(f"model {name!r} cannot be traced by torch.fx ({type(e).__name__}); "
                      "its residual adds stay in float", stacklevel=2)
        return model

    def activation(a: Any) -> torch.Size | None:
        meta = a.meta.get("tensor_meta") if isinstance(a, fx.Node) and a.op != "get_attr" else None
        return getattr(meta, "shape", None)

    found = 0
    for node in list(gm.graph.nodes):
        is_add = node.op == "call_function" and node.target in (operator.add, torch.add) and not node.kwargs
        shapes = [activation(a) for a in node.args] if is_add and len(node.args) == 2 else [None]
        if None not in shapes and shapes[0] == shapes[1]:  # a residual add: two activations, one shape
            target = f"fx_add{found}"
            gm.add_submodule(target, Add())
            with gm.graph.inserting_after(node):
                new = gm.graph.call_module(target, tuple(node.args))
            new.meta = dict(node.meta)  # later adds read their inputs' shapes
            node.replace_all_uses_with(new)
            gm.graph.erase_node(node)
            found += 1
    gm.recompile()
    for attr in ("scale", "config"):
        if hasattr(model, attr):
            setattr(gm, attr, getattr(model, attr))
    return gm
