"""The training loop: a (quantized) student distilled from a frozen teacher, one readable loop.

Everything a resumed run needs lives in the checkpoint (see :mod:`qdukd.checkpoint`); patches
are a pure function of ``(seed, sample index)``, so resuming at step k, or splitting the batch
over processes, draws exactly what one uninterrupted process would.
"""

from __future__ import annotations

import copy
import csv
import math
import signal
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from tqdm import tqdm

from .atomic import atomic_path
from .checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from .config import to_dict
from .data import TrainPatches, calibration_batches
from .distill import TARGET_KEYS, Teacher, dukd_aux_terms, standard_terms
from .distill.target_cache import teacher_key, teacher_outputs
from .errors import QdukdError
from .models import build_model, load_weights
from .models.custom import expose_adds
from .quant import activation_range_parameters, calibrate, prepare_qat, quant_state
from .recipe import Recipe, StudentSection, check_device, resolve_path
from .run_folder import RunFolder
from .scoring import SetScore, check_set, score_set, torch_sr_function

# What may change when a run resumes: length, logging, validation, where it runs. Anything else
# would silently make the resumed run a different experiment.
RESUMABLE_KEYS = ("train.iters", "train.log_every", "train.val_every", "train.ckpt_every", "train.threads",
                  "train.device", "eval.sets", "eval.convention")


def learning_rate(step: int, recipe: Recipe) -> float:
    """The learning rate at ``step`` (a pure function, so resuming needs no scheduler state)."""
    t = recipe.train
    if t.scheduler == "cosine":
        return t.lr * 0.5 * (1 + math.cos(math.pi * min(step, t.iters) / max(t.iters, 1)))
    if t.scheduler == "multistep":
        return t.lr * t.gamma ** sum(step >= m for m in t.milestones)
    return t.lr


class EMA:
    """Exponential moving average of the student's parameters and buffers."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = decay
        self.state = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.state[k].lerp_(v, 1.0 - self.decay)
            else:
                self.state[k].copy_(v)


@dataclass
class Distributed:
    """This process's place in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world: int = 1

    @classmethod
    def from_env(cls) -> "Distributed":
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    @property
    def main(self) -> bool:
        return self.rank == 0


def _collate(items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    return {k: torch.stack([i[k] for i in items]) for k, v in items[0].items() if isinstance(v, torch.Tensor)}


class Trainer:
    """Builds everything from a recipe, trains, validates and checkpoints.

    The run folder is locked from construction until :meth:`fit` returns (or :meth:`close`).
    Every input (validation sets, patch size) is checked here, before the first step.

    Args:
        recipe: the full training recipe.
        out_dir: where checkpoints, ``log.csv``, ``val.csv`` and TensorBoard events go; it must not hold
            another run unless ``resume``.
        resume: continue from the newest checkpoint in ``out_dir``; with none there, start a
            new run (``resumed_from`` is then None).
        progress: show a progress bar (rank 0 only).
        student: an ``nn.Module`` to train instead of building ``student.model``. Its class must
            be importable (not defined in ``__main__``) and rebuildable from its ``config`` dict or
            ``student.args``: the checkpoint names it by import path, so eval/export/upscale
            rebuild it (with the trust opt-in).
        teacher: an ``nn.Module`` (with its weights) instead of ``teacher.model`` /
            ``teacher.weights``.
        trust_code: allow models the recipe names by import path or plugin (code outside qdukd).

    Raises:
        QdukdError: bad recipe values or data, a folder holding another run (or one whose
            recipe differs, on resume), a folder in use by another process.
    """

    def __init__(self, recipe: Recipe, out_dir: str | Path, resume: bool = False, progress: bool = True, *,
                 student: nn.Module | None = None, teacher: nn.Module | None = None,
                 trust_code: bool = False) -> None:
        if student is not None:
            recipe = replace(recipe, student=_student_section(student, recipe))
            trust_code = True  # the caller handed us this code
        self.recipe, self.out = recipe.check(), Path(out_dir)
        self.trust_code = trust_code
        self._objects = {"student": student, "teacher": teacher}
        self.dist = Distributed.from_env()
        self.progress = progress and self.dist.main
        self.folder = RunFolder(self.out)
        if self.dist.main:
            self.folder.acquire()
        try:
            self._setup(resume)
        except BaseException:
            self.folder.abandon()  # a refused run leaves no empty folder behind
            raise

    def _setup(self, resume: bool) -> None:
        r = self.recipe
        found = self.folder.holds_run()
        if found is not None and not resume:
            raise QdukdError(f"{self.out} already holds a run ({found.name}); continue it with --resume, "
                             "or choose a new --out")
        check_device(r.train.device)
        for s in r.eval.sets:  # found now, not after the last step
            check_set(resolve_path(s), r.data.scale)
        if r.data.batch % self.dist.world:
            raise QdukdError(f"data.batch={r.data.batch} must divide by the {self.dist.world} processes")
        if r.dukd.mode != "gt" and not r.teacher.model and self._objects["teacher"] is None:
            raise QdukdError(f"dukd.mode={r.dukd.mode!r} needs a teacher: set teacher.model and teacher.weights")
        if r.train.threads:
            torch.set_num_threads(r.train.threads)
        self.device = torch.device(r.train.device)
        torch.manual_seed(r.train.seed)
        self.data = TrainPatches([resolve_path(p) for p in r.data.train], r.data.scale, r.data.patch,
                                 holdout=[resolve_path(p) for p in r.data.holdout],
                                 seed=r.train.seed, augment=r.data.augment, progress=self.progress)
        self.teacher = self._build_teacher()
        self._cache_teacher_targets()
        self.student = self._build_student().to(self.device)
        if r.student.init:
            self._load_init(resolve_path(r.student.init))
        self._check_patch()
        if r.quant is not None:
            prepare_qat(self.student, r.quant)
        self.step = 0
        self.optimizer = self._build_optimizer()
        self.ema = EMA(self.student, r.train.ema) if r.train.ema > 0 else None
        self.generator = torch.Generator().manual_seed(r.train.seed)
        self.metrics: dict[str, float] = {}
        self.resumed_from = self.latest_checkpoint() if resume else None
        if self.resumed_from is not None:
            self._restore(load_checkpoint(self.resumed_from))
        elif r.quant is not None:
            self._calibrate()
        self.model = self.student
        if self.dist.world > 1:
            self.model = nn.parallel.DistributedDataParallel(self.student)
        self._stop_signal: int | None = None

    def close(self) -> None:
        """Release the run folder's lock (done by :meth:`fit`; for trainers that never fit)."""
        self.folder.release()

    # -- construction -------------------------------------------------------------------------
    def _build_student(self) -> nn.Module:
        r, given = self.recipe, self._objects["student"]
        built = build_model(r.student.model, r.data.scale, trust_code=self.trust_code, **r.student.args)
        if given is None:
            return built
        # The object trains; the rebuilt twin proves eval/export can rebuild it from the checkpoint.
        given = expose_adds(given, r.student.model)
        ours, theirs = built.state_dict(), given.state_dict()
        if {k: v.shape for k, v in ours.items()} != {k: v.shape for k, v in theirs.items()}:
            raise QdukdError(f"the student object does not match {r.student.model}({r.student.args}) rebuilt from "
                             "its arguments: give it a 'config' dict of its constructor arguments, or set "
                             "student.args")
        return given

    def _build_teacher(self) -> Teacher | None:
        t, given = self.recipe.teacher, self._objects["teacher"]
        if self.recipe.dukd.mode == "gt" or not (t.model or given is not None):
            return None
        if given is not None:
            if t.cache_dir:
                raise QdukdError("teacher.cache_dir keys cached outputs by the teacher's weights file: name the "
                                 "teacher in the recipe (teacher.model, teacher.weights) or leave cache_dir empty")
            return Teacher(given.to(self.device))
        net = build_model(t.model, self.recipe.data.scale, trust_code=self.trust_code, **t.args)
        if not t.weights:
            raise QdukdError("teacher.weights is empty: a teacher needs its pretrained weights")
        load_weights(net, resolve_path(t.weights))
        return Teacher(net.to(self.device))

    def _cache_teacher_targets(self) -> None:
        """Precompute the teacher's whole-image outputs the recipe asks for (see docs/TRAINING.md)."""
        r, t = self.recipe, self.recipe.teacher
        wanted = {"kd": (t.cache, "lr", self.data.lrs),
                  "zoom_in": (t.cache_zoom_in and r.dukd.mode == "dukd", "hr", self.data.hrs)}
        if self.teacher is None or not any(on for on, _, _ in wanted.values()):
            return
        key = teacher_key(t.model, t.args, resolve_path(t.weights), r.data.scale) if t.cache_dir else ""
        for name, (on, kind, images) in wanted.items():
            if on:
                # Every rank computes what it needs alone; with a cache folder, files another rank
                # wrote first are reused (writes are atomic, so a rank sees a whole file or none).
                self.data.targets[name] = teacher_outputs(
                    self.teacher, images, r.data.scale, kind, key=key,
                    folder=t.cache_dir, device=self.device, progress=self.progress)

    @torch.no_grad()
    def _check_patch(self) -> None:
        """The student must run on the recipe's patches (and DUKD's zoom-out inputs) at x scale."""
        d, k = self.recipe.data, self.recipe.dukd
        sizes = [d.patch] + ([math.ceil(d.patch / d.scale)] if k.mode == "dukd" and k.zoom_out else [])
        self.student.eval()
        for n in sizes:
            what = "LR patches" if n == d.patch else f"DUKD's zoom-out inputs ({n}x{n} at data.patch = {d.patch})"
            try:
                y = self.student(torch.zeros(1, 3, n, n, device=self.device))
            except Exception as e:
                raise QdukdError(f"data.patch = {d.patch} is too small for {self.recipe.student.model}: it cannot "
                                 f"run on {what} ({type(e).__name__}); raise data.patch") from None
            if tuple(y.shape) != (1, 3, n * d.scale, n * d.scale):
                raise QdukdError(f"student {self.recipe.student.model} maps {n}x{n} to {tuple(y.shape[-2:])}, not "
                                 f"x{d.scale}: check data.scale and the student's arguments")
        self.student.train()

    def _load_init(self, path: Path) -> None:
        """Start from FP weights: a plain state_dict, or an FP qdukd run's checkpoint (EMA first)."""
        ckpt = read_checkpoint(path)
        if ckpt is not None:
            if ckpt.get("quant") is not None:
                raise QdukdError(f"student.init {path} is a quantized run; start QAT from an FP checkpoint")
            load_weights(self.student, ckpt["ema"] if ckpt.get("ema") is not None else ckpt["student"])
        else:
            load_weights(self.student, path)

    def _build_optimizer(self) -> torch.optim.Optimizer:
        t = self.recipe.train
        cls = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
        return cls(self.student.parameters(), lr=t.lr, betas=t.betas, weight_decay=t.weight_decay)

    def _batch(self, step: int) -> dict[str, torch.Tensor]:
        """This rank's share of the global batch of ``step`` (``lr``, ``hr``, cached ``target``)."""
        b = self.recipe.data.batch
        local = b // self.dist.world
        start = step * b + self.dist.rank * local
        batch = _collate([self.data[i] for i in range(start, start + local)])
        return {k: v.to(self.device) for k, v in batch.items()}

    @torch.no_grad()
    def _calibrate(self) -> None:
        """Initialise quantization ranges on real training batches (the same ones on every rank)."""
        batches = calibration_batches(self.data, self.recipe.data.batch, self.recipe.train.calib_batches)
        calibrate(self.student, [b.to(self.device) for b in batches])

    # -- checkpoints --------------------------------------------------------------------------
    def latest_checkpoint(self) -> Path | None:
        ckpts = self.folder.checkpoints()
        return ckpts[-1] if ckpts else None

    def state(self) -> dict[str, Any]:
        return {
            "recipe": self.recipe.to_dict(),
            "model": {"name": self.recipe.student.model,
                      "kwargs": {"scale": self.recipe.data.scale, **self.recipe.student.args}},
            "student": self.student.state_dict(),
            "quant": quant_state(self.student) if self.recipe.quant is not None else None,
            "ema": self.ema.state if self.ema else None,
            "optimizer": self.optimizer.state_dict(),
            "step": self.step,
            "rng": {"torch": torch.get_rng_state(), "generator": self.generator.get_state()},
            "metrics": self.metrics,
        }

    def save(self) -> Path:
        path = self.out / f"step_{self.step:08d}.pt"
        if self.dist.main:
            save_checkpoint(path, self.state())
            save_checkpoint(self.out / "last.pt", self.state())
        return path

    def _restore(self, ckpt: dict[str, Any]) -> None:
        saved = _flat(to_dict(Recipe.from_saved(ckpt["recipe"])))
        ours = _flat(to_dict(self.recipe))
        for key in sorted(set(saved) | set(ours)):
            if key not in RESUMABLE_KEYS and saved.get(key) != ours.get(key):
                raise QdukdError(f"the run in {self.out} was started with {key} = {saved.get(key)!r}, this recipe "
                                 f"says {ours.get(key)!r}: resume with the recipe that started the run (only "
                                 f"{', '.join(RESUMABLE_KEYS)} may change)")
        self.student.load_state_dict(ckpt["student"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.ema is not None and ckpt["ema"] is not None:
            self.ema.state = ckpt["ema"]
        self.step = ckpt["step"]
        torch.set_rng_state(ckpt["rng"]["torch"])
        self.generator.set_state(ckpt["rng"]["generator"])
        self.metrics = ckpt.get("metrics", {})

    # -- training -----------------------------------------------------------------------------
    def train_step(self, step: int) -> dict[str, float]:
        """One iteration; returns the named loss terms as floats."""
        r = self.recipe
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(step, r)
        batch = self._batch(step)
        lr, hr = batch["lr"], batch["hr"]
        self.model.train()
        cached = {k: batch[k] for k in TARGET_KEYS if k in batch}  # each loss half uses its own keys
        terms = standard_terms(self.model, self.teacher, lr, hr, r.dukd, teacher_targets=cached)
        self._backward(terms, step)
        if r.dukd.mode == "dukd":
            if r.dukd.schedule == "two_step":
                self._optimizer_step(zero=False)  # the reference lets gradients accumulate
            aux = dukd_aux_terms(self.model, self.teacher, lr, hr, r.data.scale, r.dukd, self.generator,
                                 teacher_targets=cached,
                                 shard=(self.dist.rank, self.dist.world))
            # Auxiliary inputs (sharp tiles, tiny zoom-outs, inverted colours) are not what the
            # deployed model sees; by default they do not move the activation ranges.
            frozen = r.quant is not None and not r.dukd.aux_updates_ranges
            self._backward(aux, step, freeze_ranges=frozen)
            terms = {**{k: v for k, v in terms.items() if k != "total"}, **aux,
                     "total": terms["total"].detach() + aux["total"].detach()}
        self._optimizer_step(zero=True)
        if self.ema is not None:
            self.ema.update(self.student)
        return {k: float(v.detach()) for k, v in terms.items()}

    def _backward(self, terms: dict[str, torch.Tensor], step: int, freeze_ranges: bool = False) -> None:
        for name, value in terms.items():
            if not torch.isfinite(value):
                raise QdukdError(f"loss term {name!r} is {float(value.detach())} at step {step}: "
                                         "lower train.lr or set train.grad_clip")
        if freeze_ranges:
            with _frozen_grads(activation_range_parameters(self.student)):
                terms["total"].backward()
        else:
            terms["total"].backward()

    def _optimizer_step(self, zero: bool) -> None:
        if self.recipe.train.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.student.parameters(), self.recipe.train.grad_clip)
        self.optimizer.step()
        if zero:
            self.optimizer.zero_grad(set_to_none=True)

    def score(self, model: nn.Module) -> list[SetScore]:
        """PSNR_Y / SSIM_Y of any model on the recipe's validation sets."""
        sr_fn = torch_sr_function(model.to(self.device), self.device)
        return [score_set(sr_fn, resolve_path(s), self.recipe.data.scale, self.recipe.eval.convention,
                          progress=False) for s in self.recipe.eval.sets]

    def validate(self) -> list[SetScore]:
        """PSNR_Y of the EMA (if any) or live student on the recipe's validation sets."""
        model = self.student
        if self.ema is not None:
            model = copy.deepcopy(self.student)
            model.load_state_dict(self.ema.state)
        scores = self.score(model)
        self.student.train()
        self.metrics = {s.name: s.psnr_y for s in scores}
        return scores

    def fit(self) -> list[SetScore]:
        """Train to ``train.iters``, save, then validate; Ctrl-C / SIGTERM saves and stops cleanly.

        The final checkpoint is on disk before validation runs, so nothing that fails there
        loses the trained student; it is written again with the validation metrics.
        """
        try:
            return self._fit()
        finally:
            self.close()

    def _fit(self) -> list[SetScore]:
        r = self.recipe
        log = _CsvLog(self.out / "log.csv", after=self.step) if self.dist.main else None
        val_log = _CsvLog(self.out / "val.csv", after=self.step) if self.dist.main else None
        tb = _tensorboard(self.out) if self.dist.main else None
        previous = {s: signal.signal(s, self._request_stop) for s in (signal.SIGINT, signal.SIGTERM)}
        bar = tqdm(total=r.train.iters, initial=self.step, desc="train", disable=not self.progress,
                   dynamic_ncols=True)
        scores: list[SetScore] = []
        try:
            t0, done = time.perf_counter(), 0
            while self.step < r.train.iters and self._stop_signal is None:
                terms = self.train_step(self.step)
                self.step += 1
                done += 1
                bar.update(1)
                if self.step % max(r.train.log_every, 1) == 0 or self.step == r.train.iters:
                    rate = done / (time.perf_counter() - t0)
                    if log:
                        log.write({"step": self.step, "lr": learning_rate(self.step - 1, r),
                                   "it_per_s": round(rate, 4), **terms})
                    if tb:
                        for k, v in terms.items():
                            tb.add_scalar(f"loss/{k}", v, self.step)
                    bar.set_postfix(loss=f"{terms['total']:.4f}", it_s=f"{rate:.2f}",
                                    **{f"psnr_{k}": f"{v:.2f}" for k, v in self.metrics.items()})
                if r.train.val_every and self.step % r.train.val_every == 0 and self.step < r.train.iters:
                    scores = self._validate_and_log(val_log)
                    if tb:
                        for k, v in self.metrics.items():
                            tb.add_scalar(f"psnr_y/{k}", v, self.step)
                if r.train.ckpt_every and self.step % r.train.ckpt_every == 0:
                    self.save()
            path = self.save()
            if self._stop_signal is not None:
                if self.dist.main:
                    tqdm.write(f"signal {self._stop_signal}: stopped after step {self.step}, saved {path}; "
                               "continue with --resume", file=sys.stderr)
            else:
                scores = self._validate_and_log(val_log)
                self.save()  # again, now with the validation metrics
        finally:
            bar.close()
            for s, h in previous.items():
                signal.signal(s, h)
            if tb:
                tb.close()
        return scores

    def _validate_and_log(self, val_log: _CsvLog | None) -> list[SetScore]:
        scores = self.validate()
        if val_log:
            val_log.write({"step": self.step, **{f"psnr_y/{k}": v for k, v in self.metrics.items()}})
        return scores

    @property
    def stop_signal(self) -> int | None:
        """The signal (SIGINT / SIGTERM) that stopped :meth:`fit` early, or None."""
        return self._stop_signal

    def _request_stop(self, signum: int, frame: Any) -> None:
        # The step in flight finishes first; the notice after saving names the step saved.
        self._stop_signal = signum


def _student_section(student: nn.Module, recipe: Recipe) -> StudentSection:
    """The recipe's student section for a student given as an object: its class by import path."""
    cls = type(student)
    if cls.__module__ == "__main__" or "<locals>" in cls.__qualname__:
        raise QdukdError(f"the student's class {cls.__qualname__} is defined in a script or function; define it in "
                         "an importable module so a checkpoint can name it (docs/CUSTOM_MODELS.md)")
    scale = getattr(student, "scale", recipe.data.scale)
    if scale != recipe.data.scale:
        raise QdukdError(f"the student is x{scale}, the recipe's data.scale is {recipe.data.scale}")
    config = getattr(student, "config", None)
    args = {k: v for k, v in config.items() if k != "scale"} if isinstance(config, dict) else dict(recipe.student.args)
    return StudentSection(model=f"{cls.__module__}:{cls.__qualname__}", args=args, init=recipe.student.init)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"train": {"iters": 3}}`` -> ``{"train.iters": 3}`` (arbitrary dicts such as model args stay whole)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and not prefix:
            out.update(_flat(v, f"{k}."))
        else:
            out[prefix + k] = v
    return out


class _frozen_grads:
    """Keep the gradients of ``params`` as they are across a backward pass."""

    def __init__(self, params: list[nn.Parameter]) -> None:
        self.params = params

    def __enter__(self) -> None:
        self.saved = [None if p.grad is None else p.grad.clone() for p in self.params]

    def __exit__(self, *exc: Any) -> None:
        for p, g in zip(self.params, self.saved):
            p.grad = g


class _CsvLog:
    """A run's CSV log: ``log.csv`` (one row per logged step: lr, it/s, loss terms) or ``val.csv``
    (one row per validation: PSNR_Y per set, at the step it was measured). A resumed run first
    drops the rows logged after its checkpoint (the killed run's steps that were never saved),
    so each step appears once."""

    def __init__(self, path: Path, after: int) -> None:
        self.path = path
        if path.exists():
            with path.open(newline="") as f:
                rows = list(csv.reader(f))
            keep = rows[:1] + [row for row in rows[1:] if row and int(row[0]) <= after]
            if after == 0 or len(keep) <= 1:
                path.unlink()
            elif len(keep) < len(rows):
                with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
                    csv.writer(f).writerows(keep)

    def write(self, row: dict[str, float]) -> None:
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            w = csv.DictWriter(f, fieldnames=list(row), extrasaction="ignore")
            if new:
                w.writeheader()
            w.writerow(row)


def _tensorboard(out: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional
        return None
    return SummaryWriter(str(out / "tb"))
