"""``report.html`` of an export: what an SR engineer looks at before shipping a low-bit model.

The page holds the parity gate per backend, a per-image table sorted by the largest backend
deviation, pixel-exact crops (LR, bicubic, PyTorch student, every backend, HR) with amplified
difference maps for the images that deviate most and those the student gets most wrong, and
the model card (architecture, parameters, bits and ONNX Runtime fusion per layer, file sizes,
profile, tools, the checkpoint's training summary).

It is made from what the export already holds (the gate's numbers, its inputs and outputs, the
manifest, the checkpoint; only the HR files of the cropped images are read again): nothing is
run again, so writing it costs a small fraction of the export (docs/EXPORT.md, "The HTML report").
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from ..data import find_pairs, set_name
from ..images import modcrop, read_image
from ..models.common import Add
from ..quant import FakeQuantizer
from ..recipe import method_label
from . import panels
from .html import Raw, cell, figure, fmt, join, page, pixel_image, table, tag, write_page

CROP = 64  # HR pixels a side (rounded down to the scale)
ZOOM = 3  # each crop pixel drawn as ZOOM x ZOOM screen pixels
PICKS = 2  # images shown for each reason (largest backend deviation, largest loss against HR)
_LAYER_TYPES = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear, Add)
DASH = "\u2013"


@dataclass
class ExportFacts:
    """Everything the page shows.

    Args:
        report: ``report.json`` as written.
        manifest: ``manifest.json`` (``files`` may be missing: the page is written before it).
        checkpoint: the training checkpoint (its ``recipe``, ``step`` and ``metrics`` are read).
        model: the student with its quantizers off, collapsed as exported (every layer, the
            parameter count).
        outputs: the gate's uint8 images (``GateReport.outputs``: ``"lr"``, ``"bicubic"``,
            ``"pytorch"``, each backend that ran), in the order of ``report["images"]``.
        sets: the verify sets, to read the HR images of the crops.
        folder: the export folder (file sizes).
    """

    report: dict[str, Any]
    manifest: dict[str, Any]
    checkpoint: dict[str, Any]
    model: nn.Module
    outputs: dict[str, list[np.ndarray]]
    sets: list[Path]
    folder: Path


def write_export_report(path: str | Path, facts: ExportFacts) -> None:
    """Write the export's ``report.html`` (atomically)."""
    src = facts.manifest["source"]
    verdict = "PASSED" if facts.report["passed"] else "FAILED"
    title = f"qdukd export: {src['model']} x{src['scale']} for {facts.manifest['profile']['name']}"
    body = [tag("h1", join([title, " \u2014 ", tag("span", f"parity gate {verdict}",
                                                      cls="pass" if facts.report["passed"] else "fail")])),
            tag("p", f"created {facts.manifest['created']} from {src['checkpoint']} (step {src.get('step')}); "
                     f"verify sets: {', '.join(facts.report['verify_sets'])}", cls="note"),
            *gate_section(facts.report), *images_section(facts), *crops_section(facts), *model_card(facts)]
    write_page(path, page(title, body))


# -- the gate ----------------------------------------------------------------------------------
def gate_section(report: dict[str, Any]) -> list[Raw]:
    """The gate table (one row per backend, skipped ones with their reason) and PSNR_Y per set."""
    q, ref, tol = report["quality_floor"], report["reference"], report["tolerance_db"]
    out = [tag("h2", "Parity gate"),
           tag("p", f"Tolerance {tol} dB PSNR_Y per set against the PyTorch student; quality floor: the "
                    f"student must beat bicubic by {q['min_gain_over_bicubic_db']:+.2f} dB on every set.",
               cls="note")]
    rows: list[list[object]] = []
    bicubic = q["bicubic_psnr_y"]
    if bicubic:
        rows.append(["bicubic", cell(fmt(float(np.mean(list(bicubic.values()))), ".4f"), True), "", "", "", ""])
    if q["passed"]:
        floor = tag("span", f"ok ({min(q['gain_over_bicubic_db'].values()):+.2f} dB over bicubic on the worst set)",
                    cls="pass")
    else:
        floor = tag("span", f"FAIL: {q['failure']}", cls="fail")
    rows.append(["pytorch (reference)", cell(fmt(ref["psnr_y"], ".4f"), True), "", "",
                 cell(fmt(ref["seconds"], ".2f"), True), floor])
    for b in report["backends"]:
        if not b["ran"]:
            rows.append([b["name"], "", "", "", "", tag("span", f"skipped: {b['skipped_reason']}", cls="skip")])
            continue
        if b["passed"]:
            result = tag("span", "ok", cls="pass")
        else:
            worst = max(b["sets"].items(), key=lambda kv: abs(kv[1]["delta_psnr_y"]))
            result = tag("span", f"FAIL: {worst[1]['delta_psnr_y']:+.4f} dB on {worst[0]} "
                                 f"(tolerance {tol} dB)", cls="fail")
        rows.append([b["name"], cell(fmt(b["psnr_y"], ".4f"), True), cell(fmt(b["delta_psnr_y"], "+.4f"), True),
                     cell(fmt(b["max_abs_diff_levels"], "d"), True), cell(fmt(b["seconds"], ".2f"), True), result])
    out.append(table(["backend", "PSNR_Y (dB)", "\u0394 PSNR_Y vs PyTorch (dB)", "max |\u0394| (levels)",
                      "seconds", "result"], rows, "gate"))
    ran = [b for b in report["backends"] if b["ran"]]
    if ref["sets"]:
        header = ["set", "bicubic", "pytorch"] + [f"{b['name']} (\u0394)" for b in ran]
        set_rows = [[name, cell(fmt(bicubic.get(name), ".4f"), True), cell(fmt(psnr, ".4f"), True)]
                    + [cell(f"{b['sets'][name]['psnr_y']:.4f} ({b['sets'][name]['delta_psnr_y']:+.4f})", True)
                       for b in ran]
                    for name, psnr in ref["sets"].items()]
        out += [tag("h3", "PSNR_Y per set (dB)"), table(header, set_rows, "sets")]
    return out


# -- per image ---------------------------------------------------------------------------------
def backends_that_ran(report: dict[str, Any]) -> list[str]:
    return [b["name"] for b in report["backends"] if b["ran"]]


def deviation(row: dict[str, Any], backends: list[str]) -> tuple[float, int]:
    """An image's largest backend deviation: (max |PSNR_Y - PyTorch's| in dB, max |difference| in levels)."""
    if not backends:
        return 0.0, 0
    return (max(abs(row["psnr_y"][b] - row["psnr_y"]["pytorch"]) for b in backends),
            max(row["max_abs_diff_levels"][b] for b in backends))


def sorted_images(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-image rows, largest backend deviation first (dB, then levels, then worst student)."""
    backends = backends_that_ran(report)

    def key(row: dict[str, Any]) -> tuple[float, int, float]:
        db, levels = deviation(row, backends)
        return -db, -levels, row["psnr_y"]["pytorch"]

    return sorted(report.get("images", []), key=key)


def images_section(facts: ExportFacts) -> list[Raw]:
    report = facts.report
    rows = sorted_images(report)
    if not rows:
        return [tag("h2", "Images"), tag("p", "No per-image scores: the PyTorch reference did not produce finite "
                                              "outputs (see the quality floor above).", cls="fail")]
    backends = backends_that_ran(report)
    header = ["set", "image", "bicubic", "pytorch"]
    for b in backends:
        header += [b, f"{b} \u0394", f"{b} max |\u0394| (levels)"]
    body = []
    for row in rows:
        p = row["psnr_y"]
        line: list[object] = [row["set"], row["name"], cell(fmt(p["bicubic"], ".4f"), True),
                              cell(fmt(p["pytorch"], ".4f"), True)]
        for b in backends:
            line += [cell(fmt(p[b], ".4f"), True), cell(fmt(p[b] - p["pytorch"], "+.4f"), True),
                     cell(fmt(row["max_abs_diff_levels"][b], "d"), True)]
        body.append(line)
    return [tag("h2", "Images"),
            tag("p", "PSNR_Y (dB) of every verify image, sorted by the largest backend deviation from PyTorch "
                     "(|\u0394| in dB, then in levels).", cls="note"),
            table(header, body, "images")]


# -- crops -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pick:
    index: int  # in report["images"] and the gate's outputs
    reasons: tuple[str, ...]


def pick_images(report: dict[str, Any], n: int = PICKS) -> list[Pick]:
    """Up to ``n`` images with the largest backend deviation (only those that differ at all) and
    the ``n`` with the lowest student PSNR_Y, each once, deviation picks first."""
    rows, backends = report.get("images", []), backends_that_ran(report)
    order = sorted(range(len(rows)), key=lambda i: tuple(-v for v in deviation(rows[i], backends)))
    deviating = [i for i in order if deviation(rows[i], backends)[1] > 0][:n]
    worst = sorted(range(len(rows)), key=lambda i: rows[i]["psnr_y"]["pytorch"])[:n]
    reasons: dict[int, list[str]] = {}
    for i in deviating:
        reasons.setdefault(i, []).append("largest backend deviation")
    for i in worst:
        reasons.setdefault(i, []).append("largest loss against HR")
    return [Pick(i, tuple(r)) for i, r in reasons.items()]


def _hr(sets: list[Path], set_label: str, image: str, scale: int) -> np.ndarray:
    """The HR image as the gate scored it (mod-cropped to the scale)."""
    root = next(s for s in sets if set_name(s) == set_label)
    pair = next(p for p in find_pairs(root, scale) if p.name == image)
    return modcrop(read_image(pair.hr_path), scale)


def crops_section(facts: ExportFacts) -> list[Raw]:
    report, scale = facts.report, facts.manifest["source"]["scale"]
    picks = pick_images(report)
    out = [tag("h2", "Look closer"),
           tag("p", f"Crops of {CROP - CROP % scale}x{CROP - CROP % scale} HR pixels, the same region in every "
                    f"panel, drawn {ZOOM}x with no smoothing (one LR pixel = {scale}x{scale} HR pixels). "
                    "Difference maps: mid-grey where equal, brighter where the first image is larger, a colour "
                    "tint where channels differ; each states its amplification.", cls="note")]
    if not picks:
        return out + [tag("p", "No images to show.", cls="note")]
    backends = [b for b in backends_that_ran(report) if b in facts.outputs]
    if not backends:
        out.append(tag("p", "No backend ran here (see the gate's skip reasons): the PyTorch student only.",
                       cls="skip"))
    elif not any(deviation(row, backends)[1] for row in report["images"]):
        out.append(tag("p", "Every backend that ran matches PyTorch bit for bit on every image.", cls="note"))
    for pick in picks:
        out += _crop_panels(facts, pick, backends, scale)
    return out


def _crop_panels(facts: ExportFacts, pick: Pick, backends: list[str], scale: int) -> list[Raw]:
    row = facts.report["images"][pick.index]
    hr = _hr(facts.sets, row["set"], row["name"], scale)
    lr, bicubic, student = (facts.outputs[k][pick.index] for k in ("lr", "bicubic", "pytorch"))
    outs = {b: facts.outputs[b][pick.index] for b in backends}
    if "largest backend deviation" in pick.reasons:
        error = np.max([panels.error_map(o, student) for o in outs.values()], axis=0)
    else:
        error = panels.error_map(student, hr)
    box = panels.worst_box(error, CROP, scale)
    psnr = row["psnr_y"]
    shown: list[tuple[np.ndarray, str]] = [
        (panels.lr_panel(lr, box, scale), f"LR (nearest, x{scale})"),
        (panels.crop(bicubic, box), f"bicubic: {psnr['bicubic']:.2f} dB"),
        (panels.crop(student, box), f"PyTorch student: {psnr['pytorch']:.2f} dB"),
        *[(panels.crop(o, box), f"{b}: {psnr[b]:.2f} dB") for b, o in outs.items()],
        (panels.crop(hr, box), "HR")]
    diffs = []
    sr = panels.crop(student, box)
    if outs:  # one amplification for every backend, from the largest difference: nothing saturates
        most = max(int(panels.error_map(panels.crop(o, box), sr).max()) for o in outs.values())
        gain = panels.amplification(most)
        diffs += [(panels.difference_map(panels.crop(o, box), sr, gain),
                   f"{b} \u2212 PyTorch, x{gain} (\u00b1{panels.saturation(gain)} levels saturate; max {most} here)")
                  for b, o in outs.items()]
    # Against HR the largest error is an outlier (an edge): amplify so that 99% of pixels fit.
    err = panels.error_map(sr, panels.crop(hr, box))
    gain_hr = panels.amplification(float(np.percentile(err, 99)))
    diffs.append((panels.difference_map(sr, panels.crop(hr, box), gain_hr),
                  f"student \u2212 HR, x{gain_hr} (\u00b1{panels.saturation(gain_hr)} levels saturate; "
                  f"max {int(err.max())} here)"))
    where = (f"rows {box.top}-{box.top + box.size - 1}, columns {box.left}-{box.left + box.size - 1} of "
             f"{hr.shape[0]}x{hr.shape[1]} HR")
    return [tag("h3", f"{row['set']}/{row['name']}: {', '.join(pick.reasons)}"),
            tag("p", where, cls="note"),
            *[tag("div", join(figure(pixel_image(img, text, ZOOM), text) for img, text in group), cls="panels")
              for group in (shown, diffs)]]


# -- model card --------------------------------------------------------------------------------
def node_module(node: str) -> str:
    """The module path of an exported node name: ``"/body/body.0/conv1/Conv"`` -> ``"body.0.conv1"``
    (torch names each scope by the module's path, either whole or relative to its parent)."""
    path = ""
    for part in node.strip("/").split("/")[:-1]:
        path = part if not path or part.startswith(path + ".") else f"{path}.{part}"
    return path


def layer_rows(model: nn.Module, quantized: list[dict[str, Any]],
               float_ops: list[dict[str, str]]) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Every conv / linear / add layer with its parameters, bits and the float nodes ONNX Runtime
    left in it; and the float nodes that belong to no layer.

    Args:
        model: the collapsed float copy (layer names as exported).
        quantized: ``manifest["layers"]``.
        float_ops: ``report["onnxruntime_float_ops"]``.
    """
    bits = {layer["name"]: layer for layer in quantized}
    rows = [{"name": name, "type": type(m).__name__, "params": sum(p.numel() for p in m.parameters(recurse=False)),
             "quant": bits.get(name), "float_ops": []}
            for name, m in model.named_modules() if name and isinstance(m, _LAYER_TYPES)]
    by_name = {r["name"]: r for r in rows}
    rest = []
    for op in float_ops:
        path = node_module(op["node"])
        owner = max((n for n in by_name if path == n or path.startswith(n + ".")), key=len, default=None)
        (by_name[owner]["float_ops"] if owner else rest).append(op)
    return rows, rest


def parameter_count(model: nn.Module) -> int:
    """The network's weights and biases (quantizer steps not counted)."""
    skip = {id(p) for m in model.modules() if isinstance(m, FakeQuantizer) for p in m.parameters()}
    return sum(p.numel() for p in model.parameters() if id(p) not in skip)


def _runtime_cell(row: dict[str, Any]) -> Raw:
    if row["float_ops"]:
        ops = "; ".join(f"{op['op']}: {op['reason']}" for op in row["float_ops"])
        return cell(f"float \u2014 {ops}", cls="skip")
    if row["quant"] is None:
        return cell("float (not quantized)", cls="skip")
    return cell("integer (fused)", cls="pass")


def _rules(violations: list[str], profile: dict[str, Any]) -> Raw | str:
    """TensorRT's import rules: "none violated", or a count with the list folded away."""
    if not violations:
        return "the graph breaks none of TensorRT's import rules"
    note = "" if profile["tensorrt"]["build"] else " (this profile does not build a TensorRT engine)"
    return tag("details", join([tag("summary", f"{len(violations)} violation(s){note}"),
                                tag("ul", join(tag("li", v) for v in violations))]))


def model_card(facts: ExportFacts) -> list[Raw]:
    m, report, ckpt = facts.manifest, facts.report, facts.checkpoint
    src, recipe = m["source"], ckpt.get("recipe", {})
    args = ", ".join(f"{k}={v}" for k, v in src["args"].items())
    quant = recipe.get("quant")
    bits = f"W{quant['w_bits']}A{quant['a_bits']}" if quant else "float (no quantization)"
    metrics = ckpt.get("metrics") or {}
    train = recipe.get("train", {})
    summary = [["architecture", f"{src['model']}({args}), x{src['scale']}"],
               ["parameters", f"{parameter_count(facts.model):,}"],
               ["quantization", bits],
               ["training method", method_label(recipe) if recipe.get("dukd") else DASH],
               ["iterations", f"{ckpt.get('step')} of {train.get('iters', DASH)}"],
               ["validation PSNR_Y (checkpoint)", ", ".join(f"{k}: {v:.4f} dB" for k, v in metrics.items())
                or f"{DASH} (not validated)"],
               ["checkpoint", f"{src['checkpoint']} (sha256 {src['sha256'][:16]}\u2026)"]]
    rows, rest = layer_rows(facts.model, m["layers"], report.get("onnxruntime_float_ops", []))
    layer_table = [[r["name"], r["type"], cell(f"{r['params']:,}", True),
                    f"{r['quant']['w_bits']}-bit" if r["quant"] and r["quant"]["w_bits"] else
                    (DASH if r["quant"] or not r["params"] else "float"),
                    f"{r['quant']['a_bits']}-bit ({', '.join(r['quant']['act_containers'])})" if r["quant"]
                    else "float", _runtime_cell(r)] for r in rows]
    files = {p.name: p.stat().st_size for p in sorted(facts.folder.iterdir())
             if p.is_file() and p.suffix in (".onnx", ".plan")}
    fp32 = files.get("model_fp32.onnx")
    file_rows = [[name, cell(f"{size / 1024:,.1f} KiB", True),
                  cell(f"{size / fp32:.2f}x" if fp32 else DASH, True)] for name, size in files.items()]
    profile = m["profile"]
    g = profile["graph"]
    profile_rows = [["name", profile["name"]], ["description", profile.get("description", "")],
                    ["graph", f"opset {g['opset']}, activations {g['activations']}, clip {g['clip']}, "
                              f"head/tail {g['head_tail']}, weight bits {g['weight_bits']}"],
                    ["verify backends", ", ".join(profile["verify"]["backends"])],
                    ["TensorRT engine", report.get("tensorrt_engine", DASH)],
                    ["TensorRT rules", _rules(report.get("tensorrt_rules", []), profile)]]
    tools = [[k, v or "not installed"] for k, v in m["tools"].items()]
    out = [tag("h2", "Model card"), table(None, summary, "card"),
           tag("h3", "Layers"),
           tag("p", "Bits per layer as exported, and whether ONNX Runtime's CPU backend (onnxruntime-cpu, this "
                    "machine) runs it as a fused integer kernel or leaves float nodes in it.", cls="note"),
           table(["layer", "type", "parameters", "weights", "activations", "ONNX Runtime CPU"], layer_table,
                 "layers")]
    if rest:
        out += [tag("p", "Float nodes outside these layers:", cls="note"),
                table(["node", "op", "why"], [[op["node"], op["op"], op["reason"]] for op in rest], "other-float")]
    out += [tag("h3", "Files"), table(["file", "size", "vs FP32 ONNX"], file_rows, "files"),
            tag("h3", "Profile"), table(None, profile_rows, "profile"),
            tag("h3", "Tools"), table(["tool", "version"], tools, "tools")]
    return out
