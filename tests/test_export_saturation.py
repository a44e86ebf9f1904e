"""The parity gate catches ONNX Runtime's u8 x s8 saturation on x86 CPUs without VNNI.

Without VNNI, ONNX Runtime's fused int8 convs add pairs of u8 x s8 products in int16 with
saturation. Signed activations reach its kernels shifted by +128 (code 127 -> 255), so 8-bit
weights at +-127 next to large activations overflow: 255 * 127 * 2 > 32767. The student below
is built to do exactly that in ``body.0.conv1``; ``session.x64quantprecision = 1`` (exact U8U8
kernels, ``exact_u8u8 = "auto"`` in the shipped profiles: on where the CPU lacks VNNI) is the fix.
On a CPU with VNNI nothing saturates, so there only the fixed half can run (run this file under
``qemu-x86_64 -cpu Haswell`` to see the rest); the settings the session gets are checked on every CPU.
"""

from __future__ import annotations

import json
import platform

import onnx
import pytest
import torch
from onnx import TensorProto, helper

from qdukd.export import runtime
from qdukd.export.__main__ import main
from qdukd.export.profiles import load_profile
from qdukd.export.runtime import backend_function, cpu_saturates_u8s8
from test_export_pipeline import write_student

HAS_VNNI = torch.cpu._is_vnni_supported()
EXACT_U8U8 = "session.x64quantprecision"


def _identity_(conv, step: float) -> None:
    """Make ``conv`` pass its input through (centre tap 1) with every weight code at 127."""
    conv.weight.zero_()
    conv.weight[:, :, 1, 1] = torch.eye(conv.weight.shape[0])
    conv.bias.zero_()
    conv.weight_quant.set_scale(torch.full((conv.weight.shape[0],), 1 / 127))
    conv.act_quant.set_scale(torch.tensor(step))


def _saturate(model) -> None:
    """Constant input codes of +127 into a conv whose weight codes are all +127, then carry its
    output (50 exactly, on EDSR's 0-255 feature scale; ~1% of that when saturated) unchanged
    to the tail."""
    body, conv = model.body[0], model.body[0].conv1
    k = conv.weight[0].numel()
    with torch.no_grad():
        model.conv_first.weight.zero_()
        model.conv_first.bias.fill_(100.0)
        conv.act_quant.set_scale(torch.tensor(100.0 / 127))
        conv.weight.fill_(50.0 / (100.0 * k))
        conv.bias.zero_()
        conv.weight_quant.set_scale(torch.full((conv.weight.shape[0],), 50.0 / (100.0 * k * 127)))
        _identity_(body.conv2, 60 / 127)
        _identity_(model.conv_after_body, 200 / 127)
        for add in (body.add, model.add):
            add.act_quant_a.set_scale(torch.tensor(200 / 127))
            add.act_quant_b.set_scale(torch.tensor(200 / 127))


def _profile(tmp_path, exact_u8u8: str):
    path = tmp_path / f"ort-{exact_u8u8}.toml"
    # Container clips: the convs fuse into QLinearConv, where the saturation happens.
    path.write_text(f'[graph]\nclip = "container"\n[onnxruntime]\nexact_u8u8 = "{exact_u8u8}"\n')
    return path


# The student is built to saturate, not to beat bicubic: the quality floor is off, so the exit
# code is the parity gate's alone.
NO_FLOOR = ("--min-gain-over-bicubic", "-1000")


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return write_student(tmp_path_factory.mktemp("sat") / "w8a8.pt", "w8a8,quantize_adds=true", edit=_saturate)


@pytest.mark.skipif(HAS_VNNI, reason="this CPU has VNNI: ONNX Runtime's int8 kernels cannot saturate here")
def test_gate_fails_when_fused_kernels_saturate(student, tmp_path):
    out = tmp_path / "plain"
    assert main([str(student), "--out", str(out), "--target", str(_profile(tmp_path, "off")), "--no-progress",
                 *NO_FLOOR]) == 1
    rows = {b["name"]: b for b in json.loads((out / "report.json").read_text())["backends"]}
    assert rows["onnxruntime-cpu-reference"]["passed"]  # unfused: exact
    assert not rows["onnxruntime-cpu"]["passed"]  # fused: saturated


@pytest.mark.parametrize("exact_u8u8", ["auto", "on"])
def test_gate_passes_with_the_exact_u8u8_kernels(student, tmp_path, exact_u8u8):
    out = tmp_path / "fixed"
    assert main([str(student), "--out", str(out), "--target", str(_profile(tmp_path, exact_u8u8)),
                 "--no-progress", *NO_FLOOR]) == 0


# The gate tests above cannot see the fix go missing on a CPU with VNNI (nothing saturates
# there), so the settings the fused CPU session really gets are checked directly, for both kinds
# of CPU: only the capability probe is replaced, onnxruntime builds a real session.


def _identity_onnx(path) -> None:
    """A one-node model with the exported models' input and output (the session's settings do not
    depend on the graph)."""
    io = [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", 3, "H", "W"]) for name in ("lr", "sr")]
    graph = helper.make_graph([helper.make_node("Identity", ["lr"], ["sr"])], "identity", io[:1], io[1:])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)


@pytest.mark.parametrize(("exact_u8u8", "saturates", "entry"), [
    ("on", True, "1"), ("on", False, "1"), ("auto", True, "1"), ("auto", False, None),
    ("off", True, None), ("off", False, None)])
def test_fused_cpu_session_gets_the_exact_u8u8_setting(tmp_path, monkeypatch, exact_u8u8, saturates, entry):
    monkeypatch.setattr(runtime, "cpu_saturates_u8s8", lambda: saturates)  # True: x86 without VNNI
    sessions = []
    real_session = runtime.ort_session

    def keep(*args, **kwargs):
        sessions.append(real_session(*args, **kwargs))
        return sessions[-1]

    monkeypatch.setattr(runtime, "ort_session", keep)
    _identity_onnx(tmp_path / "model.onnx")
    backend_function("onnxruntime-cpu", tmp_path, load_profile(_profile(tmp_path, exact_u8u8)))
    (session,) = sessions
    try:
        got = session.get_session_options().get_session_config_entry(EXACT_U8U8)
    except RuntimeError:  # onnxruntime's answer for an entry that was never set
        got = None
    assert got == entry


@pytest.mark.parametrize(("machine", "vnni", "saturates"), [
    ("x86_64", False, True), ("AMD64", False, True), ("x86_64", True, False), ("aarch64", False, False)])
def test_saturation_probe(monkeypatch, machine, vnni, saturates):
    monkeypatch.setattr(platform, "machine", lambda: machine)
    monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: vnni)
    assert cpu_saturates_u8s8() is saturates
