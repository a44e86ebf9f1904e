"""Importing a torch.ao FX QAT model (prepare_qat_fx) as a qdukd-quantized model."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from qdukd.errors import QdukdError
from qdukd.quant import QuantAdd, QuantConv2d, QuantLinear, freeze, from_torch_ao, quantized_layers


class Net(nn.Module):
    """A conv, a residual add around a second conv, a channel Linear between permutes, a last conv.

    Every torch.ao activation quantizer here feeds a layer or the output, so the import is exact
    up to the output's own quantizer.
    """

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 8)
        self.c3 = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c1(x)
        z = y + self.c2(y)
        z = self.fc(z.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.c3(z)


def torch_ao_model(symmetric: bool = True, quant_min: int = -127) -> torch.fx.GraphModule:
    """A calibrated prepare_qat_fx model (torch.ao's own warnings silenced: they are not ours)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch.ao.quantization as tq
        from torch.ao.quantization.backend_config import get_tensorrt_backend_config
        from torch.ao.quantization.quantize_fx import prepare_qat_fx

        if symmetric:
            act = tq.FakeQuantize.with_args(observer=tq.MovingAverageMinMaxObserver, quant_min=quant_min, quant_max=127,
                                            dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
        else:
            act = tq.FakeQuantize.with_args(observer=tq.MovingAverageMinMaxObserver, quant_min=-128, quant_max=127,
                                            dtype=torch.qint8, qscheme=torch.per_tensor_affine)
        weight = tq.FakeQuantize.with_args(observer=tq.MovingAveragePerChannelMinMaxObserver, quant_min=-127,
                                           quant_max=127, dtype=torch.qint8, qscheme=torch.per_channel_symmetric)
        torch.manual_seed(0)
        gm = prepare_qat_fx(Net().train(), tq.QConfigMapping().set_global(tq.QConfig(activation=act, weight=weight)),
                            example_inputs=(torch.rand(1, 3, 8, 8),), backend_config=get_tensorrt_backend_config())
        for _ in range(3):
            gm(torch.rand(2, 3, 8, 8) * 2 - 0.5)
        gm.apply(tq.disable_observer)
    return gm


def output_quantizer(gm: torch.fx.GraphModule) -> nn.Module:
    """The torch.ao fake quantizer on the network output (the node before ``output``)."""
    return gm.get_submodule(str(list(gm.graph.nodes)[-2].target))


def test_import_matches_torch_ao_and_leaks_no_warning():
    gm = torch_ao_model()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = from_torch_ao(gm)
    assert not [w for w in caught if issubclass(w.category, (DeprecationWarning, FutureWarning))], caught
    layers = quantized_layers(model)
    assert {type(m) for m in layers.values()} == {QuantConv2d, QuantLinear, QuantAdd}
    assert all(m.a_bits == 8 for m in layers.values()) and layers["c1"].w_bits == 8
    assert not any("torch.ao" in type(m).__module__ for m in model.modules())
    x = torch.rand(2, 3, 8, 8) * 2 - 0.5
    out = model(x)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = gm(x)
        # Only the network output's own fake quantizer is gone: with it, the outputs are identical.
        assert torch.equal(output_quantizer(gm)(out), ref) and not torch.equal(out, ref)
    out.sum().backward()  # trainable further in qdukd
    assert layers["c2"].act_quant.scale.grad is not None
    freeze(model)
    assert torch.equal(model(x), out)


def test_import_of_fused_conv_relu_with_unsigned_activations():
    # torch.ao's native backend fuses conv + ReLU; quint8 [0, 127] with non-negative data has zero point 0.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import torch.ao.quantization as tq
        from torch.ao.quantization.quantize_fx import prepare_qat_fx

        act = tq.FakeQuantize.with_args(observer=tq.MovingAverageMinMaxObserver, quant_min=0, quant_max=127,
                                        dtype=torch.quint8, qscheme=torch.per_tensor_affine)
        weight = tq.FakeQuantize.with_args(observer=tq.MovingAverageMinMaxObserver, quant_min=-127, quant_max=127,
                                           dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)
        net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1), nn.ReLU())
        gm = prepare_qat_fx(net.train(), tq.QConfigMapping().set_global(tq.QConfig(activation=act, weight=weight)),
                            example_inputs=(torch.rand(1, 3, 8, 8),))
        gm(torch.rand(2, 3, 8, 8))
        gm.apply(tq.disable_observer)
        assert type(gm.get_submodule("0")).__name__ == "ConvReLU2d"
        x = torch.rand(2, 3, 8, 8)
        ref = gm(x)
    model = from_torch_ao(gm, learnable="none")
    first = model.get_submodule("0")
    assert isinstance(first, QuantConv2d) and not first.act_signed and first.act_quant.qmax == 127
    assert first.weight_quant.axis is None and first.weight_scale().shape == (8,)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.equal(output_quantizer(gm)(model(x)), ref)


def test_import_rejects_what_tensorrt_cannot_run():
    with pytest.raises(QdukdError, match="zero point"):
        from_torch_ao(torch_ao_model(symmetric=False))
    with pytest.raises(QdukdError, match="quant_min=-127"):
        from_torch_ao(torch_ao_model(quant_min=-128))
    with pytest.raises(QdukdError, match="GraphModule"):
        from_torch_ao(Net())
