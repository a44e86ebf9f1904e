"""The parity gate catches ONNX Runtime's u8 x s8 saturation on x86 CPUs without VNNI.

Without VNNI, ONNX Runtime's fused int8 convs add pairs of u8 x s8 products in int16 with
saturation. Signed activations reach its kernels shifted by +128 (code 127 -> 255), so 8-bit
weights at +-127 next to large activations overflow: 255 * 127 * 2 > 32767. The student below
is built to do exactly that in ``body.0.conv1``; ``session.x64quantprecision = 1`` (exact U8U8
kernels, ``exact_u8u8 = "auto"`` in the shipped profiles: on where the CPU lacks VNNI) is the fix. On a CPU with VNNI nothing saturates, so there
only the fixed half can run (run this file under ``qemu-x86_64 -cpu Haswell`` to see the rest).
"""

from __future__ import annotations

import json

import pytest
import torch

from qdukd.export.__main__ import main
from test_export_pipeline import write_student

HAS_VNNI = torch.cpu._is_vnni_supported()


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


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    return write_student(tmp_path_factory.mktemp("sat") / "w8a8.pt", "w8a8,quantize_adds=true", edit=_saturate)


@pytest.mark.skipif(HAS_VNNI, reason="this CPU has VNNI: ONNX Runtime's int8 kernels cannot saturate here")
def test_gate_fails_when_fused_kernels_saturate(student, tmp_path):
    out = tmp_path / "plain"
    assert main([str(student), "--out", str(out), "--target", str(_profile(tmp_path, "off")), "--no-progress"]) == 1
    rows = {b["name"]: b for b in json.loads((out / "report.json").read_text())["backends"]}
    assert rows["onnxruntime-cpu-reference"]["passed"]  # unfused: exact
    assert not rows["onnxruntime-cpu"]["passed"]  # fused: saturated


@pytest.mark.parametrize("exact_u8u8", ["auto", "on"])
def test_gate_passes_with_the_exact_u8u8_kernels(student, tmp_path, exact_u8u8):
    out = tmp_path / "fixed"
    assert main([str(student), "--out", str(out), "--target", str(_profile(tmp_path, exact_u8u8)),
                 "--no-progress"]) == 0
