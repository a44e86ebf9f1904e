"""prepare_qat: which layers are swapped, at which bits; head/tail detection; QuantConfig parsing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from test_models_deployable import SMALL as MOBILE
from torch import nn

from qdukd.errors import QdukdError
from qdukd.models import build_model
from qdukd.models.common import Add
from qdukd.quant import (QuantAdd, QuantConfig, QuantConv2d, QuantConvTranspose2d, QuantLinear,
                         activation_range_parameters, calibrate, dequantize, find_roles, plan_layers, prepare_qat,
                         quant_state, quantized_layers, restore_qat)
from qdukd.quant.policy import KINDS

FLOAT = tuple(KINDS)


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(c, c, 3, 1, 1), nn.Conv2d(c, c, 3, 1, 1)
        self.relu, self.add = nn.ReLU(), Add()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.add(x, self.conv2(self.relu(self.conv1(x))))


class TinySR(nn.Module):
    """x2 SR net with a channel-mixing Linear, a PixelShuffle upsampler, an HR conv and a bicubic skip."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, c, 3, 1, 1)
        self.body = nn.Sequential(Block(c), Block(c))
        self.mix = nn.Linear(c, c)
        self.mid = nn.Conv2d(c, c, 3, 1, 1)
        self.add = Add()
        self.up = nn.Sequential(nn.Conv2d(c, 4 * c, 3, 1, 1), nn.PixelShuffle(2))
        self.hr = nn.Conv2d(c, c, 3, 1, 1)
        self.last = nn.Conv2d(c, 3, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)  # image skip: not "the" upscale
        f = self.head(x)
        b = self.mix(self.body(f).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        f = self.add(f, self.mid(b))
        gate = torch.sigmoid(f.mean((2, 3), keepdim=True))
        f = gate * f  # a broadcast that must not look like an upscale
        return self.last(torch.relu(self.hr(self.up(f)))) + base


ADDS = ["body.0.add", "body.1.add", "add"]
BODY = ["body.0.conv1", "body.0.conv2", "body.1.conv1", "body.1.conv2", "mix", "mid", *ADDS]
HEAD_TAIL = ["head", "up.0", "hr", "last"]


def swapped(model: nn.Module) -> dict[str, nn.Module]:
    return {n: m for n, m in model.named_modules() if isinstance(m, (QuantConv2d, QuantConvTranspose2d, QuantLinear,
                                                                      QuantAdd))}


def still_float(model: nn.Module) -> list[str]:
    return [n for n, m in model.named_modules() if n and type(m) in FLOAT]


def test_roles_of_tiny_net():
    roles = find_roles(TinySR(), FLOAT)
    assert {n for n, r in roles.items() if r == "head"} == {"head"}
    assert {n for n, r in roles.items() if r == "tail"} == {"up.0", "hr", "last"}
    assert {n for n, r in roles.items() if r == "body"} == set(BODY)


class FSRCNNLike(nn.Module):
    """Feature extraction, a shrinking conv that feeds a x2 transposed conv directly (the upsampler)."""

    def __init__(self) -> None:
        super().__init__()
        self.head, self.act = nn.Conv2d(3, 8, 5, 1, 2), nn.PReLU(8)
        self.shrink = nn.Conv2d(8, 4, 1)
        self.up = nn.ConvTranspose2d(4, 3, 9, 2, 4, output_padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.shrink(self.act(self.head(x))))


class AttentionSR(nn.Module):
    """A body branch that pools a map and interpolates it back to the LR size (RLFN's ESA), then x2."""

    def __init__(self) -> None:
        super().__init__()
        self.head, self.down, self.gate = nn.Conv2d(3, 8, 3, 1, 1), nn.Conv2d(8, 8, 3, 2, 1), nn.Conv2d(8, 8, 1)
        self.up = nn.Sequential(nn.Conv2d(8, 12, 3, 1, 1), nn.PixelShuffle(2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.head(x)
        small = F.max_pool2d(self.down(f), 3, 2)
        gate = torch.sigmoid(self.gate(F.interpolate(small, size=f.shape[-2:], mode="bilinear", align_corners=False)))
        return self.up(f * gate)


class AnchorSR(nn.Module):
    """ABPN / QuickSRNet / SESR tail: the last conv's r^2 * 3 channels plus the repeated input, a clip, a shuffle."""

    def __init__(self) -> None:
        super().__init__()
        self.head, self.mid, self.last = nn.Conv2d(3, 8, 3, 1, 1), nn.Conv2d(8, 8, 3, 1, 1), nn.Conv2d(8, 12, 3, 1, 1)
        self.add, self.shuffle = Add(), nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.add(x.repeat_interleave(4, dim=1), self.last(torch.relu(self.mid(torch.relu(self.head(x))))))
        return self.shuffle(torch.clamp(y, 0.0, 1.0))


def test_roles_with_a_transposed_conv_upsampler_an_anchor_and_an_attention_resize():
    roles = find_roles(FSRCNNLike(), FLOAT)
    # the transposed conv is the upsampler itself, so the conv feeding it is an ordinary body layer
    assert roles == {"head": "head", "shrink": "body", "up": "tail"}
    # the sub-pixel conv's output reaches the shuffle through the anchor add and a clip: both are tail
    assert find_roles(AnchorSR(), FLOAT) == {"head": "head", "mid": "body", "last": "tail", "add": "tail"}
    # enlarging a pooled map back to the LR size is not the upscale
    assert find_roles(AttentionSR(), FLOAT) == {"head": "head", "down": "body", "gate": "body", "up.0": "tail"}


@pytest.mark.parametrize("groups", [1, 2])
def test_transposed_conv_twin_quantizes_weights_per_output_channel_on_axis_1(groups):
    torch.manual_seed(0)
    model = FSRCNNLike()
    if groups == 2:  # a grouped upsampler: weight (in, out / groups, kH, kW)
        model.up = nn.ConvTranspose2d(4, 6, 4, 2, 1, groups=2)
    prepare_qat(model, QuantConfig(w_bits=4, a_bits=8, head_tail="int8"))
    calibrate(model, [torch.rand(2, 3, 12, 12)], method="max")
    up = model.up
    assert isinstance(up, QuantConvTranspose2d) and up.weight_quant.axis == 1
    assert up.weight_scale().shape == (up.weight.shape[1],) and (up.w_bits, up.a_bits) == (8, 8)
    codes = up.int_weight()
    # max calibration per output channel (axis 1): every channel's largest weight is code +-127
    assert codes.dtype == torch.int8 and codes.abs().amax(dim=(0, 2, 3)).tolist() == [127] * up.weight.shape[1]
    assert torch.equal(dequantize(codes, up.weight_scale(), axis=1), up.weight_quant(up.weight))
    # The twin computes nn.ConvTranspose2d's function on the fake-quantized input and weight.
    reference = nn.ConvTranspose2d(up.in_channels, up.out_channels, up.kernel_size, up.stride, up.padding,
                                   up.output_padding, up.groups)
    with torch.no_grad():
        reference.weight.copy_(up.weight_quant(up.weight))
        reference.bias.copy_(up.effective_bias())
        x = torch.rand(1, 4, 7, 9)
        assert torch.equal(up(x), reference(up.act_quant(x)))
        assert torch.equal(up(x, output_size=[14, 18]), reference(up.act_quant(x), output_size=[14, 18]))
    state = quant_state(model)
    assert state["layers"]["up"]["kind"] == "conv_transpose2d"
    fresh = FSRCNNLike()
    fresh.up = nn.ConvTranspose2d(*[getattr(up, a) for a in ("in_channels", "out_channels", "kernel_size", "stride",
                                                             "padding", "output_padding", "groups")])
    restore_qat(fresh, state).load_state_dict(model.state_dict(), strict=True)
    assert torch.equal(fresh.eval()(x[:, :3]), model.eval()(x[:, :3]))


def test_default_policy_quantizes_the_body_and_keeps_head_tail_float():
    model = TinySR()
    weight = model.body[0].conv1.weight
    prepare_qat(model, QuantConfig())
    layers = swapped(model)
    body_convs = [n for n in BODY if n not in ADDS]
    assert sorted(layers) == sorted(body_convs) and sorted(still_float(model)) == sorted(HEAD_TAIL + ADDS)
    assert isinstance(layers["mix"], QuantLinear)
    assert all(m.a_bits == 4 for m in layers.values()) and layers["mid"].w_bits == 4
    assert model.body[0].conv1.weight is weight  # parameters shared: an existing optimizer still holds them


def test_quantize_adds_switch():
    layers = swapped(prepare_qat(TinySR(), QuantConfig(quantize_adds=True)))
    assert sorted(layers) == sorted(BODY)
    assert all(isinstance(layers[n], QuantAdd) and layers[n].a_bits == 4 for n in ADDS)


def test_head_tail_int8_switch():
    model = prepare_qat(TinySR(), QuantConfig(head_tail="int8", quantize_adds=True))
    layers = swapped(model)
    assert still_float(model) == []
    assert all((layers[n].w_bits, layers[n].a_bits) == (8, 8) for n in HEAD_TAIL)
    assert (layers["mid"].w_bits, layers["mid"].a_bits) == (4, 4)


def test_shared_inputs_one_quantizer_per_tensor_survive_save_and_restore():
    cfg = QuantConfig(w_bits=8, a_bits=8, quantize_adds=True, share_inputs=True)
    model = prepare_qat(build_model("edsr", 4, **SMALL["edsr"]), cfg)
    # each block's conv1 and add read the block input; the head's output feeds block 0 and the global add
    assert model.body[0].add.act_quant_a is model.body[0].conv1.act_quant is model.add.act_quant_a
    assert model.body[1].add.act_quant_a is model.body[1].conv1.act_quant
    assert model.body[0].add.act_quant_b is not model.body[0].conv2.act_quant
    calibrate(model, [torch.rand(2, 3, 12, 12)])
    assert len(activation_range_parameters(model)) == len({id(q) for layer in quantized_layers(model).values()
                                                            for q in layer.input_quantizers})
    fresh = restore_qat(build_model("edsr", 4, **SMALL["edsr"]), quant_state(model))
    fresh.load_state_dict(model.state_dict(), strict=True)
    assert fresh.add.act_quant_a is fresh.body[0].conv1.act_quant
    x = torch.rand(1, 3, 10, 10)
    assert torch.equal(fresh(x), model(x))
    plain = prepare_qat(build_model("edsr", 4, **SMALL["edsr"]), QuantConfig(quantize_adds=True))
    assert plain.body[0].add.act_quant_a is not plain.body[0].conv1.act_quant  # off by default


def test_mixed_precision_rules_skip_and_adds():
    cfg = QuantConfig(w_bits=2, a_bits=4, rules=(("body.0.*", 8, 6), ("last", 6, 8), ("body.*", 3, 3)),
                      skip=("mid",), quantize_adds=False)
    layers = swapped(prepare_qat(TinySR(), cfg))
    assert (layers["body.0.conv1"].w_bits, layers["body.0.conv1"].a_bits) == (8, 6)  # first match wins
    assert (layers["body.1.conv2"].w_bits, layers["body.1.conv2"].a_bits) == (3, 3)
    assert (layers["last"].w_bits, layers["last"].a_bits) == (6, 8)  # a rule overrides the FP tail
    assert (layers["mix"].w_bits, layers["mix"].a_bits) == (2, 4)
    assert "mid" not in layers and "hr" not in layers
    assert not any(isinstance(m, QuantAdd) for m in layers.values())


def test_fp_checkpoint_loads_into_the_prepared_model():
    fp = TinySR()
    model = prepare_qat(TinySR(), "w4a4")
    result = model.load_state_dict(fp.state_dict(), strict=False)
    assert not result.unexpected_keys and {k.rsplit(".", 1)[1] for k in result.missing_keys} == {"scale", "signed"}
    assert torch.equal(model.body[1].conv2.weight, fp.body[1].conv2.weight)


def test_prepare_errors():
    model = prepare_qat(TinySR(), "w4a4")
    with pytest.raises(QdukdError, match="already prepared"):
        prepare_qat(model, "w4a4")
    with pytest.raises(QdukdError, match="matches no"):
        prepare_qat(TinySR(), QuantConfig(rules=(("bdy.*", 8, 8),)))
    with pytest.raises(QdukdError, match="prepare_qat"):
        calibrate(TinySR(), [torch.rand(1, 3, 8, 8)])


def test_config_parsing_and_validation():
    assert QuantConfig.from_string("w8a8") == QuantConfig(w_bits=8, a_bits=8)
    cfg = QuantConfig.from_string("w2a4, head_tail=int8, skip=['body.0.*', 'mid'], learnable=pact")
    assert (cfg.w_bits, cfg.a_bits, cfg.head_tail, cfg.learnable) == (2, 4, "int8", "pact")
    assert cfg.skip == ("body.0.*", "mid")
    assert QuantConfig.from_dict(cfg.to_dict()) == cfg
    assert QuantConfig.from_dict({"rules": [["body.*", 8, 8]]}).rules == (("body.*", 8, 8),)
    with pytest.raises(QdukdError, match="did you mean 'quant.w_bits'"):
        QuantConfig.from_dict({"w_bit": 4})
    with pytest.raises(QdukdError, match="did you mean 'quant.head_tail'"):
        QuantConfig.from_string("w4a4,headtail=int8")
    with pytest.raises(QdukdError, match="w<bits>a<bits>"):
        QuantConfig.from_string("int4")
    with pytest.raises(QdukdError, match="2..8"):
        QuantConfig(w_bits=1)
    with pytest.raises(QdukdError, match="2..8"):
        QuantConfig(rules=(("x", 4, 16),))
    with pytest.raises(QdukdError, match="one of"):
        QuantConfig.from_dict({"head_tail": "int4"})


# --- the model zoo --------------------------------------------------------------------------

SMALL: dict[str, dict] = {
    "edsr": {"num_feat": 8, "num_block": 2},
    "rcan": {"n_resgroups": 2, "n_resblocks": 2, "num_feat": 16, "reduction": 4},
    "swinir": {"img_size": 8, "window_size": 4, "embed_dim": 12, "depths": (2, 2), "num_heads": (2, 3), "num_feat": 8},
    "imdn": {"num_feat": 16, "num_modules": 2},
    "pan": {"num_feat": 8, "num_up_feat": 8, "num_block": 2},
}


def expected_float(name: str, scale: int) -> set[str]:
    """The SR-quantization convention's float head/tail layers of each zoo model."""
    ups = ["upsample.0", "upsample.2"] if scale == 4 else ["upsample.0"]
    if name in ("edsr", "rcan", "swinir"):
        return {"conv_first", "conv_last", *ups}
    if name == "imdn":
        return {"fea_conv", "upsampler.0"}
    stages = [1, 2] if scale == 4 else [1]
    return {"conv_first", "conv_last", "add_image",
            *(n for i in stages for n in (f"upconv{i}", f"att{i}.conv", f"HRconv{i}"))}


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("scale", [2, 3, 4])
def test_zoo_default_policy(name, scale):
    torch.manual_seed(0)
    model = build_model(name, scale, **SMALL[name])
    n_float = len(still_float(model))
    adds = {n for n, m in model.named_modules() if type(m) is Add}
    prepare_qat(model, QuantConfig())
    assert set(still_float(model)) == expected_float(name, scale) | adds  # residual adds float by default
    assert len(swapped(model)) == n_float - len(expected_float(name, scale) | adds) > 0
    if name == "swinir":
        assert any(isinstance(m, QuantLinear) for m in swapped(model).values())
    x = torch.rand(2, 3, 12, 12)
    calibrate(model, [x], method="max")
    y = model(x)
    assert y.shape == (2, 3, 12 * scale, 12 * scale) and bool(torch.isfinite(y).all())


@pytest.mark.parametrize("name", sorted(SMALL))
def test_zoo_int8_head_tail(name):
    model = prepare_qat(build_model(name, 2, **SMALL[name]), QuantConfig(head_tail="int8", quantize_adds=True))
    assert still_float(model) == []
    layers = swapped(model)
    assert all(layers[n].a_bits == 8 for n in expected_float(name, 2))


def test_plan_layers_reports_roles():
    plans = plan_layers(build_model("edsr", 4, **SMALL["edsr"]), QuantConfig(head_tail="int8", quantize_adds=True))
    assert plans["conv_first"].role == "head" and plans["upsample.2"].role == "tail"
    assert plans["body.0.conv1"].role == "body" and plans["body.0.add"].kind == "add"


def test_prepare_leaves_the_global_rng_alone():
    model = build_model("edsr", 2, **SMALL["edsr"])
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    prepare_qat(model, "w4a4")
    assert torch.equal(torch.rand(3), expected)


DEPLOYABLE_HEAD_TAIL = {
    "espcn": ("conv1", {"conv3"}), "fsrcnn": ("feature.0", {"deconv"}), "xlsr": ("conv_first", {"conv_last"}),
    "quicksrnet_s": ("cnn.0", {"conv_last"}), "quicksrnet_l": ("cnn.0", {"conv_last", "add"}),
    "abpn": ("body.0", {"body.6", "add"}), "sesr_m5": ("head.conv", {"tail.conv", "add_anchor"}),
    "rlfn": ("conv_1", {"upsampler.0"}), "span": ("conv_1.eval_conv", {"upsampler.0"}),
}


@pytest.mark.parametrize("name", sorted(DEPLOYABLE_HEAD_TAIL))
def test_deployable_zoo_head_and_tail(name):
    """The mobile nets' pixel-facing layers: SESR and SPAN planned in their collapsed form."""
    plans = plan_layers(build_model(name, 4, **MOBILE[name]), QuantConfig(head_tail="int8", quantize_adds=True))
    head, tail = DEPLOYABLE_HEAD_TAIL[name]
    assert [n for n, p in plans.items() if p.role == "head"] == [head]
    assert {n for n, p in plans.items() if p.role == "tail"} == tail
