"""Calibration, learning the ranges, the exporter's view of a layer, freeze, and checkpoint round trips."""

from __future__ import annotations

import copy
import io
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from qdukd.errors import QdukdError
from qdukd.models import build_model
from qdukd.quant.quantizers import float_eval
from qdukd.quant import (
    QuantConfig,
    plan_layers,
    activation_range_parameters,
    calibrate,
    dequantize,
    fake_quantizers,
    freeze,
    prepare_qat,
    quant_state,
    quantized_layers,
    restore_qat,
)

ARGS = {"num_feat": 8, "num_block": 2}


class Expanded(nn.Module):
    """A collapsible x2 net (SESR-style): its block trains as a 3x3 conv to 32 channels and a 1x1
    conv back, with nothing between, and ``collapse()`` folds the two into one 3x3 conv in place."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, 1, 1)
        self.block = nn.Sequential(nn.Conv2d(8, 32, 3, 1, 1), nn.Conv2d(32, 8, 1))
        self.up = nn.Sequential(nn.Conv2d(8, 12, 3, 1, 1), nn.PixelShuffle(2))
        self.expanded = True

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(torch.relu(self.block(torch.relu(self.head(x)))))

    @torch.no_grad()
    def collapse(self) -> None:
        if not self.expanded:
            return
        wide, narrow = self.block
        mix = narrow.weight[:, :, 0, 0]
        conv = nn.Conv2d(8, 8, 3, 1, 1)
        conv.weight.copy_(torch.einsum("om,mikl->oikl", mix, wide.weight))
        conv.bias.copy_(mix @ wide.bias + narrow.bias)
        self.block, self.expanded = conv, False


def edsr(cfg: str | QuantConfig = "w4a4,quantize_adds=true", calibrated: bool = True) -> torch.nn.Module:
    torch.manual_seed(0)
    model = prepare_qat(build_model("edsr", 2, **ARGS), cfg)
    if calibrated:
        calibrate(model, [torch.rand(2, 3, 12, 12) for _ in range(2)])
    return model


def train(model: torch.nn.Module, steps: int) -> None:
    gen = torch.Generator().manual_seed(1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        lr = torch.rand(2, 3, 12, 12, generator=gen)
        loss = F.l1_loss(model(lr), F.interpolate(lr, scale_factor=2, mode="nearest"))
        opt.zero_grad()
        loss.backward()
        opt.step()


def test_calibration_methods_and_signedness():
    model = edsr(calibrated=False)
    batches = [torch.rand(2, 3, 12, 12) for _ in range(2)]
    steps = {}
    for method in ("max", "percentile", "mse"):
        calibrate(model, batches, method=method)
        steps[method] = model.body[0].conv1.act_quant.scale.item()
    assert steps["mse"] <= steps["max"] and steps["percentile"] <= steps["max"]
    block = model.body[0]
    assert not block.conv2.act_signed  # after a ReLU: no negatives, unsigned grid
    assert block.conv1.act_signed and block.add.act_signed == (True, True)
    assert model.training  # mode restored
    with pytest.raises(QdukdError, match="no batches"):
        calibrate(model, [])
    fixed = edsr(QuantConfig(act_signed="signed"))
    assert fixed.body[0].conv2.act_signed


def test_exporter_view_weights_on_grid():
    model = edsr(QuantConfig(w_bits=3, a_bits=5, head_tail="int8"))
    for name, layer in quantized_layers(model).items():
        if not hasattr(layer, "w_bits"):
            continue
        q, s = layer.int_weight(), layer.weight_scale()
        wq = layer.weight_quant
        assert q.dtype == torch.int8 and s.shape == (layer.weight.shape[0],) and bool((s > 0).all()), name
        assert int(q.min()) >= wq.qmin and int(q.max()) <= wq.qmax and wq.qmin == -wq.qmax, name
        assert torch.equal(dequantize(q, s, axis=0), wq(layer.weight)), name
        assert layer.act_scale().dim() == 0 and float(layer.act_scale()) > 0


def test_gradients_reach_weights_and_ranges_and_ranges_move():
    model = edsr()
    before = {id(p): p.detach().clone() for p in activation_range_parameters(model)}
    assert len(before) == 2 * 2 + 2 * 2 + 1 + 2  # conv1/conv2 inputs, block adds, conv_after_body, global add
    lr = torch.rand(2, 3, 12, 12)
    model(lr).mean().backward()
    layer = model.body[1].conv2
    for p in (layer.weight, layer.bias, layer.weight_quant.scale, layer.act_quant.scale):
        assert p.grad is not None and bool(p.grad.abs().sum() > 0)
    model.zero_grad()
    train(model, 20)
    moved = [not torch.equal(p, before[id(p)]) for p in activation_range_parameters(model)]
    assert all(moved) and not torch.equal(layer.weight_quant.scale, layer.weight_quant.scale.detach() * 0)


def test_freeze_is_idempotent_and_keeps_outputs():
    model = edsr()
    train(model, 2)
    model.eval()
    x = torch.rand(1, 3, 10, 10)
    keys, out = list(model.state_dict()), model(x)
    freeze(model)
    assert not any(n.endswith("scale") for n, _ in model.named_parameters())
    assert all(q.frozen and not q.scale.requires_grad for q in fake_quantizers(model))
    assert sorted(model.state_dict()) == sorted(keys) and torch.equal(model(x), out)
    freeze(model)
    assert sorted(model.state_dict()) == sorted(keys) and torch.equal(model(x), out)
    assert activation_range_parameters(model) == []


@pytest.mark.parametrize("frozen", [False, True])
def test_quant_state_checkpoint_round_trip(frozen):
    cfg = QuantConfig(w_bits=4, a_bits=4, rules=(("body.1.*", 8, 6),), learnable="pact")
    model = edsr(cfg)
    train(model, 3)
    if frozen:
        freeze(model)
    buf = io.BytesIO()
    torch.save({"weights": model.state_dict(), "quant": quant_state(model)}, buf)
    json.dumps(quant_state(model))  # plain JSON types
    buf.seek(0)
    ckpt = torch.load(buf, weights_only=True)

    torch.manual_seed(123)  # different random init: everything must come from the checkpoint
    fresh = restore_qat(build_model("edsr", 2, **ARGS), ckpt["quant"])
    fresh.load_state_dict(ckpt["weights"], strict=True)
    assert quant_state(fresh) == quant_state(model)
    assert not fresh.body[0].conv2.act_signed and fresh.body[1].conv1.w_bits == 8
    x = torch.rand(1, 3, 11, 9)
    model.eval(), fresh.eval()
    assert torch.equal(fresh(x), model(x))


def test_state_dict_alone_restores_signedness_into_a_prepared_model():
    # The trainer resumes with prepare_qat + load_state_dict (no calibration, no restore_qat).
    model = edsr()
    resumed = edsr(calibrated=False)
    assert resumed.body[0].conv2.act_signed
    resumed.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 8, 8)
    assert not resumed.body[0].conv2.act_signed and torch.equal(resumed.eval()(x), model.eval()(x))


def test_restore_errors():
    state = quant_state(edsr())
    with pytest.raises(QdukdError, match="no float conv2d"):
        restore_qat(build_model("edsr", 2, num_feat=8, num_block=1), state)
    with pytest.raises(QdukdError, match="not a qdukd quant state"):
        restore_qat(build_model("edsr", 2, **ARGS), {"layers": {}})
    with pytest.raises(QdukdError, match="already prepared"):
        restore_qat(edsr(), state)
    with pytest.raises(QdukdError, match="prepare_qat"):
        quant_state(build_model("edsr", 2, **ARGS))


def test_deepcopy_and_eval_of_prepared_model():
    model = edsr()
    twin = copy.deepcopy(model)
    x = torch.rand(1, 3, 8, 8)
    assert torch.equal(twin.eval()(x), model.eval()(x)) and quant_state(twin) == quant_state(model)


def test_collapsible_models_are_quantized_and_restored_collapsed():
    torch.manual_seed(0)
    model = Expanded()
    x = torch.rand(1, 3, 9, 11)
    with torch.no_grad():
        expanded_out = model(x)
    assert set(plan_layers(model, QuantConfig(head_tail="int8"))) == {"head", "block", "up.0"}
    assert model.expanded  # planning looked at a collapsed copy
    prepare_qat(model, QuantConfig(w_bits=8, a_bits=8, head_tail="int8"))
    assert not model.expanded and set(quant_state(model)["layers"]) == {"head", "block", "up.0"}
    with float_eval(model), torch.no_grad():  # the collapse keeps the function (float32 rounding apart)
        assert torch.allclose(model(x), expanded_out, atol=1e-5)
    calibrate(model, [torch.rand(2, 3, 12, 12)], method="max")
    torch.manual_seed(1)
    collapsed = Expanded()
    collapsed.collapse()
    for fresh in (Expanded(), collapsed):  # as the recipe builds it, and already collapsed (idempotent)
        restore_qat(fresh, quant_state(model)).load_state_dict(model.state_dict(), strict=True)
        assert not fresh.expanded and torch.equal(fresh.eval()(x), model.eval()(x))
