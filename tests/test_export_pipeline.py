"""`python -m qdukd.export` end to end on tiny students: graph, artifacts, gate, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from qdukd.checkpoint import load_checkpoint, save_checkpoint, student_from_checkpoint
from qdukd.export.__main__ import main
from qdukd.export.onnx_export import deployable_copy, export_onnx, float_copy
from qdukd.export.pipeline import sha256
from qdukd.export.profiles import load_profile
from qdukd.export.runtime import ort_session
from qdukd.export.trt_rules import check_tensorrt
from qdukd.models import build_model
from qdukd.quant import QuantConfig, calibrate, freeze, prepare_qat, quant_state, quantized_layers
from qdukd.recipe import DataSection, Recipe, StudentSection
from test_models import SMALL

ARGS = {"num_feat": 8, "num_block": 1}


def write_student(path: Path, spec: str, edit=None) -> Path:
    """A calibrated tiny EDSR x4 student saved as a qdukd checkpoint (``edit(model)`` may change it)."""
    torch.manual_seed(0)
    model = build_model("edsr", 4, **ARGS)
    cfg = QuantConfig.from_string(spec)
    prepare_qat(model, cfg)
    calibrate(model, [torch.rand(2, 3, 24, 24) for _ in range(2)], method="max")
    freeze(model)
    if edit is not None:
        edit(model)
    recipe = Recipe(data=DataSection(scale=4), student=StudentSection(model="edsr", args=ARGS), quant=cfg)
    save_checkpoint(path, {"recipe": recipe.to_dict(), "student": model.state_dict(), "quant": quant_state(model),
                           "ema": None, "step": 7})
    return path


@pytest.fixture(scope="module")
def w4a4(tmp_path_factory) -> Path:
    return write_student(tmp_path_factory.mktemp("ckpt") / "w4a4.pt", "w4a4,head_tail=int8,quantize_adds=true")


def _export(ckpt: Path, out: Path, *extra: str, floor: str = "-100") -> int:
    # These students are random: parity is what most tests here check, the floor has its own tests.
    return main([str(ckpt), "--out", str(out), "--no-progress", "--min-gain-over-bicubic", floor, *extra])


def test_export_writes_a_checked_qdq_graph_and_artifacts(w4a4, tmp_path, capsys):
    out = tmp_path / "exp"
    assert _export(w4a4, out, "--target", "tensorrt-lowbit") == 0
    printed = capsys.readouterr().out
    assert "parity gate: PASSED" in printed and "skipped: " in printed  # TensorRT is not here: said so
    names = {p.name for p in out.iterdir()}
    assert {"model.onnx", "model_fp32.onnx", "report.json", "manifest.json", "triton"} <= names
    assert not list(tmp_path.glob(".exp.tmp-*"))  # the staging folder is gone

    model = onnx.load(out / "model.onnx")
    onnx.checker.check_model(model, full_check=True)
    assert check_tensorrt(model) == []
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["N", "", "H", "W"]
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    ops = [n.op_type for n in model.graph.node]
    assert "DepthToSpace" in ops and "PixelShuffle" not in ops
    producer = {o: n.op_type for n in model.graph.node for o in n.output}
    users = {i: n.op_type for n in model.graph.node for i in n.input}
    for d2s in (n for n in model.graph.node if n.op_type == "DepthToSpace" and n.output[0] in users):
        # the upsampler shuffles 8-bit codes, so its conv is followed by a Q (fusable)
        assert producer[d2s.input[0]] == "QuantizeLinear" and users[d2s.output[0]] == "DequantizeLinear"
    weight_dqs = [n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits]
    assert weight_dqs and all(next(a.i for a in n.attribute if a.name == "axis") == 0 for n in weight_dqs)
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            assert not np.any(inits[n.input[2]]) and np.all(inits[n.input[1]] > 0)
    # 4-bit layers sit on their grid inside the INT8 container; activations are clipped to theirs.
    manifest = json.loads((out / "manifest.json").read_text())
    n_w4 = sum(layer["w_bits"] == 4 for layer in manifest["layers"])
    assert n_w4 == 3 and sum(np.abs(inits[n.input[0]]).max() <= 7 for n in weight_dqs) == n_w4
    q_of = {n.input[0]: n for n in model.graph.node if n.op_type == "QuantizeLinear"}
    top_codes = {round(float(inits[c.input[2]] / inits[q_of[c.output[0]].input[1]]))
                 for c in model.graph.node if c.op_type == "Clip"}
    assert {7, 15} <= top_codes  # 4-bit signed / unsigned grids

    report = json.loads((out / "report.json").read_text())
    assert report["passed"] and report["reference"]["psnr_y"] > 0
    rows = {b["name"]: b for b in report["backends"]}
    assert rows["onnxruntime-cpu-reference"]["ran"] and abs(rows["onnxruntime-cpu-reference"]["delta_psnr_y"]) <= 0.01
    assert set(rows["tensorrt"]) >= {"name", "ran", "skipped_reason", "psnr_y", "delta_psnr_y",
                                     "max_abs_diff_levels", "seconds"}
    assert not rows["tensorrt"]["ran"] and rows["tensorrt"]["skipped_reason"]

    assert manifest["source"]["sha256"] == sha256(w4a4) and manifest["opset"] == 17
    assert {layer["name"]: layer["w_bits"] for layer in manifest["layers"]}["body.0.conv1"] == 4
    assert manifest["tools"]["onnxruntime"] and "tensorrt" in manifest["tools"]
    assert 'platform: "tensorrt_plan"' not in (out / "triton/edsr_x4_onnx/config.pbtxt").read_text()
    assert (out / "triton/edsr_x4_onnx/1/model.onnx").read_bytes() == (out / "model.onnx").read_bytes()


@pytest.mark.parametrize("spec", ["w8a8", "w4a8", "w4a4"])
def test_exact_graph_matches_the_fake_quant_student(spec, tmp_path):
    student = write_student(tmp_path / "s.pt", spec)
    model = freeze(student_from_checkpoint(load_checkpoint(student)))
    deploy, layers = deployable_copy(model, load_profile("onnxruntime-int8-exact").graph)
    x = torch.rand(1, 3, 20, 28)
    with torch.no_grad():
        want = model(x)
        assert torch.equal(deploy(x), want)  # the export copy computes exactly what PyTorch does
    assert len(layers) == len(quantized_layers(model))
    export_onnx(deploy, tmp_path / "m.onnx", 17)
    got = ort_session(tmp_path / "m.onnx", optimize=False).run(None, {"lr": x.numpy()})[0]
    assert got.shape == (1, 3, 80, 112)
    assert np.abs(got - want.numpy()).max() * 255 < 1.0  # float-rounding noise only


@pytest.mark.parametrize("name", ["edsr", "rcan", "swinir", "imdn", "pan"])
def test_every_zoo_architecture_exports_and_onnxruntime_agrees(name, tmp_path):
    torch.manual_seed(0)
    model = build_model(name, 2, **SMALL[name]).eval()
    prepare_qat(model, QuantConfig.from_string("w8a8"))
    calibrate(model, [torch.rand(2, 3, 16, 16) for _ in range(2)], method="max")
    freeze(model)
    export_onnx(deployable_copy(model, load_profile("onnxruntime-int8-exact").graph)[0], tmp_path / "q.onnx", 17)
    export_onnx(float_copy(model), tmp_path / "f.onnx", 17)
    x = torch.rand(1, 3, 14, 18)  # not a multiple of SwinIR's window: padding is in the graph
    with torch.no_grad():
        want_q, want_f = model(x).numpy(), float_copy(model)(x).numpy()
    got_q, got_f = (ort_session(tmp_path / f, optimize=False).run(None, {"lr": x.numpy()})[0]
                    for f in ("q.onnx", "f.onnx"))
    assert got_f.shape == got_q.shape == (1, 3, 28, 36)
    assert np.abs(got_f - want_f).max() < 1e-4
    # Fake-quant codes may flip on float-rounding ties (more layers, more ties): PSNR, not equality.
    assert np.mean((got_q - want_q) ** 2) < 10 ** -4.5  # PSNR > 45 dB


@pytest.mark.parametrize("share", [False, True])
def test_container_graph_fuses_convs_whose_output_is_quantized_once(share, tmp_path):
    """ONNX Runtime turns DQ -> Conv -> Q into QLinearConv, the upsampler's convs included (their Q
    sits before DepthToSpace), but only where one Q reads the conv's output. After QAT the next
    conv's and the next add's quantizers of one tensor have different steps (here: x1.1) unless
    ``share_inputs`` makes them one quantizer; then only the last conv (image output) stays float."""
    def drift(model):
        for name, layer in quantized_layers(model).items():
            if name.endswith("add"):
                layer.act_quant_a.set_scale(layer.act_quant_a.effective_scale() * 1.1)

    spec = f"w8a8,head_tail=int8,quantize_adds=true,share_inputs={str(share).lower()}"
    student = write_student(tmp_path / "s.pt", spec, edit=drift)
    out = tmp_path / "fast"
    assert _export(student, out, "--target", "onnxruntime-int8") == 0
    ort_session(out / "model.onnx", optimized_path=tmp_path / "opt.onnx")
    ops = [n.op_type for n in onnx.load(tmp_path / "opt.onnx").graph.node]
    n_convs = sum(n.op_type == "Conv" for n in onnx.load(out / "model_fp32.onnx").graph.node)
    if share:
        assert ops.count("QLinearConv") == n_convs - 1 and ops.count("Conv") == 1, ops
    else:  # the head conv and the block add write tensors that two different Qs read
        assert ops.count("Conv") > 1, ops


@pytest.mark.parametrize("quantize_bias", [True, False])
def test_onnxruntime_bias_rounding_matches_pytorch_with_quantize_bias(quantize_bias, tmp_path):
    """ONNX Runtime's optimiser rounds a float conv bias after DQ inputs onto the int32 grid of step
    input step x weight step. With ``quantize_bias`` PyTorch already adds exactly that bias, so the
    optimised session equals the unfused one up to float noise; without it they differ."""
    student = write_student(tmp_path / "s.pt", f"w4a4,quantize_bias={str(quantize_bias).lower()}")
    deploy, _ = deployable_copy(freeze(student_from_checkpoint(load_checkpoint(student))),
                                load_profile("onnxruntime-int8-exact").graph)
    export_onnx(deploy, tmp_path / "m.onnx", 17)
    x = {"lr": torch.rand(1, 3, 20, 20).numpy()}
    levels = np.abs(ort_session(tmp_path / "m.onnx").run(None, x)[0]
                    - ort_session(tmp_path / "m.onnx", optimize=False).run(None, x)[0]).max() * 255
    assert (levels < 1e-3) if quantize_bias else (levels > 1e-3), levels


def test_int4_variant_is_smaller_and_computes_the_same(w4a4, tmp_path):
    out = tmp_path / "int4"
    assert _export(w4a4, out, "--target", "onnx-int4-weights") == 0
    int4 = onnx.load(out / "model_int4.onnx")
    onnx.checker.check_model(int4, full_check=True)
    assert next(o.version for o in int4.opset_import if o.domain == "") == 21
    types = {i.name: i.data_type for i in int4.graph.initializer}
    packed = [n for n in int4.graph.node
              if n.op_type == "DequantizeLinear" and types.get(n.input[0]) == onnx.TensorProto.INT4]
    assert len(packed) == 3  # the W4 convs; the 8-bit head and tail stay INT8
    assert (out / "model_int4.onnx").stat().st_size < (out / "model.onnx").stat().st_size
    x = np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)
    runs = [ort_session(out / f, optimize=False).run(None, {"lr": x})[0] for f in ("model.onnx", "model_int4.onnx")]
    assert np.array_equal(*runs)
    rows = {b["name"]: b for b in json.loads((out / "report.json").read_text())["backends"]}
    assert rows["onnxruntime-cpu-int4"]["ran"]


def test_parity_failure_exits_1_with_the_artifacts_and_a_failed_report(tmp_path, capsys):
    def shrink_ranges(model):  # many ReLU outputs clip at code 127; the signed grids pass them on
        for layer in quantized_layers(model).values():
            for q in layer.input_quantizers:
                q.set_scale(q.effective_scale() * (4 if q.is_signed else 1 / 8))

    student = write_student(tmp_path / "clipped.pt", "w8a8", edit=shrink_ranges)
    profiles = {}
    for clip in ("container", "exact"):
        profiles[clip] = tmp_path / f"ort-{clip}.toml"
        profiles[clip].write_text(f'[graph]\nclip = "{clip}"\n')
    out = tmp_path / "exp"
    # Without its clips the graph differs from PyTorch by construction (codes 128..255), so any
    # difference fails at 0 dB.
    assert _export(student, out, "--target", str(profiles["container"]), "--max-psnr-drop", "0") == 1
    printed = capsys.readouterr().out
    assert "FAIL" in printed and "hint: the unfused reference differs too" in printed
    assert json.loads((out / "report.json").read_text())["passed"] is False
    assert (out / "model.onnx").is_file()
    assert _export(student, out, "--target", str(profiles["exact"])) == 0  # exact graph passes; out replaced


def test_bad_inputs_exit_2_with_one_line(w4a4, tmp_path, capsys):
    out = tmp_path / "exp"
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    not_export = tmp_path / "mine"
    (not_export / "keep.txt").parent.mkdir()
    (not_export / "keep.txt").write_text("mine")
    cases = [
        (_export(tmp_path / "missing.pt", out), "checkpoint not found"),
        (_export(corrupt, out), "cannot read checkpoint"),
        (_export(w4a4, out, "--target", "tensorrt-fp4"), "unknown export profile 'tensorrt-fp4'"),
        (_export(w4a4, out, "--target", "tensorrt-int8"), "unsupported layer body.0.conv1: 4-bit weights"),
        (_export(w4a4, not_export), "is not an earlier qdukd export"),
        (_export(w4a4, out, "--verify-data", str(tmp_path / "nope")), "is missing; pass folders of images"),
    ]
    errors = capsys.readouterr().err.strip().splitlines()
    assert [code for code, _ in cases] == [2] * len(cases)
    assert len(errors) == len(cases)
    for line, (_, words) in zip(errors, cases):
        assert line.startswith("error: ") and words in line
    assert not out.exists() and (not_export / "keep.txt").read_text() == "mine"
    assert not list(tmp_path.glob(".exp.tmp-*"))


def test_a_checkpoint_with_nan_weights_is_refused_naming_the_tensor(w4a4, tmp_path, capsys):
    ckpt = load_checkpoint(w4a4)
    ckpt["student"]["body.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    torch.save(ckpt, tmp_path / "nan.pt")  # save_checkpoint itself refuses, as the trainer does
    with pytest.raises(Exception, match="refusing to save"):
        save_checkpoint(tmp_path / "refused.pt", ckpt)
    assert not (tmp_path / "refused.pt").exists()
    assert _export(tmp_path / "nan.pt", tmp_path / "exp") == 2
    err = capsys.readouterr().err
    assert "tensor 'body.0.conv1.weight' has 1 non-finite" in err and not (tmp_path / "exp").exists()


def test_the_gate_fails_a_student_that_does_not_beat_bicubic(w4a4, tmp_path, capsys):
    out = tmp_path / "exp"
    assert _export(w4a4, out, floor="0") == 1  # a random student: backends agree, quality does not
    printed = capsys.readouterr().out
    assert "parity gate: FAILED" in printed and "below" not in printed and "against bicubic" in printed
    report = json.loads((out / "report.json").read_text())
    floor = report["quality_floor"]
    assert not report["passed"] and not floor["passed"] and floor["min_gain_over_bicubic_db"] == 0
    assert all(b["passed"] for b in report["backends"] if b["ran"])  # parity alone would have passed
    # bicubic scored independently: the demo val set at x4 through the bundled MATLAB-bicubic model
    assert floor["bicubic_psnr_y"]["val"] == pytest.approx(30.1393, abs=1e-4)
    gain = floor["gain_over_bicubic_db"]["val"]
    assert gain == pytest.approx(report["reference"]["sets"]["val"] - 30.1393, abs=1e-4) and gain < 0


def test_a_student_whose_output_overflows_fails_the_gate(tmp_path, capsys):
    def overflow(model):
        with torch.no_grad():
            model.conv_last.weight.mul_(1e37)  # finite weights (the float tail), an infinite output
    student = write_student(tmp_path / "inf.pt", "w8a8", edit=overflow)
    assert _export(student, tmp_path / "exp") == 1
    assert "quality floor: PyTorch reference: the model's output holds NaN or infinity" in capsys.readouterr().out
    assert json.loads((tmp_path / "exp" / "report.json").read_text())["passed"] is False


def test_an_export_that_cannot_be_replaced_is_left_as_it_was(w4a4, tmp_path, capsys):
    out = tmp_path / "exp"
    assert _export(w4a4, out) == 0
    locked = out / "triton"
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    if os.geteuid() == 0:  # root ignores permissions; an immutable folder stops root too
        if subprocess.run(["chattr", "+i", str(locked)], capture_output=True).returncode:
            pytest.skip("running as root without chattr +i support: cannot make a folder unremovable")
        undo = ["chattr", "-i", str(locked)]
    else:
        locked.chmod(0o555)
        undo = ["chmod", "755", str(locked)]
    try:
        assert _export(w4a4, out) == 2
    finally:
        subprocess.run(undo, check=True)
    assert "cannot replace the earlier export" in capsys.readouterr().err
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["exp"]  # no .exp.old-* or staging folders
