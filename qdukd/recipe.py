"""Training recipes: typed, frozen sections read from TOML, with ``key=value`` overrides.

A recipe file has the sections ``[data] [teacher] [student] [quant] [dukd] [train] [eval]``.
Unknown keys are errors (with the closest valid key suggested), so a typo never becomes a
silent default. Paths starting with ``demo:`` point into the bundled demo images.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import torch

from .config import from_dict, override, to_dict
from .distill import DukdConfig
from .errors import QdukdError
from .metrics import Convention
from .quant.config import QuantConfig
from .tomlcompat import tomllib

DEMO_DATA = Path(__file__).resolve().parent / "demo_data"


def resolve_path(path: str) -> Path:
    """``demo:train`` -> the bundled demo folder; anything else as given."""
    return DEMO_DATA / path[5:] if path.startswith("demo:") else Path(path)


@dataclass(frozen=True)
class DataSection:
    """Training data: HR folders or BasicSR-layout sets, cut into random patches."""

    train: tuple[str, ...] = ("demo:train",)
    # Sets (folders or .txt set files) of training images never trained on: a validation split
    # to choose settings on, listed in eval.sets too (Set5/Set14 are test sets, reported only).
    holdout: tuple[str, ...] = ()
    scale: int = 4
    patch: int = 48  # LR patch size
    batch: int = 16
    augment: bool = True


@dataclass(frozen=True)
class TeacherSection:
    """The frozen FP teacher; ``model = ""`` means none (GT-only training)."""

    model: str = ""
    weights: str = ""
    args: dict[str, Any] = field(default_factory=dict)
    # Compute the teacher's output once per whole LR training image (float16) and crop the kd
    # target of each patch from it, instead of running the teacher on every patch.
    cache: bool = False
    # The same for DUKD's zoom-in tiles: the teacher's output of every whole HR image (scale**2
    # times the HR pixels: 6.8 GB at x4 for ../shared/data/train, so use cache_dir).
    cache_zoom_in: bool = False
    # Folder for cached outputs (.npy, read memory-mapped), shared by every run with the same
    # teacher and images; "" = in memory, recomputed by each run.
    cache_dir: str = ""


@dataclass(frozen=True)
class StudentSection:
    """The student architecture and an optional FP checkpoint to start from."""

    model: str = "edsr"
    args: dict[str, Any] = field(default_factory=dict)
    init: str = ""


@dataclass(frozen=True)
class TrainSection:
    """Optimisation, schedule, logging and checkpoints."""

    iters: int = 1000
    optimizer: Literal["adam", "adamw"] = "adam"
    lr: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.99)
    weight_decay: float = 0.0
    scheduler: Literal["multistep", "cosine", "constant"] = "multistep"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    ema: float = 0.0  # EMA decay of the student weights; 0 = off
    grad_clip: float = 0.0  # max gradient norm; 0 = off
    seed: int = 0
    device: str = "cpu"
    threads: int = 0  # torch CPU threads; 0 = torch's default
    log_every: int = 50
    val_every: int = 0  # 0 = only at the end
    ckpt_every: int = 0  # 0 = only at the end
    calib_batches: int = 4  # batches that initialise the quantization ranges


@dataclass(frozen=True)
class EvalSection:
    """Validation sets (PSNR_Y) used during and after training."""

    sets: tuple[str, ...] = ("demo:val",)
    convention: Convention = "float"


@dataclass(frozen=True)
class Recipe:
    data: DataSection = field(default_factory=DataSection)
    teacher: TeacherSection = field(default_factory=TeacherSection)
    student: StudentSection = field(default_factory=StudentSection)
    quant: QuantConfig | None = None  # None: an FP student
    dukd: DukdConfig = field(default_factory=DukdConfig)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Recipe":
        return from_dict(cls, data)

    @classmethod
    def from_saved(cls, data: dict[str, Any]) -> "Recipe":
        """The recipe a checkpoint stores, its quant section read as that qdukd version meant it."""
        quant = data.get("quant")
        return replace(from_dict(cls, {**data, "quant": None}),
                       quant=QuantConfig.from_saved(quant) if quant is not None else None)

    def check(self) -> "Recipe":
        """Range-check the values (types were checked on load); return ``self``.

        Raises:
            QdukdError: naming the full key (``train.iters``) and what it must be.
        """
        d, t, k = self.data, self.train, self.dukd
        rules = [
            ("data.train", len(d.train) > 0, "must list at least one training folder"),
            ("data.scale", d.scale in (2, 3, 4), "must be 2, 3 or 4"),
            ("data.batch", d.batch >= 1, "must be >= 1"),
            ("data.patch", d.patch >= 2, "must be >= 2 LR pixels"),
            ("train.iters", t.iters >= 0, "must be >= 0"),
            ("train.lr", t.lr > 0, "must be > 0"),
            ("train.betas", all(0 <= b < 1 for b in t.betas), "must both be in [0, 1)"),
            ("train.weight_decay", t.weight_decay >= 0, "must be >= 0"),
            ("train.gamma", t.gamma > 0, "must be > 0"),
            ("train.milestones", list(t.milestones) == sorted(t.milestones) and all(m > 0 for m in t.milestones),
             "must be positive and increasing"),
            ("train.ema", 0 <= t.ema < 1, "must be in [0, 1) (0 = off)"),
            ("train.grad_clip", t.grad_clip >= 0, "must be >= 0 (0 = off)"),
            ("train.threads", t.threads >= 0, "must be >= 1 (or 0 for torch's default)"),
            ("train.log_every", t.log_every >= 1, "must be >= 1"),
            ("train.val_every", t.val_every >= 0, "must be >= 0 (0 = only at the end)"),
            ("train.ckpt_every", t.ckpt_every >= 0, "must be >= 0 (0 = only at the end)"),
            ("train.calib_batches", t.calib_batches >= 1, "must be >= 1"),
            ("eval.sets", len(self.eval.sets) > 0, "must list at least one validation folder"),
            ("dukd.p", 0 <= k.p <= 1, "must be a probability in [0, 1]"),
            ("dukd.w_pix", k.w_pix >= 0, "must be >= 0"),
            ("dukd.w_kd", k.w_kd >= 0, "must be >= 0"),
            ("dukd.w_zoom_in", k.w_zoom_in >= 0, "must be >= 0"),
            ("dukd.w_zoom_out", k.w_zoom_out >= 0, "must be >= 0"),
            ("dukd.n_zoom_in", k.n_zoom_in >= 0, "must be >= 0 (0 = the reference's count)"),
        ]
        for key, ok, must in rules:
            if not ok:
                section, name = key.split(".")
                raise QdukdError(f"{key} {must}, got {getattr(getattr(self, section), name)!r}")
        return self

    def with_overrides(self, pairs: list[str]) -> "Recipe":
        """Apply ``["train.iters=1000", "dukd.mode=kd"]`` in order."""
        recipe = self
        for pair in pairs:
            key, sep, value = pair.partition("=")
            if not sep:
                raise QdukdError(f"override must look like section.key=value, got {pair!r}")
            recipe = override(recipe, key.strip(), value.strip())
        return recipe


def check_device(device: str) -> None:
    """``train.device`` must name a device this machine has (checked by the trainer, not on load:
    a GPU recipe still loads for reading on a CPU machine).

    Raises:
        QdukdError: not a device name, or not present here.
    """
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise QdukdError(f"train.device {device!r} is not a device name (use cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (dev.index or 0) >= count:
            raise QdukdError(f"train.device {device!r} does not exist here ({count} CUDA device(s)); "
                             "use train.device=cpu")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise QdukdError("train.device 'mps' is not available here; use train.device=cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise QdukdError(f"train.device {device!r} is not supported; use cpu or cuda")


def _read_toml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a recipe file, following ``extends = "base.toml"`` (relative to the file)."""
    if path.is_dir():
        raise QdukdError(f"recipe {path} is a folder; pass a .toml file")
    if not path.is_file():
        raise QdukdError(f"recipe not found: {path}")
    if path.resolve() in seen:
        raise QdukdError(f"{path}: 'extends' loops back to itself")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise QdukdError(f"recipe {path} is not a text file; pass a TOML recipe") from None
    except tomllib.TOMLDecodeError as e:
        raise QdukdError(f"{path}: not valid TOML: {e}") from None
    base = data.pop("extends", None)
    if base is None:
        return data
    return _merge(_read_toml(path.parent / base, seen + (path.resolve(),)), data)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_recipe(path: str | Path, overrides: list[str] = ()) -> Recipe:
    """Read a TOML recipe (``extends`` chains merged) and apply ``key=value`` overrides.

    Args:
        path: a recipe file (an existing file wins) or a shipped recipe's name (``demo``, ``cpu/w4a4``).
        overrides: ``section.key=value`` strings, applied in order.

    Raises:
        QdukdError: missing file or unknown name, TOML syntax error, unknown key or wrong type.
    """
    from .resources import recipe_path

    path = recipe_path(path)
    data = _read_toml(path)
    try:
        return Recipe.from_dict(data).with_overrides(list(overrides)).check()
    except QdukdError as e:
        raise QdukdError(f"{path}: {e}") from None


def method_label(recipe: dict[str, Any]) -> str:
    """The training method a stored recipe (``checkpoint["recipe"]``) names, as reports show it:
    ``gt``, ``kd``, ``dukd`` or ``dukd (two-step)``; ``?`` when it names none."""
    dukd = recipe.get("dukd") if isinstance(recipe.get("dukd"), dict) else {}
    mode = str(dukd.get("mode", "?"))
    return f"{mode} (two-step)" if mode == "dukd" and dukd.get("schedule") == "two_step" else mode
