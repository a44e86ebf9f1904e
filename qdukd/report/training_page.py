"""``report.html`` of training runs: every curve a run logs, several runs overlaid.

A run folder (``python -m qdukd.train ... --out DIR``) holds ``log.csv`` (one row per logged
step: ``step``, ``lr``, ``it_per_s`` and every loss term) and ``val.csv`` (one row per
validation: ``step`` and ``psnr_y/<set>``); for runs written before ``val.csv`` existed, the
``psnr_y/<set>`` columns of ``log.csv`` or else ``last.pt``'s final metrics are read instead.
``last.pt`` names the student, the method (``dukd.mode``: GT-only, KD, DUKD) and the bits, when
it can be read.

The curves are drawn with matplotlib (the Agg renderer on a ``Figure``, no pyplot state) and
embedded as one PNG: every loss term, the learning rate, validation PSNR_Y per set and
iterations per second, one colour per run.
"""

from __future__ import annotations

import csv
import math
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import QdukdError
from ..recipe import method_label
from ..torchfile import read_torch_file
from .html import Raw, cell, fmt, page, plot_image, table, tag, write_page

LOG, VAL, CHECKPOINT = "log.csv", "val.csv", "last.pt"
PSNR_PREFIX = "psnr_y/"
_NOT_TERMS = {"step", "lr", "it_per_s"}


@dataclass
class Run:
    """One run folder, read: ``series`` maps a column of ``log.csv`` to its (step, value) points,
    ``val`` a validation set to its (step, PSNR_Y) points."""

    folder: Path
    label: str
    series: dict[str, list[tuple[int, float]]]
    val: dict[str, list[tuple[int, float]]]
    summary: dict[str, str] = field(default_factory=dict)

    @property
    def terms(self) -> list[str]:
        """The loss-term columns, in log order."""
        return [k for k in self.series if k not in _NOT_TERMS and not k.startswith(PSNR_PREFIX)]


def read_csv_log(path: Path) -> dict[str, list[tuple[int, float]]]:
    """The columns of a run's CSV log as (step, value) points; empty cells are skipped.

    Raises:
        QdukdError: empty, without a ``step`` column, without rows, or with a cell that is not a
            number (naming the line).
    """
    try:
        with path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except UnicodeDecodeError:
        raise QdukdError(f"{path} is not a text CSV file (corrupt?); remove it or point at another run") from None
    if not rows or not any(rows[0]):
        raise QdukdError(f"{path} is empty: the run wrote nothing yet (it logs every train.log_every steps)")
    header = [h.strip() for h in rows[0]]
    if "step" not in header:
        raise QdukdError(f"{path} has no 'step' column (its header is {','.join(header)[:80]!r}): not a qdukd "
                         "training log")
    series: dict[str, list[tuple[int, float]]] = {h: [] for h in header if h != "step"}
    data = [(n, row) for n, row in enumerate(rows[1:], start=2) if any(c.strip() for c in row)]
    if not data:
        raise QdukdError(f"{path} has a header but no rows yet: the run has not logged a step")
    for line, row in data:
        if len(row) > len(header):
            raise QdukdError(f"{path} line {line} has {len(row)} cells, the header {len(header)}: the file is "
                             "corrupt (written by two runs?)")
        values = dict(zip(header, row))
        step = _number(values.get("step", ""), path, line, "step")
        if step is None or step != int(step):
            raise QdukdError(f"{path} line {line}: step {values.get('step')!r} is not a whole number")
        for name, text in values.items():
            value = _number(text, path, line, name)
            if name != "step" and value is not None:
                series[name].append((int(step), value))
    return {k: v for k, v in series.items() if v}


def _number(text: str, path: Path, line: int, column: str) -> float | None:
    text = text.strip()
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise QdukdError(f"{path} line {line}: {column} = {text[:40]!r} is not a number (corrupt log?)") from None


def _checkpoint(folder: Path) -> tuple[dict[str, str], dict[str, list[tuple[int, float]]]]:
    """Model, method and bits from the run's ``last.pt``, and its validation PSNR_Y per set at its
    step (both empty when the file is missing or unreadable)."""
    try:
        ckpt = read_torch_file(folder / CHECKPOINT, "checkpoint") if (folder / CHECKPOINT).is_file() else None
    except QdukdError:
        ckpt = None
    recipe = ckpt.get("recipe") if isinstance(ckpt, dict) else None
    if not isinstance(recipe, dict):
        return {}, {}
    student, quant = recipe.get("student", {}), recipe.get("quant")
    args = ", ".join(f"{k}={v}" for k, v in (student.get("args") or {}).items())
    summary = {"model": f"{student.get('model', '?')}({args}) x{recipe.get('data', {}).get('scale', '?')}",
               "method": method_label(recipe),
               "bits": f"W{quant['w_bits']}A{quant['a_bits']}" if isinstance(quant, dict) else "float",
               "iters": str(recipe.get("train", {}).get("iters", "?"))}
    metrics, step = ckpt.get("metrics") or {}, ckpt.get("step")
    val = {k: [(int(step), float(v))] for k, v in metrics.items()} if isinstance(step, int) else {}
    return summary, val


def read_run(folder: str | Path, label: str | None = None) -> Run:
    """Read a run folder (``log.csv``, ``val.csv`` if present, ``last.pt`` if readable).

    Raises:
        QdukdError: missing folder, no ``log.csv``, or a log that cannot be read (see
            :func:`read_csv_log`).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise QdukdError(f"run folder {folder} is {'a file' if folder.exists() else 'missing'}; pass the --out "
                         "folder of a qdukd.train run")
    if not (folder / LOG).is_file():
        raise QdukdError(f"{folder} has no {LOG}: not a qdukd.train run folder, or the run stopped before its first "
                         "logged step (train.log_every)")
    series = read_csv_log(folder / LOG)
    summary, final = _checkpoint(folder)
    if (folder / VAL).is_file():
        val = {k[len(PSNR_PREFIX):]: v for k, v in read_csv_log(folder / VAL).items() if k.startswith(PSNR_PREFIX)}
    else:  # older runs: the last validation repeated on every row of log.csv, the final one in last.pt
        val = {k[len(PSNR_PREFIX):]: v for k, v in series.items() if k.startswith(PSNR_PREFIX)} or final
    return Run(folder, label or folder.name, series, val, summary)


def run_labels(folders: list[Path]) -> list[str]:
    """Folder names, or the paths as given where two runs share a name."""
    names = [f.name or str(f) for f in folders]
    return [n if names.count(n) == 1 else str(f) for n, f in zip(names, folders)]


def curves_figure(runs: list[Run]) -> Any:
    """One matplotlib ``Figure``: a panel per loss term, the learning rate, PSNR_Y per set, it/s."""
    from matplotlib.figure import Figure  # imported here: only training reports draw

    terms = list(dict.fromkeys(t for r in runs for t in r.terms))
    sets = list(dict.fromkeys(s for r in runs for s in r.val))
    panels = ([(f"loss: {t}", lambda r, t=t: r.series.get(t), True) for t in terms]
              + [("learning rate", lambda r: r.series.get("lr"), False)]
              + [(f"validation PSNR_Y (dB): {s}", lambda r, s=s: r.val.get(s), False) for s in sets]
              + [("iterations / s", lambda r: r.series.get("it_per_s"), False)])
    cols = 3
    rows = math.ceil(len(panels) / cols)
    fig = Figure(figsize=(13, 3.1 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    colours = [f"C{i % 10}" for i in range(len(runs))]
    for ax, (title, get, log_scale) in zip(axes, panels):
        drawn = False
        for run, colour in zip(runs, colours):
            points = get(run)
            if points:
                steps, values = zip(*points)
                ax.plot(steps, values, color=colour, label=run.label, linewidth=1.2,
                        marker="o" if len(points) < 30 else None, markersize=3)
                drawn = True
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if log_scale and drawn and all(v > 0 for r in runs for _, v in (get(r) or [])):
            ax.set_yscale("log")
    last = max((p[0] for r in runs for v in [*r.series.values(), *r.val.values()] for p in v), default=1)
    for ax in axes[:len(panels)]:
        ax.set_xlim(0, last * 1.03)  # one step axis for every panel, from the start of training
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    if len(runs) > 1:
        fig.legend(*axes[0].get_legend_handles_labels(), loc="outside upper center", ncols=min(len(runs), 6))
    return fig


def summary_rows(run: Run) -> list[object]:
    """A run's row: label, model, method, bits, last step, final total loss, final lr, median it/s,
    and the last validation PSNR_Y per set (as :func:`summary_header` orders them)."""
    s = run.series

    def last(points: list[tuple[int, float]] | None) -> float | None:
        return points[-1][1] if points else None

    rate = s.get("it_per_s")
    return [run.label, run.summary.get("model", "\u2013"), run.summary.get("method", "\u2013"),
            run.summary.get("bits", "\u2013"),
            cell(f"{max(p[0] for v in s.values() for p in v)} / {run.summary.get('iters', '?')}", True),
            cell(fmt(last(s.get("total")), ".5f"), True), cell(fmt(last(s.get("lr")), ".3g"), True),
            cell(fmt(statistics.median(v for _, v in rate) if rate else None, ".3f"), True)]


def write_training_report(folders: list[str | Path], out: str | Path) -> Path:
    """Read every run folder and write one page with their curves overlaid (atomically).

    Raises:
        QdukdError: a folder that is not a readable run (see :func:`read_run`).
    """
    paths = [Path(f) for f in folders]
    runs = [read_run(p, label) for p, label in zip(paths, run_labels(paths))]
    sets = list(dict.fromkeys(s for r in runs for s in r.val))
    header = ["run", "model", "method", "bits", "step / iters", "final total loss", "final lr", "median it/s"]
    header += [f"last PSNR_Y {s} (dB)" for s in sets]
    rows = [summary_rows(r) + [cell(fmt(r.val[s][-1][1] if s in r.val else None, ".4f"), True) for s in sets]
            for r in runs]
    title = "qdukd training: " + ", ".join(r.label for r in runs)
    fig = curves_figure(runs)
    body: list[Raw] = [
        tag("h1", title),
        tag("p", "From each run's log.csv (every train.log_every steps) and val.csv (every validation); "
                 + ("one colour per run." if len(runs) > 1 else f"folder {runs[0].folder}."), cls="note"),
        table(header, rows, "runs"),
        tag("h2", "Curves"),
        plot_image(fig, "training curves: loss terms, learning rate, validation PSNR_Y, iterations per second")]
    if not sets:
        body.append(tag("p", "No validation yet (train.val_every, or the end of training).", cls="note"))
    out = Path(out)
    write_page(out, page(title, body))
    return out
