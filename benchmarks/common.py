"""What every benchmark script shares: the machine label, median timing, the results folder and
reading a results file back."""

from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime
import torch

RESULTS = Path(__file__).resolve().parent / "results"
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def read_results(path: Path, fields: dict[str, type], what: str, fix: str) -> dict:
    """A script's JSON results file, read back to append to or tabulate.

    Args:
        path: the file (it must exist).
        fields: top-level keys the file must hold, with their types (e.g. ``{"rows": dict}``).
        what: the kind of file, for the error ("a zoo results file").
        fix: what to do instead, for the error ("give --out a new file").

    Anything else (unreadable, not JSON, wrong shape) is one ``error:`` line and exit 2, so a
    wrong ``--out`` is never overwritten or half-used.
    """
    try:
        data = json.loads(path.read_text())
        missing = [k for k, t in fields.items() if not (isinstance(data, dict) and isinstance(data.get(k), t))]
        if missing:
            raise ValueError("no " + " / ".join(repr(k) for k in missing))
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        print(f"error: {path} is not {what} ({type(e).__name__}: {e}); {fix}", file=sys.stderr)
        raise SystemExit(2) from None
    return data


def machine() -> dict[str, object]:
    """Where a number was measured: CPU model, cores, library versions."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                   if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
            "onnxruntime": onnxruntime.__version__}


def median_seconds(fn: Callable[[], object], runs: int, warmup: int = 3) -> float:
    """Median wall time of ``fn()`` over ``runs`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def conv_macs(model: torch.nn.Module, input_shape: tuple[int, ...]) -> int:
    """Multiply-accumulates of one forward pass, counted by forward hooks on every Conv2d,
    ConvTranspose2d and Linear (nothing else: pooling, interpolation, activations and adds are
    not counted, as in the SR papers' MAC/FLOP tables).

    Conv2d: out_elements * (in_channels / groups) * kh * kw per sample;
    ConvTranspose2d: in_elements * (out_channels / groups) * kh * kw (every input pixel scatters
    a kernel); Linear: out_elements * in_features. Bias adds are not counted.
    """
    total = 0

    def hook(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, torch.nn.ConvTranspose2d):
            kh, kw = module.kernel_size
            total += inputs[0].numel() * (module.out_channels // module.groups) * kh * kw
        elif isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            total += output.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, torch.nn.Linear):
            total += output.numel() * module.in_features

    kinds = (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    try:
        with torch.no_grad():
            model(torch.zeros(input_shape))
    finally:
        for h in handles:
            h.remove()
    return total


# Hand-computed check: a 5x5 conv, 3 -> 64 channels, padding 2, on a 256x256 image makes
# 64 * 256 * 256 outputs of 3 * 5 * 5 MACs each = 64 * 65536 * 75 = 314,572,800; a 9x9 transposed
# conv 56 -> 3, stride 4, on a 16x16 input: 56 * 16 * 16 inputs x 3 * 81 = 3,483,648.
assert conv_macs(torch.nn.Conv2d(3, 64, 5, padding=2), (1, 3, 256, 256)) == 314_572_800
assert conv_macs(torch.nn.ConvTranspose2d(56, 3, 9, stride=4, padding=4, output_padding=3),
                 (1, 56, 16, 16)) == 3_483_648


def train_run(recipe_file: str | Path, out: Path, overrides: list[str]) -> dict:
    """Train one recipe (resuming a run ``out`` already holds) and return its final PSNR_Y per set.

    Returns ``{"recipe", "overrides", "iters", "seconds", "it_per_s", <set name lowercased>: PSNR_Y, ...}``.
    A run stopped by a signal records nothing: the script exits and a rerun continues it.
    """
    from qdukd.recipe import load_recipe
    from qdukd.trainer import Trainer

    recipe = load_recipe(recipe_file, overrides)
    trainer = Trainer(recipe, out, resume=True, progress=False)
    start, t0 = trainer.step, time.perf_counter()
    scores = trainer.fit()
    seconds = time.perf_counter() - t0
    if trainer.step < recipe.train.iters:
        raise SystemExit(f"stopped at step {trainer.step} of {out}; rerun to continue this run")
    return {"recipe": str(recipe_file), "overrides": overrides, "iters": recipe.train.iters, "seconds": seconds,
            "it_per_s": (recipe.train.iters - start) / seconds, **{s.name.lower(): s.psnr_y for s in scores}}
