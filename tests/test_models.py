"""The model zoo: shapes, registry errors, checkpoint loading, teacher PSNR and ONNX export."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from conftest import shared_path
from qdukd.errors import QdukdError
from qdukd.models import MODELS, build_model, load_weights, model_config
from qdukd.models.common import Add


# Tiny configs: every code path (shifted windows, padding, both upsampler layouts) in milliseconds.
SMALL: dict[str, dict] = {
    "bicubic": {},
    "edsr": {"num_feat": 8, "num_block": 2, "res_scale": 0.1},
    "rcan": {"n_resgroups": 2, "n_resblocks": 2, "num_feat": 16, "reduction": 4},
    "swinir": {"img_size": 8, "window_size": 4, "embed_dim": 12, "depths": (2, 2), "num_heads": (2, 3),
               "mlp_ratio": 2.0, "num_feat": 8},
    "imdn": {"num_feat": 16, "num_modules": 2},
    "pan": {"num_feat": 8, "num_up_feat": 8, "num_block": 2},
}
SCALES = (2, 3, 4)
# The research zoo; the deployable networks have their own module (test_models_deployable.py).
ALL = [(name, s) for name in SMALL for s in SCALES]


def small(name: str, scale: int) -> torch.nn.Module:
    return build_model(name, scale, **SMALL[name]).eval()


def teacher(name: str, scale: int) -> Path:
    return shared_path("teachers", f"{name.upper()}_x{scale}.pth")


# --- shapes and the registry ----------------------------------------------------------------


@pytest.mark.parametrize("name,scale", ALL)
def test_builds_and_upscales_non_square_batches(name, scale):
    model = small(name, scale)
    assert model.scale == scale
    with torch.no_grad():
        y = model(torch.rand(2, 3, 7, 10))
    assert y.shape == (2, 3, 7 * scale, 10 * scale) and y.dtype == torch.float32


@pytest.mark.parametrize("name", [n for n in SMALL if n != "bicubic"])
def test_trains(name):
    model = small(name, 2).train()  # SwinIR's stochastic depth is active in train mode
    model(torch.rand(2, 3, 8, 8)).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_residual_adds_are_add_modules():
    expected = {"edsr": 2 + 1, "rcan": 2 * (2 + 1) + 1, "swinir": 2 * (2 + 2) + 2 + 1, "imdn": 2 + 1, "pan": 2 + 2}
    for name, n in expected.items():
        assert sum(isinstance(m, Add) for m in small(name, 2).modules()) == n, name


def test_mean_shift_is_not_a_checkpoint_key():
    for name in ("edsr", "rcan", "swinir"):
        assert not any("mean" in k for k in small(name, 2).state_dict()), name


def test_model_config_rebuilds_through_json():
    for name in SMALL:
        model = small(name, 3)
        cfg = json.loads(json.dumps(model_config(model)))
        assert cfg["name"] == name and cfg["kwargs"]["scale"] == 3
        rebuilt = build_model(cfg["name"], **cfg["kwargs"])
        assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
            k: v.shape for k, v in model.state_dict().items()}
        assert model_config(rebuilt) == model_config(model)


def test_registry_errors_name_the_fix():
    expected = "unknown model 'edsrr'.*bicubic, edsr, espcn, fsrcnn, imdn, pan, quicksrnet_l"
    with pytest.raises(QdukdError, match=expected):
        build_model("edsrr", 2)
    with pytest.raises(QdukdError, match="unknown argument 'num_feats'.*num_feat, num_block, res_scale"):
        build_model("edsr", 2, num_feats=8)
    with pytest.raises(QdukdError, match="argument 'num_feat' of model 'pan' must be int"):
        build_model("pan", 2, num_feat="40")
    for name in SMALL:
        with pytest.raises(QdukdError, match="scale 2, 3 or 4, got 5"):
            build_model(name, 5)
    with pytest.raises(QdukdError, match="num_heads"):
        build_model("swinir", 2, embed_dim=12, depths=(2, 2), num_heads=(2,))
    with pytest.raises(QdukdError, match="not a registry model"):
        model_config(torch.nn.Conv2d(3, 3, 1))
    with pytest.raises(QdukdError, match="too small for SwinIR with window 4"):
        small("swinir", 2)(torch.rand(1, 3, 2, 9))  # reflect padding needs more than window/2 pixels


def test_large_edsr_config_builds():
    # EDSR_Lx4_f256b32_DIV2K_official.pth shapes; built on the meta device so nothing is allocated.
    with torch.device("meta"):
        model = build_model("edsr", 4, num_feat=256, num_block=32, res_scale=0.1)
    sd = model.state_dict()
    assert sd["body.31.conv2.weight"].shape == (256, 256, 3, 3)
    assert sd["upsample.2.weight"].shape == (1024, 256, 3, 3) and "upsample.4.weight" not in sd


# --- load_weights ---------------------------------------------------------------------------


def _assert_same(model, sd):
    own = model.state_dict()
    assert own.keys() == sd.keys()
    assert all(torch.equal(own[k], sd[k]) for k in sd)


@pytest.mark.parametrize("name", ["edsr", "rcan", "swinir"])
def test_state_dicts_round_trip_in_every_wrapping(name, tmp_path):
    torch.manual_seed(0)
    sd = small(name, 4).state_dict()
    noise = {k: torch.randn_like(v) for k, v in sd.items()}
    wrapped = [sd, {"params": sd}, {"params_ema": sd, "params": noise}, {"state_dict": sd}, {"model": sd},
               {f"module.{k}": v for k, v in sd.items()}, {"params": {f"module.{k}": v for k, v in sd.items()}}]
    for source in wrapped:
        _assert_same(load_weights(small(name, 4), source), sd)
    torch.save({"params_ema": sd}, tmp_path / "w.pth")
    _assert_same(load_weights(small(name, 4), tmp_path / "w.pth"), sd)
    _assert_same(load_weights(small(name, 4), str(tmp_path / "w.pth")), sd)


def test_swinir_loads_official_derived_buffers():
    # Official files also hold relative_position_index and the attn_mask of their training size.
    sd = small("swinir", 2).state_dict()
    block = "layers.0.residual_group.blocks.1."
    sd[block + "attn.relative_position_index"] = torch.zeros(16, 16, dtype=torch.long)
    sd[block + "attn_mask"] = torch.zeros(4, 16, 16)
    load_weights(small("swinir", 2), sd)


def test_mismatched_checkpoints_name_the_keys():
    pan4 = small("pan", 4).state_dict()
    with pytest.raises(QdukdError, match=r"does not fit pan x2: 6 unexpected keys \(upconv2.weight.*--scale"):
        load_weights(small("pan", 2), pan4)
    with pytest.raises(QdukdError, match=r"imdn x4: .*missing keys \(fea_conv.weight.*unexpected keys \(conv_first"):
        load_weights(small("imdn", 4), pan4)
    with pytest.raises(QdukdError, match=r"shape mismatches .*upsample.0.weight \(32, 8, 3, 3\) vs \(72, 8, 3, 3\)"):
        load_weights(small("edsr", 3), small("edsr", 2).state_dict())
    # strict=False tolerates extra keys but never a wrong shape.
    load_weights(small("pan", 2), pan4, strict=False)
    with pytest.raises(QdukdError, match="shape mismatches"):
        load_weights(small("edsr", 3), small("edsr", 2).state_dict(), strict=False)


def test_real_pan_x4_into_x2_and_into_imdn():
    path = teacher("pan", 4)
    with pytest.raises(QdukdError, match=r"PAN_x4.pth does not fit pan x2: .*unexpected keys \(upconv2"):
        load_weights(build_model("pan", 2), path)
    with pytest.raises(QdukdError, match=r"does not fit imdn x4: .*missing keys.*unexpected keys"):
        load_weights(build_model("imdn", 4), path)


def test_unreadable_checkpoints(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(QdukdError, match=f"checkpoint not found: {re.escape(str(missing))}"):
        load_weights(small("pan", 2), missing)
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00not a checkpoint" * 20)
    with pytest.raises(QdukdError, match=f"cannot read checkpoint {re.escape(str(garbage))}"):
        load_weights(small("pan", 2), garbage)
    truncated = tmp_path / "truncated.pth"
    buf = io.BytesIO()
    torch.save(small("pan", 2).state_dict(), buf)
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(QdukdError, match="cannot read checkpoint .*truncated.pth"):
        load_weights(small("pan", 2), truncated)
    not_sd = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], not_sd)
    with pytest.raises(QdukdError, match="holds a list, not a state dict"):
        load_weights(small("pan", 2), not_sd)
    with pytest.raises(QdukdError, match="not a state dict of tensors"):
        load_weights(small("pan", 2), {"epoch": 3})


# --- the real teachers ----------------------------------------------------------------------


@pytest.mark.parametrize("name,scale", [(n, s) for n in ("imdn", "pan") for s in SCALES])
def test_real_teachers_load_strictly(name, scale):
    # Their PSNR against the published figures is checked in test_reference_psnr.py.
    model = load_weights(build_model(name, scale), teacher(name, scale), strict=True)
    assert model.scale == scale


# --- ONNX -----------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")
# The bicubic baseline builds its weights from the input size: not an export target.
@pytest.mark.parametrize("name,scale", [(n, s) for n, s in ALL if n != "bicubic"])
def test_onnx_export_with_dynamic_hw_matches_torch(name, scale):
    model = small(name, scale)
    f = io.BytesIO()
    torch.onnx.export(model, (torch.rand(1, 3, 8, 12),), f, dynamo=False, opset_version=17,
                      input_names=["lr"], output_names=["sr"],
                      dynamic_axes={"lr": {0: "n", 2: "h", 3: "w"}, "sr": {0: "n", 2: "sh", 3: "sw"}})
    session = ort.InferenceSession(f.getvalue(), providers=["CPUExecutionProvider"])
    x = torch.rand(2, 3, 11, 6)  # another size and batch than the export's
    with torch.no_grad():
        ref = model(x).numpy()
    out = session.run(None, {"lr": x.numpy()})[0]
    assert out.shape == ref.shape == (2, 3, 11 * scale, 6 * scale)
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)


def test_bicubic_model_is_matlab_imresize():
    from qdukd.resize import imresize

    img = np.random.default_rng(0).random((9, 13, 3))
    out = build_model("bicubic", 3)(torch.from_numpy(img).permute(2, 0, 1)[None])
    assert np.allclose(out[0].permute(1, 2, 0).numpy(), imresize(img, 3), atol=1e-12)
