"""The deployable zoo (ESPCN, FSRCNN, QuickSRNet, XLSR, ABPN, SESR, RLFN, SPAN): shapes, published
parameter counts, registry round trips, exact re-parameterization, QAT and FP32 ONNX export."""

from __future__ import annotations

import copy
import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qdukd.errors import QdukdError
from qdukd.export.onnx_export import export_onnx, float_copy
from qdukd.models import MODELS, build_model, load_weights, model_config
from qdukd.models.common import Add, NearestAnchor
from qdukd.quant import QuantConfig, calibrate, prepare_qat

# Tiny configs for the slow paths (QAT, ONNX, round trips): every code path in milliseconds.
SMALL: dict[str, dict] = {
    "espcn": {"num_feat": 8, "num_feat2": 4},
    "fsrcnn": {"d": 8, "s": 4, "m": 2},
    "quicksrnet_s": {"num_channels": 8, "num_intermediate_layers": 1},
    "quicksrnet_m": {"num_channels": 8, "num_intermediate_layers": 2},
    "quicksrnet_l": {"num_channels": 8, "num_intermediate_layers": 2},
    "xlsr": {"num_feat": 8, "num_gblocks": 1, "groups": 4},
    "abpn": {"num_feat": 8, "num_block": 1},
    "sesr_m3": {"num_feat": 4, "num_block": 2, "expand": 8},
    "sesr_m5": {"num_feat": 4, "num_block": 2, "expand": 8},
    "sesr_m7": {"num_feat": 4, "num_block": 2, "expand": 8},
    "sesr_m11": {"num_feat": 4, "num_block": 2, "expand": 8},
    "sesr_xl": {"num_feat": 4, "num_block": 2, "expand": 8, "prelu": False},
    "rlfn": {"num_feat": 8, "num_block": 2, "esa_feat": 4},
    "rlfn_s": {"num_feat": 8, "num_block": 2, "esa_feat": 4, "mid_feat": 6},
    "span": {"num_feat": 8, "num_block": 2},
}
NAMES = list(SMALL)
COLLAPSIBLE = [n for n in NAMES if n.startswith(("sesr", "span"))]
SCALES = (2, 3, 4)
# RLFN's ESA pools 7x7 after a strided conv: inputs need at least 15 pixels a side.
H, W = 16, 19


def small(name: str, scale: int, **kwargs) -> nn.Module:
    return build_model(name, scale, **{**SMALL[name], **kwargs}).eval()


def randomize(model: nn.Module, seed: int = 0, std: float = 0.1) -> nn.Module:
    """Every parameter (biases and PReLU slopes too) drawn at random, so a wrong fold shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model


def conv_weights(model: nn.Module) -> int:
    """Conv and transposed-conv weights only (no biases, no PReLU): how the papers count."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)))


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_every_deployable_model_is_registered_and_tested():
    assert set(NAMES) <= set(MODELS)


# --- shapes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_upscales_non_square_batches(name):
    # Every scale on the tiny config, and the paper's config (deployed form) at x4.
    deployed = {"collapsed": True} if name in COLLAPSIBLE else {}
    for model in [small(name, s) for s in SCALES] + [build_model(name, 4, **deployed).eval()]:
        with torch.no_grad():
            y = model(torch.rand(2, 3, H, W))
        assert y.shape == (2, 3, H * model.scale, W * model.scale) and y.dtype == torch.float32


@pytest.mark.parametrize("name", NAMES)
def test_trains(name):
    model = small(name, 2).train()
    model(torch.rand(2, 3, H, W)).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_nearest_anchor_is_nearest_upsampling():
    x = torch.rand(2, 3, 5, 7)
    for s in SCALES:
        up = nn.PixelShuffle(s)(NearestAnchor(s)(x))
        assert torch.equal(up, F.interpolate(x, scale_factor=s, mode="nearest"))


def test_residual_adds_are_add_modules():
    # Hand-counted from each architecture: anchors, short/long residuals, ESA's sum, Conv3XC's skip.
    expected = [
        ("espcn", {}, 0), ("fsrcnn", {}, 0), ("xlsr", {}, 0),
        ("quicksrnet_s", {}, 0), ("quicksrnet_l", {}, 1), ("abpn", {}, 1),
        ("sesr_m5", {}, 5 + 2), ("sesr_m5", {"collapsed": True}, 2),
        ("rlfn", {}, 6 * 2 + 1),  # each RLFB's residual and ESA's sum, the long residual
        ("span", {}, 6 + (1 + 6 * 3 + 1)),  # each SPAB's residual, each Conv3XC's skip
        ("span", {"collapsed": True}, 6),
    ]
    for name, kwargs, n in expected:
        model = build_model(name, 2, **kwargs)
        assert sum(isinstance(m, Add) for m in model.modules()) == n, (name, kwargs)


def test_rlfn_names_a_too_small_input():
    with pytest.raises(QdukdError, match="at least 15x15"):
        small("rlfn", 2)(torch.rand(1, 3, 14, 30))


# --- published parameter counts -------------------------------------------------------------
# The papers count a luminance (1-channel) network where they say so; the zoo is RGB, so the
# first and last layers hold 3x their weights. Those corrections come from the papers' own
# layer definitions; the published numbers are written out as the papers print them.


def test_espcn_layers_are_the_papers():
    # Shi et al., the paper's network: l = 3, (f1, n1) = (5, 64), (f2, n2) = (3, 32), f3 = 3 (no count printed).
    for s in SCALES:
        shapes = [tuple(m.weight.shape) for m in build_model("espcn", s).modules() if isinstance(m, nn.Conv2d)]
        assert shapes == [(64, 3, 5, 5), (32, 64, 3, 3), (3 * s * s, 32, 3, 3)]


def test_fsrcnn_parameter_count():
    # Dong et al., the paper's complexity count: FSRCNN(56, 12, 4) has 12,464 parameters and FSRCNN-s (32, 5, 1) 3,937,
    # counted without biases/PReLU on Y. RGB adds 2 * (5*5 + 9*9) * d weights (first conv, deconv).
    for s in SCALES:
        assert conv_weights(build_model("fsrcnn", s)) == 12_464 + 2 * 106 * 56
        assert conv_weights(build_model("fsrcnn", s, d=32, s=5, m=1)) == 3_937 + 2 * 106 * 32


def test_quicksrnet_variants():
    # The variants as the authors' AIMET model zoo defines them: (channels, intermediate convs, ITO).
    variants = {"quicksrnet_s": (32, 2, False), "quicksrnet_m": (32, 5, False), "quicksrnet_l": (64, 11, True)}
    for name, (c, n, ito) in variants.items():
        model = build_model(name, 4)
        cfg = model.config
        assert (cfg["num_channels"], cfg["num_intermediate_layers"], cfg["ito"]) == (c, n, ito)
        assert sum(isinstance(m, nn.Conv2d) for m in model.modules()) == n + 2
    # Qualcomm AI Hub's model card for the released QuickSRNetSmall (x4 weights): 33.3K parameters.
    assert round(params(build_model("quicksrnet_s", 4)), -2) == 33_300


def test_xlsr_parameter_count():
    # Ayazoglu, abstract: "30x fewer parameters than VDSR" (VDSR: 665K), i.e. about 22K, at x3.
    n = params(build_model("xlsr", 3))
    assert 665_000 / 31 < n < 665_000 / 29


def test_abpn_parameter_count():
    # Du et al. (and the authors' README): 42.54K parameters for the x3 model (28 channels).
    assert round(params(build_model("abpn", 3)), -1) == 42_540


def test_sesr_parameter_counts():
    # Bhardwaj et al., results table: collapsed weights on Y (biases and PReLU not counted).
    # x2: M3 8.91K, M5 13.52K, M11 27.34K, XL 105.37K; x4: M5 18.32K. RGB adds
    # 2 * 5*5 * f weights to the head and 2 * 5*5 * f * s^2 to the tail.
    published = {("sesr_m3", 2): 8_910, ("sesr_m5", 2): 13_520, ("sesr_m11", 2): 27_340, ("sesr_xl", 2): 105_370,
                 ("sesr_m5", 4): 18_320}
    for (name, s), paper in published.items():
        model = build_model(name, s, collapsed=True)
        f = model.config["num_feat"]
        assert (conv_weights(model) - 2 * 25 * f * (1 + s * s)) // 10 * 10 == paper, name  # printed truncated


def test_rlfn_parameter_counts():
    # Kong et al., comparison table: RLFN 543K at x4. The authors' README (and the NTIRE 2022
    # report): the challenge entry, 46 channels, 48 hidden, 4 blocks, 0.317M.
    assert params(build_model("rlfn", 4)) // 1000 == 543
    assert round(params(build_model("rlfn", 4, num_feat=46, mid_feat=48, num_block=4)), -3) == 317_000


def test_span_parameter_count():
    # Wan et al., comparison table at x4: SPAN 498K (deployed, i.e. collapsed, form).
    assert params(build_model("span", 4, collapsed=True)) // 1000 == 498


# --- the registry ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_model_config_rebuilds_through_json(name):
    model = small(name, 3)
    cfg = json.loads(json.dumps(model_config(model)))
    assert cfg["name"] == name and cfg["kwargs"]["scale"] == 3
    rebuilt = build_model(cfg["name"], **cfg["kwargs"])
    assert model_config(rebuilt) == model_config(model)
    load_weights(rebuilt, model.state_dict())  # strict: same keys and shapes


def test_registry_rejects_bad_arguments():
    with pytest.raises(QdukdError, match="argument 'collapsed' of model 'sesr_m5' must be bool"):
        build_model("sesr_m5", 2, collapsed=1)
    with pytest.raises(QdukdError, match="unknown argument 'variant'"):
        build_model("quicksrnet_s", 2, variant="l")
    with pytest.raises(QdukdError, match="multiple of groups"):
        build_model("xlsr", 2, num_feat=30)
    for name in NAMES:
        with pytest.raises(QdukdError, match="scale 2, 3 or 4, got 5"):
            build_model(name, 5)


# --- re-parameterization (SESR, SPAN) -------------------------------------------------------


@pytest.mark.parametrize("name,scale", [("sesr_m5", 2), ("sesr_m5", 4), ("sesr_xl", 3), ("span", 2), ("span", 3),
                                        ("span", 4)])
def test_collapse_is_exact_and_loads_into_the_collapsed_form(name, scale):
    expanded = randomize(small(name, scale))
    if hasattr(expanded, "clip"):
        expanded.clip = nn.Identity()  # compare before SESR's output clip, which could hide a difference
    x = torch.rand(2, 3, H, W)
    with torch.no_grad():
        ref = expanded(x)
    model = copy.deepcopy(expanded)
    model.collapse()
    assert model.config["collapsed"] is True
    assert not any(hasattr(m, "expand") or hasattr(m, "sk") for m in model.modules())
    with torch.no_grad():
        out = model(x)
    assert ref.abs().max() > 0.1  # the comparison means something
    torch.testing.assert_close(out, ref, atol=1e-5 * ref.abs().max().item(), rtol=0)
    sd = {k: v.clone() for k, v in model.state_dict().items()}
    model.collapse()  # idempotent
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in sd.items())
    assert model.state_dict().keys() == sd.keys()

    cfg = model_config(model)
    collapsed = load_weights(build_model(cfg["name"], **cfg["kwargs"]), sd)  # strict
    assert collapsed.config["collapsed"] is True
    assert load_weights(build_model(name, scale, **{**SMALL[name], "collapsed": True}), sd) is not None
    if hasattr(collapsed, "clip"):
        collapsed.clip = nn.Identity()
    with torch.no_grad():
        torch.testing.assert_close(collapsed.eval()(x), out, atol=0, rtol=0)


def test_collapse_after_a_training_step():
    model = small("sesr_m5", 2).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, target = torch.rand(2, 3, H, W), torch.rand(2, 3, 2 * H, 2 * W)
    F.l1_loss(model(x), target).backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        ref = model(x)
        model.collapse()
        torch.testing.assert_close(model(x), ref, atol=1e-5, rtol=0)


# --- quantization and export ----------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_prepare_qat_w8a8_runs(name):
    model = small(name, 2)
    prepare_qat(model, QuantConfig.from_string("w8a8"))
    if name in COLLAPSIBLE:
        assert model.config["collapsed"] is True  # QAT quantizes the deployed form
    calibrate(model, [torch.rand(1, 3, H, W)])
    with torch.no_grad():
        y = model(torch.rand(1, 3, H, W))
    assert y.shape == (1, 3, 2 * H, 2 * W) and torch.isfinite(y).all()


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning", "ignore::UserWarning")
@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("scale", [4])
def test_fp32_onnx_export_matches_torch(name, scale, tmp_path):
    model = float_copy(small(name, scale))  # SESR and SPAN: collapsed (their exactness is tested above)
    path = tmp_path / f"{name}.onnx"
    export_onnx(model, path, 17)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(2, 3, 17, 21)  # another size and batch than the export's
    with torch.no_grad():
        ref = model(x).numpy()
    out = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert out.shape == ref.shape == (2, 3, 17 * scale, 21 * scale)
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)


def test_rlfn_and_span_keep_the_authors_module_names():
    # So the authors' checkpoints load (RLFN strictly; SPAN's hold both forms: strict=False).
    rlfn = build_model("rlfn", 4).state_dict()
    assert {"conv_1.weight", "block_6.c3_r.weight", "block_1.esa.conv_f.weight", "block_1.esa.conv4.bias",
            "conv_2.weight", "upsampler.0.weight"} <= rlfn.keys()
    span = build_model("span", 4).state_dict()
    assert {"conv_1.sk.weight", "block_6.c3_r.conv.2.bias", "conv_cat.weight", "upsampler.0.weight"} <= span.keys()
    deployed = build_model("span", 4, collapsed=True).state_dict()
    assert {"conv_1.eval_conv.weight", "block_1.c2_r.eval_conv.bias", "conv_2.eval_conv.weight"} <= deployed.keys()
    assert not any(k.endswith(("sk.weight", "conv.0.weight")) for k in deployed)
