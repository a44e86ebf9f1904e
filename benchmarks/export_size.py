"""Size on disk of exported students, split into quantized weights, float side data and graph.

File sizes depend on the architecture and the quantization only, not on the weight values, so
each student is built from its recipe at random initialisation (seed 0), prepared for QAT with
the recipe's quant section (``--precisions`` override the bits), calibrated on random inputs and
exported with the same functions the export job uses (``--target``'s graph settings): the
FP32 ONNX, the INT8 Q/DQ ``model.onnx`` and, for W2-W4 layers, the INT4-packed variant.

Default students: the CPU deployment student (EDSR 32x4, 0.16M parameters) and the paper-scale
students of recipes/div2k (EDSR 64x32, RCAN 10x6, SwinIR 60x4x4).

Variants: ``--set`` adds recipe overrides (e.g. ``quant.head_tail="int8"``), ``--tag`` names them;
rows of other variants already in ``--out`` are kept.

Usage:
    python benchmarks/export_size.py [--recipes recipes/div2k/edsr_x4.toml ...] [--precisions w8a8 w4a4]
    python benchmarks/export_size.py --set 'quant.head_tail="int8"' --tag head_tail=int8
"""

from __future__ import annotations

import argparse
import collections
import tempfile
from pathlib import Path

import onnx
import torch
from onnx import numpy_helper

from common import RESULTS, machine, read_results
from qdukd.atomic import write_json
from qdukd.export import load_profile
from qdukd.export.onnx_export import deployable_copy, export_onnx, float_copy, write_int4_variant
from qdukd.models import build_model
from qdukd.quant import calibrate, freeze, prepare_qat
from qdukd.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ["recipes/cpu/w8a8_deploy.toml", "recipes/div2k/edsr_x4.toml", "recipes/div2k/rcan_x4.toml",
           "recipes/div2k/swinir_x4.toml"]


def breakdown(path: Path) -> dict[str, int]:
    """Bytes of an ONNX file: quantized (1-byte or INT4) tensors, float/int32 tensors (weights of
    float layers, per-channel scales, biases), scalars (per-tensor scales, zero points), graph."""
    model = onnx.load(path)
    parts: collections.Counter[str] = collections.Counter()
    for t in model.graph.initializer:
        a = numpy_helper.to_array(t)
        low_bit = a.dtype.itemsize == 1 or str(a.dtype) in ("int4", "uint4")
        role = "scalars" if a.size == 1 else "quantized" if low_bit else "float"
        parts[role] += len(t.SerializeToString())
    total = path.stat().st_size
    return {"bytes": total, **parts, "graph": total - sum(parts.values())}


def student_sizes(recipe_file: str, w_bits: int, a_bits: int, target: str, overrides: list[str]) -> dict:
    recipe = load_recipe(ROOT / recipe_file, [f"quant.w_bits={w_bits}", f"quant.a_bits={a_bits}", *overrides])
    torch.manual_seed(0)
    net = build_model(recipe.student.model, recipe.data.scale, **recipe.student.args).eval()
    params = sum(p.numel() for p in net.parameters())
    prepare_qat(net, recipe.quant)
    side = 64 if recipe.student.model == "swinir" else 32
    calibrate(net, [torch.rand(2, 3, side, side, generator=torch.Generator().manual_seed(k)) for k in range(2)])
    freeze(net)
    graph = load_profile(target).graph
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        export_onnx(deployable_copy(net, graph)[0], out / "model.onnx", graph.opset, graph.clip)
        export_onnx(float_copy(net), out / "model_fp32.onnx", graph.opset)
        files = {"model_fp32.onnx": breakdown(out / "model_fp32.onnx"), "model.onnx": breakdown(out / "model.onnx")}
        if w_bits <= 4 and graph.int4_weights:
            write_int4_variant(out / "model.onnx", out / "model_int4.onnx")
            files["model_int4.onnx"] = breakdown(out / "model_int4.onnx")
    fp32 = files["model_fp32.onnx"]["bytes"]
    return {"recipe": recipe_file, "overrides": overrides, "student": recipe.student.model, "args": recipe.student.args,
            "params": params, "precision": f"w{w_bits}a{a_bits}", "head_tail": recipe.quant.head_tail,
            "files": files, "ratio": {k: v["bytes"] / fp32 for k, v in files.items()},
            "quantized_ratio": {k: v.get("quantized", 0) / fp32 for k, v in files.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipes", nargs="+", default=RECIPES)
    ap.add_argument("--precisions", nargs="+", default=["w8a8", "w4a4"])
    ap.add_argument("--target", default="onnx-int4-weights")
    ap.add_argument("--out", type=Path, default=RESULTS / "export_size.json")
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="recipe overrides of a variant")
    ap.add_argument("--tag", default="recipe", help="name of the variant")
    args = ap.parse_args()
    torch.set_num_threads(1)
    rows = (read_results(args.out, {"rows": list}, "an export-size results file", "give --out a new file")["rows"]
            if args.out.exists() else [])
    for recipe_file in args.recipes:
        for precision in args.precisions:
            w_bits, a_bits = (int(x) for x in precision[1:].split("a"))
            row = {"tag": args.tag, **student_sizes(recipe_file, w_bits, a_bits, args.target, args.set)}
            rows = [r for r in rows if (r["tag"], r["recipe"], r["precision"]) != (args.tag, recipe_file, precision)]
            rows.append(row)
            write_json(args.out, {"target": args.target, "rows": rows, "machine": machine()})
            fp32 = row["files"]["model_fp32.onnx"]["bytes"]
            print(f"[{args.tag}] {recipe_file} {precision} ({row['params'] / 1e6:.2f} M params): FP32 {fp32:,} B, "
                  + ", ".join(f"{k} {v['bytes']:,} B = {row['ratio'][k]:.4f}x (quantized tensors "
                              f"{row['quantized_ratio'][k]:.4f}x)" for k, v in row["files"].items()
                              if k != "model_fp32.onnx"), flush=True)


if __name__ == "__main__":
    main()
