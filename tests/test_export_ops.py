"""Mobile-SR operators through QAT and export: each op in a tiny x2 net, every profile, ONNX Runtime.

Each net is ``head conv -> op -> quantized residual add -> upsampler`` (or an anchor net), prepared
at W8A8 (W4A8 for the low-bit profiles) with quantized adds and shared input quantizers,
calibrated on the bundled demo images, frozen, exported with every shipped profile and run
through the parity gate on ONNX Runtime. The float-op report must name what ONNX Runtime leaves
in float. Last, the deployable zoo (ESPCN ... SPAN) end to end with the default profile.
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from conftest import DEMO
from test_models_deployable import SMALL
from test_quant_state import Expanded
from torch import nn

from qdukd.data import load_set
from qdukd.export.float_ops import float_ops
from qdukd.export.onnx_export import deployable_copy, export_onnx, float_copy, write_int4_variant
from qdukd.export.profiles import load_profile
from qdukd.export.runtime import backend_function, ort_session, session_config
from qdukd.export.trt_rules import check_tensorrt
from qdukd.export.verify import run_gate
from qdukd.images import read_image, to_tensor, write_image
from qdukd.models import build_model
from qdukd.models.common import Add
from qdukd.quant import (FakeQuantizer, QuantConfig, QuantConvTranspose2d, calibrate, freeze, prepare_qat, quant_state,
                         restore_qat)
from qdukd.scoring import torch_sr_function

C = 8
SPEC = "w8a8,head_tail=int8,quantize_adds=true,share_inputs=true"
# Each profile with the student it is for: the low-bit ones get 4-bit weights everywhere, transposed
# convs included (W8 graphs would repeat tensorrt-int8's and onnxruntime-int8-exact's).
LOW_BIT = "w4a8,quantize_adds=true,share_inputs=true,rules=[['*', 4, 8]]"
PROFILES = {"onnxruntime-int8": SPEC, "onnxruntime-int8-exact": SPEC, "tensorrt-int8": SPEC,
            "tensorrt-lowbit": LOW_BIT, "onnx-int4-weights": LOW_BIT}


class SR(nn.Module):
    """x2: ``f = relu(head(x))``, ``f + op(f)`` (a quantized add), then conv + PixelShuffle or a
    transposed conv."""

    def __init__(self, op: nn.Module, up: str = "shuffle") -> None:
        super().__init__()
        self.head = nn.Conv2d(3, C, 3, 1, 1)
        self.op = op
        self.add = Add()
        self.up = (nn.Sequential(nn.Conv2d(C, 12, 3, 1, 1), nn.PixelShuffle(2)) if up == "shuffle"
                   else nn.ConvTranspose2d(C, 3, 4, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.relu(self.head(x))
        return self.up(self.add(f, self.op(f)))


class ConvThen(nn.Module):
    """A conv followed by one activation-like op (PReLU, a clip, ...)."""

    def __init__(self, act: nn.Module | None = None, groups: int = 1, gain: float = 1.0) -> None:
        super().__init__()
        self.conv = nn.Conv2d(C, C, 3, 1, 1, groups=groups)
        with torch.no_grad():
            self.conv.weight.mul_(gain)  # pushes values past a clip's bounds, so the clip matters
        self.act = act

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return torch.clamp(y, 0.0, 1.0) if self.act is None else self.act(y)


class Concat(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.fuse = nn.Conv2d(C, C // 2, 3, 1, 1), nn.Conv2d(C, C // 2, 1), nn.Conv2d(C, C, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fuse(torch.cat([torch.relu(self.a(x)), self.b(x)], 1))


class SigmoidGate(nn.Module):
    """SPAN-style parameter-free attention: ``x * sigmoid(conv(x))``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(C, C, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv(x))


class ESA(nn.Module):
    """RLFN's enhanced spatial attention: strided conv, max-pool, bilinear resize, sigmoid gate."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(C, 4, 1), nn.Conv2d(4, 4, 3, 2, 0)
        self.c3, self.c4 = nn.Conv2d(4, 4, 3, 1, 1), nn.Conv2d(4, C, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c1 = self.c1(x)
        c = F.max_pool2d(self.c2(c1), kernel_size=7, stride=3)
        c = F.interpolate(self.c3(c), (x.size(2), x.size(3)), mode="bilinear", align_corners=False)
        return x * torch.sigmoid(self.c4(c + c1))


class Anchor(nn.Module):
    """QuickSRNet / ABPN: convs + the input repeated per output sub-pixel, PixelShuffle, clip to [0, 1]."""

    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.head, self.mid, self.last = nn.Conv2d(3, C, 3, 1, 1), nn.Conv2d(C, C, 3, 1, 1), nn.Conv2d(C, 12, 3, 1, 1)
        self.add, self.shuffle = Add(), nn.PixelShuffle(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        anchor = {"repeat_interleave": lambda: x.repeat_interleave(4, dim=1), "repeat": lambda: x.repeat(1, 4, 1, 1),
                  "tile": lambda: torch.tile(x, (4, 1, 1))}[self.how]()
        f = self.last(torch.relu(self.mid(torch.relu(self.head(x)))))
        return torch.clamp(self.shuffle(self.add(f, anchor)), 0.0, 1.0)


class Deconv(nn.Module):
    """FSRCNN-like: conv -> PReLU -> transposed conv (x2) -> a quantized conv reads its output."""

    def __init__(self, groups: int = 1) -> None:
        super().__init__()
        self.head, self.act = nn.Conv2d(3, C, 5, 1, 2), nn.PReLU(C)
        self.up = nn.ConvTranspose2d(C, C, 4, 2, 1, groups=groups)
        self.last = nn.Conv2d(C, 3, 3, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.last(self.up(self.act(self.head(x))))


NETS = {
    "conv_transpose_upsampler": lambda: SR(nn.ReLU(), up="transpose"),
    "conv_transpose_grouped": lambda: Deconv(groups=2),
    "prelu": lambda: SR(ConvThen(nn.PReLU(C))),
    "hardtanh": lambda: SR(ConvThen(nn.Hardtanh(0.0, 1.0), gain=4)),
    "relu6": lambda: SR(ConvThen(nn.ReLU6(), gain=40)),
    "clamp": lambda: SR(ConvThen(None, gain=4)),
    "grouped": lambda: SR(ConvThen(nn.ReLU(), groups=2)),
    "depthwise": lambda: SR(ConvThen(nn.ReLU(), groups=C)),
    "concat": lambda: SR(Concat()),
    "sigmoid": lambda: SR(SigmoidGate()),
    "esa": lambda: SR(ESA()),
    "repeat_interleave": lambda: Anchor("repeat_interleave"),
    "repeat": lambda: Anchor("repeat"),
    "tile": lambda: Anchor("tile"),
    "fsrcnn_like": lambda: Deconv(),
}


@functools.cache
def demo_lr() -> tuple[torch.Tensor, ...]:
    """The demo validation images at LR x2 (96 x 96), as the gate sees them."""
    return tuple(to_tensor(lr) for _, lr, _ in load_set(DEMO / "val", 2))


@functools.cache
def student(name: str, spec: str = SPEC) -> nn.Module:
    """``NETS[name]`` prepared with ``spec``, calibrated on the demo LR images, frozen (cached: read-only use)."""
    torch.manual_seed(0)
    model = NETS[name]().eval()
    prepare_qat(model, QuantConfig.from_string(spec))
    calibrate(model, demo_lr(), method="max")
    return freeze(model)


def export(model: nn.Module, profile_name: str, out) -> onnx.ModelProto:
    """What the export job writes for the gate: ``model.onnx`` (and ``model_int4.onnx``) in ``out``."""
    profile = load_profile(profile_name)
    deploy, _ = deployable_copy(model, profile.graph)
    export_onnx(deploy, out / "model.onnx", profile.graph.opset, profile.graph.clip)
    if profile.graph.int4_weights:
        write_int4_variant(out / "model.onnx", out / "model_int4.onnx")
    return onnx.load(out / "model.onnx")


@pytest.mark.parametrize("name", sorted(NETS))
def test_exact_graph_computes_what_pytorch_computes(name, tmp_path):
    """The deployable copy equals the fake-quant student bit for bit, and the unfused ONNX Runtime
    session matches it to float noise; the float export runs the same float network."""
    model = student(name)
    deploy, layers = deployable_copy(model, load_profile("onnxruntime-int8-exact").graph)
    x = demo_lr()[0][..., 5:41, 3:47]  # odd size: not the export's trace size
    with torch.no_grad():
        want = model(x)
        assert torch.equal(deploy(x), want)
    assert len(layers) == len(quant_state(model)["layers"])
    export_onnx(deploy, tmp_path / "q.onnx", 17)
    export_onnx(float_copy(model), tmp_path / "f.onnx", 17)
    ops = {n.op_type for n in onnx.load(tmp_path / "q.onnx").graph.node}
    assert "If" not in ops and {"QuantizeLinear", "DequantizeLinear"} <= ops
    got = ort_session(tmp_path / "q.onnx", optimize=False).run(None, {"lr": x.numpy()})[0]
    assert got.shape == want.shape == (1, 3, 72, 88)
    assert np.abs(got - want.numpy()).max() * 255 < 0.01
    # ONNX Runtime's optimiser re-rounds biases after DQ inputs (grouped transposed convs too): no change.
    fused = ort_session(tmp_path / "q.onnx").run(None, {"lr": x.numpy()})[0]
    assert np.abs(fused - got).max() * 255 < 1e-3
    with torch.no_grad():
        want_f = float_copy(model)(x).numpy()
    got_f = ort_session(tmp_path / "f.onnx", optimize=False).run(None, {"lr": x.numpy()})[0]
    assert np.abs(got_f - want_f).max() * 255 < 0.01


def test_container_graph_computes_the_student_on_its_container_grids(tmp_path):
    """``clip = "container"`` changes what the graph computes in one way only: the fake-quant
    student with its 8-bit grids widened to the container (unsigned [0, 255], signed [-128, 127]).

    ABPN with steps that clip the top of each range, as its QAT-trained LSQ steps do (a ReLU
    chain, no skip): every code PyTorch clips at 127 passes in the fused profile's graph, which is
    the whole of a trained ABPN's parity-gate failure there; the exact graph is the student itself.
    The anchor (Tile), DepthToSpace and the output clip agree in both."""
    torch.manual_seed(0)
    model = build_model("abpn", 2, **SMALL["abpn"]).eval()
    prepare_qat(model, QuantConfig.from_string(SPEC))
    calibrate(model, demo_lr(), method="max")
    for q in (m for m in model.modules() if isinstance(m, FakeQuantizer) and m.axis is None):
        q.set_scale(q.effective_scale() / 2)  # the top half of each calibrated range clips
    freeze(model)
    widened = copy.deepcopy(model)
    for q in (m for m in widened.modules() if isinstance(m, FakeQuantizer) and m.axis is None):
        q.qmin, q.qmax = (-128, 127) if q.is_signed else (0, 255)
    x = demo_lr()[0][..., 5:41, 3:47]
    with torch.no_grad():
        want, want_container = model(x).numpy(), widened(x).numpy()
    assert np.abs(want_container - want).max() * 255 > 8  # the student clips: the graphs must differ
    for profile, ref in (("onnxruntime-int8", want_container), ("onnxruntime-int8-exact", want)):
        (tmp_path / profile).mkdir()
        export(model, profile, tmp_path / profile)
        got = ort_session(tmp_path / profile / "model.onnx", optimize=False).run(None, {"lr": x.numpy()})[0]
        assert np.abs(got - ref).max() * 255 < 0.01, profile


@pytest.fixture(scope="module")
def verify_set(tmp_path_factory) -> Path:
    """Two 96 x 96 crops of the demo validation images: the gate's work at a quarter of the pixels."""
    root = tmp_path_factory.mktemp("verify")
    for path in sorted((DEMO / "val").iterdir())[:2]:
        write_image(root / f"{path.stem}.png", read_image(path)[48:144, 48:144])
    return root


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("name", sorted(NETS))
def test_every_profile_passes_the_parity_gate(name, profile, verify_set, tmp_path):
    model = student(name, PROFILES[profile])
    graph = export(model, profile, tmp_path)
    p = load_profile(profile)
    if p.graph.activations == "int8":  # a TensorRT graph: the parser's rules hold
        assert check_tensorrt(graph) == []
    if p.graph.int4_weights:  # every weight and its zero point packed (ConvTranspose's per-axis on axis 1 too)
        int4 = onnx.load(tmp_path / "model_int4.onnx")
        packed = sum(i.data_type == onnx.TensorProto.INT4 for i in int4.graph.initializer)
        assert packed == 2 * sum(layer["w_bits"] == 4 for layer in quant_state(model)["layers"].values()) > 0
    backends = {b: functools.partial(backend_function, b, tmp_path, p) for b in p.verify.backends}
    report = run_gate(torch_sr_function(model), backends, [verify_set], 2, p.verify.max_psnr_drop)
    ran = {b.name: b for b in report.backends if b.ran}
    assert {"onnxruntime-cpu-reference", "onnxruntime-cpu"} <= set(ran)
    for b in ran.values():  # the untrained nets are no better than bicubic: parity is what counts
        assert b.passed and abs(b.delta_psnr_y) <= 0.01, (b.name, b.delta_psnr_y, b.max_abs_diff_levels)
    if p.graph.clip != "container":  # exact graphs: the same 8-bit images as PyTorch
        assert ran["onnxruntime-cpu-reference"].max_abs_diff_levels <= 1


def _float_report(name: str, tmp_path) -> dict[str, dict[str, str]]:
    profile = load_profile("onnxruntime-int8")
    export(student(name), "onnxruntime-int8", tmp_path)
    return {e["node"]: e for e in float_ops(tmp_path / "model.onnx", session_config(profile.onnxruntime))}


# What ONNX Runtime CPU must leave in float (node name -> words of the op and of the reason), and
# which exported nodes must have become integer kernels (absent from the report).
FLOAT_REPORT = {
    "prelu": ({"/op/conv/Conv": ("Conv", "PRelu"), "/op/act/PRelu": ("PRelu", "reads float")}, ()),
    # the head's output feeds the gate's Mul in float, so the head stays float too
    "sigmoid": ({"/op/conv/Conv": ("Sigmoid", "Mul"), "/op/Mul": ("Mul", "reads float"), "/head/Conv": ("Conv", "Mul")},
                ("/add/Add",)),
    "esa": ({"/op/Resize": ("Resize", "reads float"), "/op/Mul": ("Mul", "")}, ("/op/MaxPool", "/op/c2/Conv")),
    "hardtanh": ({"/op/conv/Conv": ("Clip", "Clip between it and its QuantizeLinear")}, ()),
    "relu6": ({"/op/conv/Conv": ("Clip", "Clip between it and its QuantizeLinear")}, ()),
    "clamp": ({"/op/conv/Conv": ("Clip", "Clip between it and its QuantizeLinear")}, ()),
    "grouped": ({}, ("/op/conv/Conv",)),
    "depthwise": ({}, ("/op/conv/Conv",)),
    "concat": ({}, ("/op/Concat", "/op/b/Conv", "/op/fuse/Conv")),
    "repeat": ({"/Tile": ("Tile", "reads float")}, ("/head/Conv", "/mid/Conv", "/last/Conv")),
    "tile": ({"/Tile": ("Tile", "reads float")}, ("/head/Conv", "/mid/Conv", "/last/Conv")),
    "repeat_interleave": ({"/Tile": ("Tile", "reads float")}, ("/head/Conv", "/mid/Conv", "/last/Conv")),
    "conv_transpose_grouped": ({"/up/ConvTranspose": ("ConvTranspose", "no fused integer kernel")}, ()),
    "fsrcnn_like": ({"/up/ConvTranspose": ("ConvTranspose", "no fused integer kernel for ConvTranspose"),
                     "/head/Conv": ("Conv", "PRelu"), "/last/Conv": ("Conv", "network output")}, ()),
    "conv_transpose_upsampler": ({"/up/ConvTranspose": ("ConvTranspose", "network output")}, ("/add/Add",)),
}


@pytest.mark.parametrize("name", sorted(FLOAT_REPORT))
def test_float_op_report_names_what_onnxruntime_leaves_in_float(name, tmp_path):
    report = _float_report(name, tmp_path)
    must, fused = FLOAT_REPORT[name]
    for node, (op_words, reason_words) in must.items():
        assert node in report, (node, sorted(report))
        assert op_words in report[node]["op"] and reason_words in report[node]["reason"], report[node]
    assert not set(fused) & set(report), sorted(report)
    assert all(not e["op"].startswith(("QLinear", "com.microsoft.QLinear")) for e in report.values())


def test_float_op_report_of_a_fused_net_names_only_its_output_layers(tmp_path):
    """Every conv whose output only a quantizer reads is fused: what is left is the image-writing tail."""
    report = _float_report("grouped", tmp_path)
    assert set(report) == {"/up/up.0/Conv", "/up/up.1/DepthToSpace"}, sorted(report)
    assert "DepthToSpace" in report["/up/up.0/Conv"]["reason"]


def test_float_op_report_names_float_layers_by_their_path(tmp_path):
    """Layers kept in float (the default head and tail) are listed under their layer paths, though
    ONNX Runtime's fused backend runs wide float convs in its own blocked layout."""
    torch.manual_seed(0)
    model = prepare_qat(build_model("edsr", 2, num_feat=32, num_block=1).eval(), "w8a8")
    calibrate(model, demo_lr(), method="max")
    export(freeze(model), "onnxruntime-int8", tmp_path)
    report = {e["node"]: e for e in float_ops(tmp_path / "model.onnx")}
    for layer in ("/conv_first/Conv", "/upsample/upsample.0/Conv", "/conv_last/Conv"):
        assert report[layer]["op"] == "Conv" and "reads float tensors only" in report[layer]["reason"]
    assert "/body/body.0/conv1/Conv" not in report  # fused: QLinearConv


def test_concat_and_depth_to_space_move_codes(tmp_path):
    """The Q after a Concat runs on each input instead (the same step: exact), so Concat, like
    DepthToSpace, moves 8-bit codes and the convs feeding it end in a Q."""
    graph = export(student("concat"), "onnxruntime-int8-exact", tmp_path).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    cat = next(n for n in graph.node if n.op_type == "Concat")
    assert [producer[i] for i in cat.input] == ["QuantizeLinear", "QuantizeLinear"]
    scales = {next(n for n in graph.node if n.output[0] == i).input[1] for i in cat.input}
    assert len(scales) == 1
    assert {n.op_type for n in graph.node if cat.output[0] in n.input} == {"DequantizeLinear"}


def test_conv_transpose_weights_are_int8_per_output_channel_on_axis_1(tmp_path):
    model = student("fsrcnn_like")
    layer = model.up
    assert isinstance(layer, QuantConvTranspose2d) and quant_state(model)["layers"]["up"]["kind"] == "conv_transpose2d"
    graph = export(model, "tensorrt-int8", tmp_path).graph
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in graph.initializer}
    conv_t = next(n for n in graph.node if n.op_type == "ConvTranspose")
    w_dq = next(n for n in graph.node if n.output[0] == conv_t.input[1])
    assert w_dq.op_type == "DequantizeLinear" and next(a.i for a in w_dq.attribute if a.name == "axis") == 1
    codes, scale = inits[w_dq.input[0]], inits[w_dq.input[1]]
    assert codes.dtype == np.int8 and codes.shape == tuple(layer.weight.shape) and scale.shape == (C,)
    np.testing.assert_array_equal(codes, layer.int_weight().numpy())
    np.testing.assert_array_equal(codes * scale.reshape(1, -1, 1, 1), layer.weight_quant(layer.weight).detach().numpy())
    # A Q/DQ pair in front of it, the input quantizer's step.
    x_dq = next(n for n in graph.node if n.output[0] == conv_t.input[0])
    assert x_dq.op_type == "DequantizeLinear" and float(inits[x_dq.input[1]]) == float(layer.act_scale())
    # The export twin keeps nn.ConvTranspose2d's output_size argument.
    deploy_up = deployable_copy(model, load_profile("tensorrt-int8").graph)[0].up
    x = torch.rand(1, C, 6, 7)
    with torch.no_grad():
        assert torch.equal(deploy_up(x, output_size=[13, 15]), layer(x, output_size=[13, 15]))


def test_collapsed_model_exports_its_collapsed_form(tmp_path):
    """SESR/SPAN contract: a float model with ``collapse()`` exports (float and Q/DQ) collapsed."""
    torch.manual_seed(0)
    fp = Expanded()
    export_onnx(float_copy(fp), tmp_path / "f.onnx", 17)
    assert sum(n.op_type == "Conv" for n in onnx.load(tmp_path / "f.onnx").graph.node) == 3
    assert fp.expanded  # float_copy collapsed a copy
    x = torch.rand(1, 3, 10, 12)
    got = ort_session(tmp_path / "f.onnx", optimize=False).run(None, {"lr": x.numpy()})[0]
    with torch.no_grad():
        assert np.abs(got - fp(x).numpy()).max() < 1e-5  # the expanded network's function
    qat = prepare_qat(Expanded(), "w8a8,head_tail=int8")
    calibrate(qat, [torch.rand(1, 3, 12, 12)], method="max")
    fresh = restore_qat(Expanded(), quant_state(qat))
    fresh.load_state_dict(qat.state_dict(), strict=True)
    export_onnx(deployable_copy(freeze(fresh), load_profile("tensorrt-int8").graph)[0], tmp_path / "q.onnx", 17)
    assert sum(n.op_type == "Conv" for n in onnx.load(tmp_path / "q.onnx").graph.node) == 3


# --- the deployable zoo end to end ---------------------------------------------------------------

ZOO = ("espcn", "fsrcnn", "quicksrnet_l", "xlsr", "abpn", "sesr_m5", "rlfn", "span")


def lr_patches(size: int = 24) -> list[torch.Tensor]:
    """Four ``size`` x ``size`` patches of each demo LR image, one batch per image."""
    return [torch.cat([lr[..., y:y + size, x:x + size] for y, x in ((0, 0), (0, 60), (60, 0), (60, 60))])
            for lr in demo_lr()]


@pytest.mark.parametrize("name", ZOO)
def test_deployable_zoo_exports_for_onnxruntime_and_passes_the_gate(name, verify_set, tmp_path):
    """Each mobile architecture at W8A8 (SESR and SPAN prepared from their expanded training form)
    exports with the default profile and ONNX Runtime, fused and unfused, matches PyTorch."""
    torch.manual_seed(0)
    model = build_model(name, 2, **SMALL[name]).eval()
    prepare_qat(model, QuantConfig.from_string(SPEC))
    calibrate(model, lr_patches(), method="max")
    freeze(model)
    p = load_profile("onnxruntime-int8")
    export(model, p.name, tmp_path)
    backends = {b: functools.partial(backend_function, b, tmp_path, p) for b in p.verify.backends}
    report = run_gate(torch_sr_function(model), backends, [verify_set], 2, p.verify.max_psnr_drop)
    ran = {b.name: b for b in report.backends if b.ran}
    assert {"onnxruntime-cpu-reference", "onnxruntime-cpu"} <= set(ran)
    for b in ran.values():
        assert b.passed and abs(b.delta_psnr_y) <= 0.01, (b.name, b.delta_psnr_y, b.max_abs_diff_levels)
    floats = float_ops(tmp_path / "model.onnx", session_config(p.onnxruntime))
    if name == "fsrcnn":
        assert [e["op"] for e in floats if "deconv" in e["node"]] == ["ConvTranspose"]
