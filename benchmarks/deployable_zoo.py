"""The deployable SR zoo (issue #10): size, FP and W8A8 PSNR, export gate, INT8 speed, float ops.

For every deployable network at x4 (and x2 for QuickSRNet S/M/L and ABPN):

1. parameters and MACs for a 256x256 LR input (``common.conv_macs``: forward hooks on every
   Conv2d / ConvTranspose2d / Linear), in the deployed form (SESR and SPAN collapsed);
2. FP training, KD from the PAN teacher: ``python -m qdukd.train recipes/deploy/<net>_x<s>_fp.toml
   --out RUNS/<net>_x<s>_fp dukd.mode="kd"`` (run in-process with ``--resume`` semantics; KD is
   the recipes' default but for QuickSRNet-S/M x2), PSNR_Y on Set5 / Set14;
3. W8A8 QAT with KD, from that FP checkpoint: ``recipes/deploy/<net>_x<s>_w8a8.toml
   student.init=RUNS/<net>_x<s>_fp/last.pt``; its drop against its own FP model;
4. the export gate: ``python -m qdukd.export RUNS/<net>_x<s>_w8a8/last.pt --out .../export
   --verify-data Set5 Set14`` (default profile ``onnxruntime-int8``), deltas read from report.json;
5. ONNX Runtime CPU latency of ``model.onnx`` (INT8, the profile's session settings) against
   ``model_fp32.onnx`` on a 1x3x256x256 LR input: both sessions in one process, alternating run
   by run, 1 thread, median of ``--runs`` after 3 warm-up;
6. the ops ONNX Runtime still runs in float after optimising the INT8 graph (report.json /
   manifest.json when the export lists them, else :func:`qdukd.export.float_ops.float_ops`, else
   the optimised graph's nodes that are not QLinear* / QuantizeLinear / DequantizeLinear / shape ops).

Each network's row is appended to ``benchmarks/results/deployable_zoo.json`` as it finishes (under
a file lock, so two processes with disjoint ``--nets`` can share it); finished rows are skipped
on a rerun, and an interrupted training continues from its checkpoint.

Usage (from the project root, ../shared/data present):
    python benchmarks/deployable_zoo.py [--nets espcn abpn_x2 ...] [--runs 20] [--quick]
"""

from __future__ import annotations

import argparse
import fcntl
import json
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnx
import torch

from common import RESULTS, conv_macs, machine, read_results, train_run
from qdukd.atomic import write_json
from qdukd.config import from_dict
from qdukd.export.__main__ import main as export_main
from qdukd.export.profiles import OnnxRuntimeSection
from qdukd.export.runtime import ort_session, session_config
from qdukd.models import build_model
from qdukd.quant.policy import collapse
from qdukd.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
SETS = ["../shared/data/benchmarks/Set5", "../shared/data/benchmarks/Set14"]
X4 = ["espcn", "fsrcnn", "quicksrnet_s", "quicksrnet_m", "quicksrnet_l", "xlsr", "abpn", "sesr_m3", "sesr_m5",
      "sesr_m7", "sesr_m11", "sesr_xl", "rlfn", "rlfn_s", "span"]
X2 = ["quicksrnet_s", "quicksrnet_m", "quicksrnet_l", "abpn"]
JOBS = [f"{n}_x4" for n in X4] + [f"{n}_x2" for n in X2]
# Ops that only move or reshape data: not counted as "float compute" by the fallback rule.
SHAPE_OPS = {"Shape", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Gather", "Slice", "Concat",
             "Split", "DepthToSpace", "SpaceToDepth", "Identity", "Constant", "ConstantOfShape", "Expand", "Pad",
             "ReorderInput", "ReorderOutput", "Cast"}


@contextmanager
def locked(path: Path):
    with open(Path(tempfile.gettempdir()) / f"{path.name}.lock", "w") as f:  # not in the results folder
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def load(path: Path) -> dict:
    """The results file (empty when absent); one error line, exit 2, for a file that is not one."""
    if not path.exists():
        return {"rows": {}}
    return read_results(path, {"rows": dict}, "a zoo results file",
                        "give --out a new file or benchmarks/results/deployable_zoo.json")


def store(path: Path, key: str, row: dict) -> None:
    """Read-modify-write under the lock: another process may have added its rows meanwhile."""
    with locked(path):
        results = load(path)
        results["rows"][key] = row
        results.setdefault("machines", {})[key] = machine()
        write_json(path, results)


def size(net: str, scale: int) -> dict:
    model = collapse(build_model(net, scale)).eval()  # the deployed form (SESR, SPAN collapsed)
    train_form = build_model(net, scale)
    return {"params": sum(p.numel() for p in model.parameters()),
            "params_training_form": sum(p.numel() for p in train_form.parameters()),
            "macs_256": conv_macs(model, (1, 3, 256, 256))}


def shown(path: Path) -> Path:
    """``path`` relative to the project root when it lies inside it (``--runs-dir`` may not)."""
    path = path.resolve()
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def train(recipe_file: str, out: Path, overrides: list[str]) -> dict:
    """``python -m qdukd.train RECIPE --out OUT --resume OVERRIDES`` in this process."""
    row = train_run(ROOT / recipe_file, out, overrides)
    return {"command": f"python -m qdukd.train {recipe_file} --out {shown(out)} " + " ".join(overrides),
            **{k: v for k, v in row.items() if k not in ("recipe", "overrides")}}


def export(run: Path, target: str = "") -> dict:
    """The export CLI on the run's checkpoint (default profile, or ``target`` into export_<target>)."""
    out = run / (f"export_{target}" if target else "export")
    args = [str(run / "last.pt"), "--out", str(out), "--verify-data", *SETS] + (["--target", target] if target else [])
    code = export_main([*args, "--no-progress"])
    report = json.loads((out / "report.json").read_text())
    return {"command": "python -m qdukd.export " + " ".join(args).replace(f"{ROOT}/", ""),
            "exit_code": code, "folder": str(out), "report": report}


def float_op_list(folder: Path, config: dict, optimized: Path) -> tuple[str, list]:
    """Which ops stay float in the fused INT8 graph, and where the list came from."""
    for name in ("report.json", "manifest.json"):
        doc = json.loads((folder / name).read_text())
        for key in ("float_ops", "float_op_report"):
            if key in doc:
                return f"{name}:{key}", doc[key]
    try:
        from qdukd.export.float_ops import float_ops
        return "qdukd.export.float_ops.float_ops", float_ops(folder / "model.onnx", session_config=config)
    except Exception as e:  # the module is being written by another engineer: fall back to the simple rule
        nodes = onnx.load(optimized).graph.node
        keep = [{"node": n.name, "op": n.op_type} for n in nodes
                if not n.op_type.startswith("QLinear") and n.op_type not in ("QuantizeLinear", "DequantizeLinear")
                and n.op_type not in SHAPE_OPS]
        return f"optimised graph, simple rule ({type(e).__name__}: {e})", keep


def latency(folder: Path, runs: int, side: int = 256) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    config = session_config(from_dict(OnnxRuntimeSection, manifest["profile"]["onnxruntime"]))
    with tempfile.TemporaryDirectory() as tmp:
        optimized = Path(tmp) / "int8_optimized.onnx"
        int8 = ort_session(folder / "model.onnx", session_config=config, threads=1, optimized_path=optimized)
        ops = dict(Counter(n.op_type for n in onnx.load(optimized).graph.node).most_common())
        source, floats = float_op_list(folder, config, optimized)
    fp32 = ort_session(folder / "model_fp32.onnx", threads=1)
    x = np.random.default_rng(0).random((1, 3, side, side), dtype=np.float32)
    sessions = {"fp32": fp32, "int8": int8}
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for _ in range(3):
        for s in sessions.values():
            s.run(None, {"lr": x})
    for _ in range(runs):  # alternate, so both see the same load on the shared machine
        for name, s in sessions.items():
            t0 = time.perf_counter()
            s.run(None, {"lr": x})
            times[name].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"input": [1, 3, side, side], "threads": 1, "runs": runs, "median_seconds": med,
            "int8_speedup_vs_fp32": med["fp32"] / med["int8"], "optimized_int8_ops": ops,
            "float_ops_source": source, "float_ops": floats,
            "command": f"python benchmarks/deployable_zoo.py --nets {folder.parent.name.removesuffix('_w8a8')}"}


def gate_deltas(report: dict) -> dict:
    """Largest |delta| over the backends per set, from report.json (whatever its exact layout:
    every number under a key containing 'delta' is collected with its path)."""
    found: list[tuple[str, float]] = []

    def walk(node, path):
        if isinstance(node, dict):
            for k, v in node.items():
                if "delta" in str(k).lower() and isinstance(v, (int, float)) and not isinstance(v, bool):
                    found.append((f"{path}/{k}", float(v)))
                walk(v, f"{path}/{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                name = v.get("name", v.get("set", v.get("backend", i))) if isinstance(v, dict) else i
                walk(v, f"{path}/{name}")

    walk(report, "")
    return {"all": dict(found), "max_abs": max((abs(v) for _, v in found), default=None)}


def do_job(job: str, args, out_file: Path) -> dict:
    net, scale = job.rsplit("_x", 1)
    scale = int(scale)
    runs = Path(args.runs_dir)
    common = [f"train.threads={args.threads}"]
    if args.quick:
        common += ["train.iters=20", 'eval.sets=["../shared/data/benchmarks/Set5"]']
    row = {"net": net, "scale": scale, **size(net, scale)}
    print(f"[{job}] params {row['params']} MACs@256 {row['macs_256'] / 1e9:.2f} G", flush=True)
    fp_run = runs / f"{job}_fp"
    # KD, as the zoo table was measured: the QuickSRNet-S/M x2 FP recipes now default to DUKD.
    row["fp"] = train(f"recipes/deploy/{job}_fp.toml", fp_run, [*common, 'dukd.mode="kd"'])
    print(f"[{job}] FP {row['fp']}", flush=True)
    q_run = runs / f"{job}_w8a8"
    init = f'student.init="{shown(fp_run)}/last.pt"'
    row["w8a8"] = train(f"recipes/deploy/{job}_w8a8.toml", q_run, [init, *common])
    row["drop"] = {s: row["fp"][s] - row["w8a8"][s] for s in ("set5", "set14") if s in row["w8a8"]}
    print(f"[{job}] W8A8 {row['w8a8']} drop {row['drop']}", flush=True)
    ex = export(q_run)
    row["export"] = {**ex, "gate": gate_deltas(ex["report"])}
    print(f"[{job}] export exit {ex['exit_code']}, max |delta| {row['export']['gate']['max_abs']}", flush=True)
    if (Path(ex["folder"]) / "model.onnx").exists():
        row["latency"] = latency(Path(ex["folder"]), args.runs if not args.quick else 3)
        print(f"[{job}] INT8/FP32 speed-up {row['latency']['int8_speedup_vs_fp32']:.2f}x "
              f"ops {row['latency']['optimized_int8_ops']}", flush=True)
    return row


def exact_profile(job: str, args, out_file: Path) -> None:
    """A finished row's W8A8 student exported again with ``onnxruntime-int8-exact`` (every grid's
    clip kept: what a student whose ranges clip needs to pass the gate), gate and latency."""
    q_run = Path(args.runs_dir) / f"{job}_w8a8"
    ex = export(q_run, "onnxruntime-int8-exact")
    exact = {**ex, "gate": gate_deltas(ex["report"]), "latency": latency(Path(ex["folder"]), args.runs)}
    print(f"[{job}] exact profile: exit {ex['exit_code']}, max |delta| {exact['gate']['max_abs']}, "
          f"INT8/FP32 {exact['latency']['int8_speedup_vs_fp32']:.2f}x", flush=True)
    with locked(out_file):
        results = load(out_file)
        results["rows"][job]["export_exact"] = exact
        write_json(out_file, results)


def fp_control(job: str, args, out_file: Path) -> None:
    """The W8A8 stage without quantization: the FP model trained on with the W8A8 recipe's
    iterations, rate and loss (KD), so FP-control minus W8A8 is the drop due to quantization alone
    (the plain drop also counts the W8A8 stage's extra training)."""
    runs = Path(args.runs_dir)
    q = load_recipe(ROOT / f"recipes/deploy/{job}_w8a8.toml", [])
    control = train(f"recipes/deploy/{job}_fp.toml", runs / f"{job}_fp_control",
                    [f'student.init="{shown(runs / f"{job}_fp")}/last.pt"', f"train.iters={q.train.iters}",
                     f"train.lr={q.train.lr}", f"dukd.mode={json.dumps(q.dukd.mode)}",
                     f"train.threads={args.threads}"])
    with locked(out_file):
        results = load(out_file)
        row = results["rows"][job]
        row["fp_control"] = control
        row["quant_drop"] = {s: control[s] - row["w8a8"][s] for s in ("set5", "set14")}
        write_json(out_file, results)
    print(f"[{job}] FP control {control['set5']:.4f} / {control['set14']:.4f}, drop due to quantization "
          f"{row['quant_drop']['set5']:+.4f} / {row['quant_drop']['set14']:+.4f}", flush=True)


def fmt_float_ops(lat: dict) -> str:
    """Compute ops left float, counted ('FusedConv+Clip x4'); data movement (SHAPE_OPS, Tile) is left
    out of the summary (the JSON keeps the full list with ONNX Runtime's reasons)."""
    ops = Counter(str(o["op"]).removeprefix("com.microsoft.") for o in lat.get("float_ops", [])
                  if str(o["op"]) not in SHAPE_OPS | {"Tile"})
    return ", ".join(f"{op} x{n}" for op, n in sorted(ops.items())) or "none"


def table(results: dict) -> str:
    """The markdown table of docs/RESULTS.md from the JSON."""
    head = ("| network | scale | params | MACs@256 | FP Set5 / Set14 | W8A8 Set5 / Set14 | drop Set5 / Set14 | "
            "gate max abs delta (pass) | INT8 / FP32 ms | INT8 speed-up | ops left float |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for job in JOBS:
        r = results["rows"].get(job)
        if r is None:
            continue
        fp, q, d = r["fp"], r["w8a8"], r["drop"]
        gate = r["export"]["gate"]["max_abs"]
        rep = r["export"]["report"]
        passed = "pass" if rep.get("passed") else (
            "FAIL: below bicubic" if not rep["quality_floor"]["passed"] else "FAIL: parity")
        lat = r.get("latency")
        ms = (f"{lat['median_seconds']['int8'] * 1e3:.1f} / {lat['median_seconds']['fp32'] * 1e3:.1f}"
              if lat else "n/a")
        lines.append(f"| {r['net']} | x{r['scale']} | {r['params'] / 1e3:.1f}K | {r['macs_256'] / 1e9:.2f}G | "
                     f"{fp['set5']:.4f} / {fp['set14']:.4f} | {q['set5']:.4f} / {q['set14']:.4f} | "
                     f"{d['set5']:+.4f} / {d['set14']:+.4f} | "
                     f"{gate:.4f} ({passed}) | {ms} | "
                     f"{lat['int8_speedup_vs_fp32']:.2f}x | {fmt_float_ops(lat) if lat else 'n/a'} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nets", nargs="+", default=JOBS, help=f"jobs <net>_x<scale> or bare nets (x4); all: {JOBS}")
    ap.add_argument("--runs", type=int, default=20, help="latency runs per graph (median kept)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training")
    ap.add_argument("--runs-dir", default=str(ROOT / "runs" / "deploy"))
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--quick", action="store_true", help="smoke run: 20 iterations, Set5 only, separate folders")
    ap.add_argument("--table", action="store_true", help="print the markdown table of the results and exit")
    ap.add_argument("--fp-control", action="store_true",
                    help="train finished rows' FP models on with the W8A8 stage's budget, no quantization")
    ap.add_argument("--exact", action="store_true",
                    help="export finished rows again with the onnxruntime-int8-exact profile (gate, latency)")
    args = ap.parse_args()
    if args.table:
        results_file = args.out or RESULTS / "deployable_zoo.json"
        if not results_file.is_file():
            ap.error(f"--table: no results file {results_file}; run the zoo first or give --out")
        print(table(load(results_file)))
        return
    if args.quick:
        args.runs_dir = str(Path(args.runs_dir).with_name("deploy_quick"))
    out_file = args.out or RESULTS / ("deployable_zoo_quick.json" if args.quick else "deployable_zoo.json")
    jobs = [n if re.search(r"_x[234]$", n) else f"{n}_x4" for n in args.nets]
    unknown = [j for j in jobs if j not in JOBS]
    if unknown:
        ap.error(f"unknown jobs {unknown}; choose from {JOBS}")
    if args.runs < 1:
        ap.error(f"--runs {args.runs}: latency is a median of at least one timed run; give --runs 1 or more")
    unfinished = [j for j in jobs if j not in load(out_file)["rows"]] if args.exact or args.fp_control else []
    if unfinished:
        ap.error(f"--exact / --fp-control redo finished rows, and {out_file} has none for {unfinished}: "
                 "run the zoo for them first (same --out / --runs-dir)")
    torch.set_num_threads(args.threads)
    if args.exact or args.fp_control:
        for job in jobs:
            (exact_profile if args.exact else fp_control)(job, args, out_file)
        return
    crashed = []
    for job in jobs:
        if job in load(out_file)["rows"]:
            print(f"[{job}] done, skipped", flush=True)
            continue
        t0 = time.perf_counter()
        try:
            row = do_job(job, args, out_file)
        except Exception as e:  # record it, go on with the next network; a rerun retries this one
            import traceback
            traceback.print_exc()
            with locked(out_file):
                results = load(out_file)
                results.setdefault("errors", {})[job] = f"{type(e).__name__}: {e}"
                write_json(out_file, results)
            crashed.append(job)
            continue
        row["job_seconds"] = time.perf_counter() - t0
        store(out_file, job, row)
    if crashed:  # not a silent success: the tracebacks are above
        print(f"error: {len(crashed)} of {len(jobs)} jobs crashed ({', '.join(crashed)}); "
              f"their errors are under 'errors' in {out_file}", file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()
