"""Does DUKD pay? GT-only / KD / DUKD variants on a deployable student, 48-px patches, paired seeds.

Issue #11. Stage 1 trains one FP student per scale (KD from the PAN teacher, the deployable
recipe at 48-px patches); stage 2 runs QAT from it for every precision x method x seed. The
precision ``fp`` trains the FP student from scratch with each method instead (``--fp-iters``, the
FP recipe's rate and cosine schedule). The
validation split (``recipes/splits/photos_val.txt``) is held out of training and scored every
``--val-every`` steps (``val.csv`` of each run folder: the curves); Set5 / Set14 are scored too and
only reported. A seed fixes the patches and the quantizer calibration, so runs with one seed are
paired across methods.

Methods (each one change from ``dukd`` (single step), ``dukd_two_step`` or ``kd``):
    gt               L1 to HR only
    kd               + L1 to the teacher's output
    kd_2x            kd with twice the iterations: as many Adam steps as dukd_two_step
    dukd             + zoom-in and zoom-out terms, one optimizer step (qdukd's schedule)
    dukd_two_step    the reference code's schedule: a step on pix+kd, then one on the rest
    dukd_no_zoom_out dukd without the zoom-out terms
    dukd_zoom_out_q  dukd with the zoom-out terms at a quarter weight (dukd.w_zoom_out = 0.25)
    two_step_no_zoom_out, two_step_zoom_out_q   the same two changes made to dukd_two_step

Results are appended to ``benchmarks/results/dukd_study.json`` as runs finish; a rerun skips
finished runs and continues an interrupted one from its checkpoint. Several processes can share
the grid, each with its own ``--out`` (``dukd_study*.json``, one student each): a process skips
the runs another has recorded or is running, and waits while another trains the FP stage;
``--table`` merges the files. ``--zoom-in-cache`` reads the zoom-in targets from the teacher's
whole-HR-image outputs (a one-off pass, ``teacher.cache_zoom_in``) instead of running the teacher
on every tile: the only way the DUKD runs fit at x4 on these CPUs; each run's overrides record it.
``--cost`` times one step of every method side by side on one batch instead (medians).
``--regime recipe`` checks a shipped default where it ships: the ``recipes/deploy`` files' own
patch size, iterations and rates (FP stage and QAT), only the validation split held out; its runs
are keyed ``x2-recipe/...`` so tables never mix them with the study's.

Usage (from the project root, ../shared/data present):
    python benchmarks/dukd_study.py --scale 4 --precisions w4a4 --seeds 0 1 2 --iters 300
    python benchmarks/dukd_study.py --scale 4 --precisions w8a8 --zoom-in-cache \
        --out benchmarks/results/dukd_study_w8a8.json
    python benchmarks/dukd_study.py --scale 2 --methods kd --seeds 0 --lr 3e-4 --runs runs/study_lr/lr3e-4 \
        --fp-run runs/study/quicksrnet_s_x2/fp --out benchmarks/results/dukd_study_lr/x2_w4a4_lr3e-4.json
    python benchmarks/dukd_study.py --table benchmarks/results/dukd_study*.json --plot docs/img/dukd_study.png
    python benchmarks/dukd_study.py --cost --scale 4 --precisions w4a4
    python benchmarks/dukd_study.py --regime recipe --student abpn --scale 2 --precisions w8a8 \
        --methods kd dukd --out benchmarks/results/dukd_study_recipe_abpn_x2.json
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from common import RESULTS, machine, peak_rss_mib, read_results, train_run
from qdukd.atomic import write_json
from qdukd.errors import RunFolderBusy
from qdukd.recipe import load_recipe
from qdukd.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
VAL = "recipes/splits/photos_val.txt"
SETS = [VAL, "../shared/data/benchmarks/Set5", "../shared/data/benchmarks/Set14"]
SCORES = ("photos_val", "set5", "set14")
METHODS = {
    "gt": ['dukd.mode="gt"'],
    "kd": ['dukd.mode="kd"'],
    "kd_2x": ['dukd.mode="kd"'],  # iterations doubled in main()
    "dukd": ['dukd.mode="dukd"'],
    "dukd_two_step": ['dukd.mode="dukd"', 'dukd.schedule="two_step"'],
    "dukd_no_zoom_out": ['dukd.mode="dukd"', "dukd.zoom_out=false"],
    "dukd_zoom_out_q": ['dukd.mode="dukd"', "dukd.w_zoom_out=0.25"],
    "two_step_no_zoom_out": ['dukd.mode="dukd"', 'dukd.schedule="two_step"', "dukd.zoom_out=false"],
    "two_step_zoom_out_q": ['dukd.mode="dukd"', 'dukd.schedule="two_step"', "dukd.w_zoom_out=0.25"],
}
BITS = {"w4a4": (4, 4), "w8a8": (8, 8), "fp": None}  # fp: from scratch, no QAT
# QAT rate per scale, chosen with KD on the validation split (seed 0, 300 iterations): x4 keeps the
# reference's 1e-4 (KD given twice the steps gains +0.004 dB there); at x2 W4A4 1e-4 had not
# converged and 1e-3 scored best of 1e-4 / 3e-4 / 1e-3 / 3e-3 (docs/RESULTS.md, section 10).
QAT_LR = {4: 1e-4, 2: 1e-3}
DEFAULT_ITERS = {False: 300, True: 1000}  # QAT, FP from scratch (--iters, --fp-iters)


def base_overrides(args: argparse.Namespace) -> list[str]:
    """What every run shares: the held-out validation split, logging; the study's 48-px patches."""
    cache = ["teacher.cache=true"] if args.scale == 4 else []  # x4: the zoo's LR-pass cache exists
    patch = ["data.patch=48"] if args.regime == "study" else []
    return [*patch, f"data.holdout=[\"{VAL}\"]", f"eval.sets={json.dumps(SETS)}",
            f"train.val_every={args.val_every}", "train.log_every=25", "train.threads=1", *cache]


def recipe_file(args: argparse.Namespace, precision: str) -> Path:
    stage = "fp" if precision == "fp" else "w8a8"  # the W8A8 recipe's quant section, bits overridden
    return ROOT / "recipes" / "deploy" / f"{args.student}_x{args.scale}_{stage}.toml"


def iterations(args: argparse.Namespace, precision: str) -> int:
    """Iterations of a run of ``precision`` (``"fp"``: an FP run; else QAT) in this regime."""
    if args.regime == "recipe":
        return load_recipe(recipe_file(args, precision)).train.iters
    return args.fp_iters if precision == "fp" else args.iters


def setting(args: argparse.Namespace, precision: str) -> str:
    """A run key's setting part: ``x2``; ``x2-900it`` at a length other than the default; a QAT
    run from a non-default FP stage or at a non-default rate adds ``-fp4000it`` / ``-lr0.0001``;
    ``x2-recipe`` in the recipe regime (tables never mix settings)."""
    if args.regime == "recipe":
        return f"x{args.scale}-recipe"
    length = iterations(args, precision)
    key = f"x{args.scale}" + ("" if length == DEFAULT_ITERS[precision == "fp"] else f"-{length}it")
    if precision != "fp":
        key += "" if args.fp_iters == DEFAULT_ITERS[True] else f"-fp{args.fp_iters}it"
        key += "" if args.lr in (None, QAT_LR[args.scale]) else f"-lr{args.lr:g}"
    return key


def fp_stage(args: argparse.Namespace, runs: Path) -> Path:
    """The FP stage QAT starts from: ``--fp-run``, else ``fp`` (``fp-4000it`` at a non-default length)."""
    default = args.regime == "recipe" or args.fp_iters == DEFAULT_ITERS[True]
    return args.fp_run or runs / ("fp" if default else f"fp-{args.fp_iters}it")


def run_overrides(args: argparse.Namespace, precision: str, method: str, seed: int, fp: Path) -> list[str]:
    twice = 2 if method == "kd_2x" else 1
    shared = [*base_overrides(args), *(["teacher.cache_zoom_in=true"] if args.zoom_in_cache else []),
              f"train.iters={iterations(args, precision) * twice}", f"train.seed={seed}"]
    if BITS[precision] is None:  # from scratch at the FP recipe's rate
        return [*shared, *METHODS[method]]
    w, a = BITS[precision]
    rate = [f"train.lr={args.lr or QAT_LR[args.scale]}"] if args.regime == "study" else []
    return [*shared, f"student.init=\"{fp / 'last.pt'}\"", f"quant.w_bits={w}", f"quant.a_bits={a}", *rate,
            *METHODS[method]]


def curve(run_dir: Path) -> list[dict[str, float]]:
    with (run_dir / "val.csv").open(newline="") as f:
        return [{k.removeprefix("psnr_y/").lower(): float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def is_result_file(f: Path) -> bool:
    return "cost" not in f.name  # dukd_study_cost_*.json hold --cost timings, not runs


def read_study(f: Path) -> dict:
    return read_results(f, {"student": str, "runs": dict}, "a study result file",
                        "give --out a new file; --table takes benchmarks/results/dukd_study*.json")


def finished_elsewhere(out: Path, student: str) -> set[str]:
    """Runs of ``student`` recorded by sibling processes (other result files beside ``out``)."""
    siblings = (read_study(f) for f in out.parent.glob("dukd_study*.json") if f != out and is_result_file(f))
    return {k for d in siblings if d["student"] == student for k in d["runs"]}


def train_once(recipe: Path, out: Path, overrides: list[str], wait: bool) -> dict | None:
    """``train_run``; None if another process holds ``out`` (or, with ``wait``, once it has let go)."""
    while True:
        try:
            return train_run(recipe, out, overrides)
        except RunFolderBusy:
            if not wait:
                return None
            time.sleep(30)


def train_all(args: argparse.Namespace) -> None:
    results = read_study(args.out) if args.out.exists() else {"student": args.student, "runs": {}}
    if results["student"] != args.student:
        print(f"error: {args.out} holds {results['student']} runs: give --student {args.student} its own --out",
              file=sys.stderr)
        raise SystemExit(2)
    results["machine"] = machine()
    runs = args.runs / f"{args.student}_x{args.scale}{'-recipe' * (args.regime == 'recipe')}"
    fp = fp_stage(args, runs)
    if "fp" not in results["runs"] and any(BITS[p] for p in args.precisions):  # QAT starts from it
        print(f"running FP {args.student} x{args.scale}", flush=True)  # or re-validating a sibling's
        results["runs"]["fp"] = {**train_once(recipe_file(args, "fp"), fp, [
            *base_overrides(args), f"train.iters={iterations(args, 'fp')}", "dukd.mode=\"kd\"",
            f"train.val_every={iterations(args, 'fp') // 4}"], wait=True), "curve": curve(fp)}
        write_json(args.out, results)
    for seed in args.seeds:
        for precision in args.precisions:
            for method in args.methods:
                key = f"{setting(args, precision)}/{precision}/{method}/seed{seed}"
                if key in results["runs"] or key in finished_elsewhere(args.out, args.student):
                    continue
                print(f"running {key}", flush=True)
                out = runs / key.replace("/", "_")
                row = train_once(recipe_file(args, precision), out,
                                 run_overrides(args, precision, method, seed, fp), wait=False)
                if row is None:
                    print(f"  {key}: another process is running it, skipped", flush=True)
                    continue
                results["runs"][key] = {**row, "curve": curve(out)}
                results["peak_rss_mib"] = peak_rss_mib()
                write_json(args.out, results)
                print(f"  {key}: " + ", ".join(f"{s} {row[s]:.4f}" for s in SCORES), flush=True)


def paired(runs: dict[str, dict], a: str, b: str) -> dict[str, dict[str, float]]:
    """Mean +- sd over seeds of ``a - b`` per set, for the seeds where both ran."""
    seeds = sorted({k.rsplit("/", 1)[1] for k in runs if k.startswith(a + "/")}
                   & {k.rsplit("/", 1)[1] for k in runs if k.startswith(b + "/")})
    out = {}
    for s in SCORES:
        d = [runs[f"{a}/{seed}"][s] - runs[f"{b}/{seed}"][s] for seed in seeds]
        out[s] = {"mean": statistics.mean(d) if d else float("nan"),
                  "sd": statistics.stdev(d) if len(d) > 1 else float("nan"), "n": len(d), "each": d}
    return out


def merged_runs(files: list[Path]) -> dict[str, dict]:
    """Every study run of the given result files as ``student/x4/w4a4/kd/seed0`` (FP stages and
    ``--cost`` files left out)."""
    runs: dict[str, dict] = {}
    for f in filter(is_result_file, files):
        d = read_study(f)
        runs.update({f"{d['student']}/{k}": v for k, v in d["runs"].items() if k != "fp"})
    return runs


def table(files: list[Path], pairs: list[tuple[str, str]], curves: bool = False) -> None:
    """Print every setting's table, then ``a - b`` per seed for each pair of methods that both ran,
    and with ``curves`` each method's mean validation curve (what ``--plot`` draws)."""
    runs = merged_runs(files)
    groups = sorted({k.rsplit("/", 2)[0] for k in runs})  # x4/w4a4
    for g in groups:
        methods = [m for m in METHODS if any(k.startswith(f"{g}/{m}/") for k in runs)]
        # DUKD methods whose zoom-in targets came from the cache; a group can mix runs of two sessions
        dukd_methods = {m for m in methods if 'dukd.mode="dukd"' in METHODS[m]}
        cached = {m for m in dukd_methods if any(
            "teacher.cache_zoom_in=true" in v["overrides"] for k, v in runs.items() if k.startswith(f"{g}/{m}/"))}
        source = ("unused (no DUKD run)" if not dukd_methods else "from the cache" if cached == dukd_methods
                  else "on the fly" if not cached else "on the fly, from the cache where marked (cache)")
        print(f"\n{g}: PSNR_Y mean over seeds; paired difference vs KD and vs GT-only (mean ± sd, n); "
              f"zoom-in targets {source}")
        print("| method | n | val | Set5 | Set14 | - KD: val | Set5 | Set14 | - GT: val | Set5 | Set14 |")
        print("|---|---|---|---|---|---|---|---|---|---|---|")
        for m in methods:
            rows = [v for k, v in runs.items() if k.startswith(f"{g}/{m}/")]
            means = " | ".join(f"{statistics.mean(r[s] for r in rows):.4f}" for s in SCORES)
            diffs = []
            for ref in ("kd", "gt"):
                p = paired(runs, f"{g}/{m}", f"{g}/{ref}")
                diffs += ["—" if m == ref or not p[s]["n"] else f"{p[s]['mean']:+.4f} ± {p[s]['sd']:.4f}"
                          for s in SCORES]
            mark = " (cache)" if m in cached and cached != dukd_methods else ""
            print(f"| {m}{mark} | {len(rows)} | {means} | " + " | ".join(diffs) + " |")
        for a, b in pairs:
            p = paired(runs, f"{g}/{a}", f"{g}/{b}")
            if p["photos_val"]["n"]:
                print(f"\n{a} - {b}, paired, n={p['photos_val']['n']}: " + "; ".join(
                    f"{s} {p[s]['mean']:+.4f} ± {p[s]['sd']:.4f} ("
                    + ", ".join(f"{x:+.3f}" for x in p[s]["each"]) + ")"
                    for s in SCORES))
        for m in methods if curves else []:
            steps, values = mean_curve(curves_of(runs, g, m))
            print(f"\n{m} mean validation curve: " + ", ".join(f"{t:g}: {v:.3f}" for t, v in zip(steps, values)))


def curves_of(runs: dict[str, dict], setting: str, method: str) -> list[list[dict[str, float]]]:
    """The validation curves of every seed of ``method`` in ``setting``."""
    return [v["curve"] for k, v in runs.items() if k.startswith(f"{setting}/{method}/")]


def mean_curve(curves: list[list[dict[str, float]]]) -> tuple[list[float], list[float]]:
    """Validation PSNR_Y per step, mean over the runs that reached the step; a run validated again
    after it finished (a QAT stage re-validating its FP run) repeats its last step, counted once."""
    by_step = [{row["step"]: row["photos_val"] for row in c} for c in curves]
    steps = sorted(set().union(*by_step))
    return steps, [statistics.mean(c[t] for c in by_step if t in c) for t in steps]


def plot(files: list[Path], png: Path) -> None:
    """Validation PSNR_Y against step, mean over seeds, one line per method, one panel per setting."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = merged_runs(files)
    groups = sorted({k.rsplit("/", 2)[0] for k in runs})
    cols = min(3, len(groups))
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 4 * rows), squeeze=False)
    for ax in axes.flat[len(groups):]:
        ax.axis("off")
    for ax, g in zip(axes.flat, groups):
        for m in METHODS:
            curves = curves_of(runs, g, m)
            if not curves:
                continue
            ax.plot(*mean_curve(curves), marker=".", label=f"{m} (n={len(curves)})")
        ax.set(title=f"{g}: validation PSNR_Y (mean over seeds)", xlabel="step", ylabel="dB")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=80)
    print(f"written {png}")


def cost(args: argparse.Namespace) -> None:
    """Median step time of every method on one batch, trainers interleaved step by step."""
    torch.set_num_threads(1)
    precision = args.precisions[0]
    fp = fp_stage(args, args.runs / f"{args.student}_x{args.scale}")
    trainers = {}
    for m in args.methods:
        recipe = load_recipe(recipe_file(args, precision), run_overrides(args, precision, m, 0, fp))
        trainers[m] = Trainer(recipe, args.runs / "cost" / m, progress=False)
    times: dict[str, list[float]] = {m: [] for m in trainers}
    for step in range(args.cost_steps + 3):
        for m, t in trainers.items():
            t0 = time.perf_counter()
            t.train_step(0)
            if step >= 3:
                times[m].append(time.perf_counter() - t0)
    med = {m: statistics.median(v) for m, v in times.items()}
    zoom_in = "zoom-in targets from the cache" if args.zoom_in_cache else "zoom-in teacher on the fly"
    result = {"setting": f"{args.student} x{args.scale} {precision}, batch 8 of 48x48 LR, PAN teacher, {zoom_in}",
              "median_step_seconds": med, "steps": args.cost_steps, "threads": 1, "machine": machine()}
    if "kd" in med:
        result["over_kd"] = {m: v / med["kd"] for m, v in med.items()}
    if {"dukd", "dukd_two_step"} <= set(med):
        result["two_step_over_single"] = med["dukd_two_step"] / med["dukd"]
    write_json(RESULTS / f"dukd_study_cost_x{args.scale}_{precision}{'_zoomcache' * args.zoom_in_cache}.json", result)
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=1))


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--student", default="quicksrnet_s", help="a deployable network with recipes/deploy files")
    ap.add_argument("--scale", type=int, choices=(2, 4), default=4)
    ap.add_argument("--precisions", nargs="+", choices=list(BITS), default=["w4a4"])
    ap.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--regime", choices=("study", "recipe"), default="study",
                    help="study: 48-px patches, --iters / --fp-iters / --lr; recipe: the deploy recipes' own")
    ap.add_argument("--iters", type=int, default=DEFAULT_ITERS[False], help="QAT iterations (kd_2x: twice this)")
    ap.add_argument("--lr", type=float, help="QAT learning rate (default: QAT_LR of the scale)")
    ap.add_argument("--fp-iters", type=int, default=DEFAULT_ITERS[True])
    ap.add_argument("--val-every", type=int, default=75)
    ap.add_argument("--zoom-in-cache", action="store_true", help="DUKD's zoom-in targets from a one-off teacher pass")
    ap.add_argument("--runs", type=Path, default=ROOT / "runs" / "study")
    ap.add_argument("--fp-run", type=Path, help="the FP stage's run folder (default: in --runs)")
    ap.add_argument("--out", type=Path, default=RESULTS / "dukd_study.json")
    ap.add_argument("--table", type=Path, nargs="*", help="print the tables of these result files and exit")
    ap.add_argument("--plot", type=Path, help="with --table: also draw the validation curves into this PNG")
    ap.add_argument("--curves", action="store_true",
                    help="with --table: also print each method's mean validation curve (step: dB)")
    ap.add_argument("--pair", nargs=2, action="append", default=[["dukd_two_step", "kd_2x"]], choices=list(METHODS),
                    metavar=("A", "B"),
                    help="with --table: also print A - B per seed (repeatable; two-step DUKD - KD x2 always)")
    ap.add_argument("--cost", action="store_true", help="time one step of each method side by side and exit")
    ap.add_argument("--cost-steps", type=int, default=10)
    return ap


def main() -> None:
    ap = parser()
    args = ap.parse_args()
    if args.table is not None:
        table(args.table or [args.out], list(dict.fromkeys(tuple(p) for p in args.pair)), args.curves)
        if args.plot:
            plot(args.table or [args.out], args.plot)
    elif args.cost:
        if args.regime != "study":
            ap.error("--cost times the study's regime (48-px patches); leave out --regime")
        cost(args)
    else:
        missing = [f.name for f in {recipe_file(args, p) for p in ("fp", "w8a8")} if not f.is_file()]
        if missing:
            ap.error(f"no recipes/deploy/{', '.join(sorted(missing))}: --student names a deployable network "
                     f"with x{args.scale} recipes")
        ignored = [flag for flag, given in (("--iters", args.iters != DEFAULT_ITERS[False]),
                                            ("--fp-iters", args.fp_iters != DEFAULT_ITERS[True]),
                                            ("--lr", args.lr is not None)) if given]
        if args.regime == "recipe" and ignored:
            ap.error(f"--regime recipe trains the recipes' own length and rate: leave out {' '.join(ignored)}")
        train_all(args)


if __name__ == "__main__":
    main()
