"""Tests for qdukd.distill: paired augmentations, upcycled inputs, the teacher and DUKD losses."""

from __future__ import annotations

import copy
import itertools
import math

import pytest
import torch
from torch import nn

from qdukd.distill import (
    OPS,
    DukdConfig,
    Teacher,
    apply_ops,
    compute_losses,
    cut_cells,
    dukd_aux_terms,
    invert_ops,
    label_consistency_loss,
    sample_ops,
    standard_terms,
    zoom_in_cells,
    zoom_in_count,
    zoom_out,
)
from qdukd.distill.augment import TRANSPOSE
from qdukd.models import build_model
from qdukd.resize import imresize_torch

# Every subset of the four ops, one per row.
ALL_SUBSETS = torch.tensor(list(itertools.product([False, True], repeat=len(OPS))))
VFLIP, HFLIP = OPS.index("vflip"), OPS.index("hflip")
SHAPES = [(8, 8), (6, 10)]  # square and non-square (h, w)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(*shape, generator=gen(seed))


def wrong_under_reference(ops: torch.Tensor) -> torch.Tensor:
    """Rows where re-applying the ops in forward order is not the inverse: transpose + one flip."""
    return ops[:, TRANSPOSE] & (ops[:, VFLIP] ^ ops[:, HFLIP])


def transpose_groups(ops: torch.Tensor, square: bool) -> list[torch.Tensor]:
    """Row indices that can share one tensor after augmentation."""
    if square:
        return [torch.arange(len(ops))]
    flag = ops[:, TRANSPOSE]
    return [torch.nonzero(~flag).squeeze(1), torch.nonzero(flag).squeeze(1)]


class NearestSR(nn.Module):
    """1x1 conv with identity weights + nearest upsampling: exactly equivariant under flips,
    transpose and colour inversion (``1 - x`` passes through unchanged), with no rounding."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.conv.bias.zero_()
        self.up = nn.Upsample(scale_factor=scale, mode="nearest")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.conv(x))


def tiny_sr(scale: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))


class Counting(nn.Module):
    """Records the inputs a teacher is called with and the outputs it returns."""

    def __init__(self, teacher: nn.Module) -> None:
        super().__init__()
        self.teacher, self.inputs, self.outputs = teacher, [], []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.teacher(x)
        self.inputs.append(x)
        self.outputs.append(out)
        return out


# ------------------------------------------------------------------------------ augment


@pytest.mark.parametrize("hw", SHAPES)
def test_augmentation_then_inverse_is_identity_for_every_subset(hw):
    x = rand(len(ALL_SUBSETS), 3, *hw)
    before = x.clone()
    for idx in transpose_groups(ALL_SUBSETS, hw[0] == hw[1]):
        ops = ALL_SUBSETS[idx]
        y = apply_ops(x[idx], ops)
        expected_hw = hw[::-1] if ops[0, TRANSPOSE] and hw[0] != hw[1] else hw
        assert y.shape[-2:] == expected_hw
        assert torch.equal(invert_ops(y, ops), x[idx])
    assert torch.equal(x, before)  # nothing modified in place


@pytest.mark.parametrize("hw", SHAPES)
def test_each_op_does_what_its_name_says(hw):
    x = rand(2, 3, *hw)
    expected = {"invert": 1 - x, "vflip": x.flip(-2), "hflip": x.flip(-1), "transpose": x.transpose(-2, -1)}
    for k, name in enumerate(OPS):
        ops = torch.zeros(2, len(OPS), dtype=torch.bool)
        ops[:, k] = True
        assert torch.equal(apply_ops(x, ops), expected[name]), name


@pytest.mark.parametrize("hw", SHAPES)
def test_reference_inverse_differs_exactly_for_transpose_with_one_flip(hw):
    x = rand(len(ALL_SUBSETS), 3, *hw)
    for idx in transpose_groups(ALL_SUBSETS, hw[0] == hw[1]):
        ops = ALL_SUBSETS[idx]
        y = apply_ops(x[idx], ops)
        true, ref = invert_ops(y, ops), invert_ops(y, ops, reference=True)
        for i, bad in enumerate(wrong_under_reference(ops).tolist()):
            assert torch.equal(true[i], x[idx][i])
            # The reference's target is the input rotated by 180 degrees in exactly these cases.
            assert torch.equal(ref[i], x[idx][i].flip(-2, -1) if bad else x[idx][i])
            assert torch.equal(ref[i], true[i]) is not bad


def test_reference_inverse_fraction_matches_analytic_value():
    n, p = 200_000, 0.3
    ops = sample_ops(n, p, gen(1))
    # P(transpose) * P(exactly one of the two flips)
    expected = p * 2 * p * (1 - p)
    tolerance = 5 * math.sqrt(expected * (1 - expected) / n)
    assert abs(wrong_under_reference(ops).float().mean().item() - expected) < tolerance
    assert torch.allclose(ops.float().mean(0), torch.full((len(OPS),), p), atol=0.005)


def test_sample_ops_is_reproducible_and_validated():
    assert torch.equal(sample_ops(64, 0.3, gen(3)), sample_ops(64, 0.3, gen(3)))
    assert sample_ops(5, 0.3, gen()).shape == (5, len(OPS))
    assert not sample_ops(50, 0.0, gen()).any() and sample_ops(50, 1.0, gen()).all()
    with pytest.raises(ValueError):
        sample_ops(4, 1.5, gen())


def test_apply_ops_rejects_mixed_transpose_on_non_square_and_bad_masks():
    x = rand(2, 3, 4, 6)
    ops = torch.zeros(2, len(OPS), dtype=torch.bool)
    ops[0, TRANSPOSE] = True
    with pytest.raises(ValueError, match="non-square"):
        apply_ops(x, ops)
    with pytest.raises(ValueError, match="mask"):
        apply_ops(x, torch.zeros(3, len(OPS), dtype=torch.bool))


# ------------------------------------------------------------------------------ upcycle


@pytest.mark.parametrize("scale,hw", [(2, (5, 5)), (3, (4, 4)), (4, (3, 5))])
def test_zoom_in_cells_are_distinct_grid_blocks(scale, hw):
    h, w = hw
    batch = 3
    hr = rand(batch, 3, scale * h, scale * w)
    before = hr.clone()
    for n in (1, scale * scale):
        tiles = cut_cells(hr, scale, zoom_in_cells(scale, n, gen(7)))
        assert tiles.shape == (n * batch, 3, h, w)
        blocks = {(i, j): hr[..., i * h:(i + 1) * h, j * w:(j + 1) * w] for i in range(scale) for j in range(scale)}
        found = [[pos for pos, block in blocks.items() if torch.equal(tiles[k * batch:(k + 1) * batch], block)]
                 for k in range(n)]
        assert all(len(f) == 1 for f in found)  # every tile group is one grid block, same for all samples
        assert len({f[0] for f in found}) == n  # distinct positions
        assert torch.equal(tiles, cut_cells(hr, scale, zoom_in_cells(scale, n, gen(7))))
    assert torch.equal(hr, before)


def test_zoom_in_validation_and_counts():
    assert [zoom_in_count(s) for s in (2, 3, 4)] == [2, 1, 1]
    assert zoom_in_count(4, 3) == 3
    with pytest.raises(ValueError):
        cut_cells(rand(1, 3, 9, 8), 2, [0])
    with pytest.raises(ValueError):
        zoom_in_cells(2, 5, gen())


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_zoom_out_size_and_range(scale):
    lr = (rand(2, 3, 13, 10) > 0.5).float()  # a hard pattern: bicubic overshoots it
    small = zoom_out(lr, scale)
    assert small.shape == (2, 3, math.ceil(13 / scale), math.ceil(10 / scale))
    assert small.min() >= 0 and small.max() <= 1
    assert torch.equal(small, imresize_torch(lr, 1 / scale).clamp(0, 1))


# ------------------------------------------------------------------------------ teacher


def test_teacher_stays_in_eval_mode_inside_a_training_parent():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 12, 3, padding=1), nn.Dropout(0.5), nn.PixelShuffle(2))
    expected = copy.deepcopy(net).eval()(rand(2, 3, 6, 6)).detach()
    parent = nn.Module()
    parent.teacher = Teacher(net)
    parent.train()
    net.train()
    for _ in range(3):
        assert torch.equal(parent.teacher(rand(2, 3, 6, 6)), expected)
    assert not net.training
    assert not any(p.requires_grad for p in net.parameters())


def test_teacher_outputs_are_ordinary_targets():
    teacher = Teacher(tiny_sr(2, seed=1))
    student = tiny_sr(2, seed=2)
    x = rand(2, 3, 6, 6)
    target = teacher(x)
    assert not target.requires_grad and not target.is_inference()
    # Losses that save the target for backward (which inference tensors forbid) must work.
    out = student(x)
    (nn.functional.l1_loss(out, target) + nn.functional.mse_loss(out, target)).backward()
    assert all(p.grad is not None for p in student.parameters())
    assert all(p.grad is None for p in teacher.parameters())


def test_teacher_channels_last_and_autocast():
    net = tiny_sr(2, seed=1)
    x = rand(2, 3, 8, 8)
    plain = Teacher(copy.deepcopy(net))(x)
    fast = Teacher(net, channels_last=True, autocast_dtype=torch.bfloat16)(x)
    assert fast.dtype == torch.float32 and fast.shape == plain.shape
    assert torch.allclose(fast, plain, atol=3e-2)


# ------------------------------------------------------------------------------ losses


def data(scale: int = 2, n: int = 2, hw: tuple[int, int] = (6, 6)) -> tuple[torch.Tensor, torch.Tensor]:
    hr = rand(n, 3, scale * hw[0], scale * hw[1], seed=5)
    return imresize_torch(hr, 1 / scale).clamp(0, 1), hr


EXPECTED_KEYS = {
    ("gt", True): {"pix", "total"},
    ("kd", True): {"pix", "kd", "total"},
    ("dukd", True): {"pix", "kd", "zoom_in_kd", "zoom_out_pix", "zoom_out_kd", "total"},
    ("dukd", False): {"pix", "kd", "zoom_in_kd", "total"},
}


@pytest.mark.parametrize("mode,with_zoom_out", list(EXPECTED_KEYS))
def test_compute_losses_keys_and_weighted_total(mode, with_zoom_out):
    cfg = DukdConfig(mode=mode, w_pix=2.0, w_kd=0.5, zoom_out=with_zoom_out)
    lr, hr = data()
    teacher = None if mode == "gt" else Teacher(tiny_sr(2, seed=1))
    terms = compute_losses(tiny_sr(2), teacher, lr, hr, 2, cfg, gen())
    assert set(terms) == EXPECTED_KEYS[mode, with_zoom_out]
    weighted = sum(v * (2.0 if k.endswith("pix") else 0.5) for k, v in terms.items() if k != "total")
    assert torch.allclose(terms["total"], weighted)
    assert all(v.dim() == 0 and torch.isfinite(v) for v in terms.values())


@pytest.mark.parametrize("hw", SHAPES)
def test_student_equal_to_teacher_gives_zero_kd_terms(hw):
    net = NearestSR(2)
    lr, hr = data(2, n=8, hw=hw)
    cfg = DukdConfig(p=0.5, n_zoom_in=4)
    terms = compute_losses(net, Teacher(copy.deepcopy(net)), lr, hr, 2, cfg, gen())
    for name in ("kd", "zoom_in_kd", "zoom_out_kd"):
        assert terms[name].item() == 0.0, name
    assert terms["pix"] > 0


@pytest.mark.parametrize("hw", SHAPES)
def test_label_consistency_is_zero_for_every_subset_with_true_inverse(hw):
    net = NearestSR(2)
    ops = ALL_SUBSETS
    tiles = rand(len(ops), 3, *hw)
    target = Teacher(copy.deepcopy(net))(tiles)
    bad = wrong_under_reference(ops)
    for i in range(len(ops)):
        one = slice(i, i + 1)
        assert label_consistency_loss(net, tiles[one], ops[one], target[one]).item() == 0.0
        ref = label_consistency_loss(net, tiles[one], ops[one], target[one], reference_inverse=True).item()
        assert (ref > 0) == bool(bad[i])
    # The whole mixed batch at once (grouped by transpose for non-square tiles) is zero too.
    assert label_consistency_loss(net, tiles, ops, target).item() == 0.0


def test_label_consistency_grouped_mean_equals_plain_mean():
    student, teacher = tiny_sr(2, seed=2), Teacher(tiny_sr(2, seed=1))
    tiles = rand(16, 3, 4, 6)
    ops = ALL_SUBSETS
    target = teacher(tiles)
    expected = torch.stack([
        nn.functional.l1_loss(invert_ops(student(apply_ops(tiles[i:i + 1], ops[i:i + 1])), ops[i:i + 1]),
                              target[i:i + 1], reduction="sum") for i in range(16)]).sum() / target.numel()
    assert torch.allclose(label_consistency_loss(student, tiles, ops, target), expected, rtol=1e-5)


def test_gradients_reach_the_student_only():
    student, teacher = tiny_sr(2, seed=2), Counting(Teacher(tiny_sr(2, seed=1)))
    lr, hr = data()
    compute_losses(student, teacher, lr, hr, 2, DukdConfig(), gen())["total"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())
    assert teacher.outputs and not any(o.requires_grad or o.grad_fn for o in teacher.outputs)


def test_losses_are_reproducible_with_a_seeded_generator():
    student, teacher = tiny_sr(2, seed=2), Teacher(tiny_sr(2, seed=1))
    lr, hr = data(n=4)
    cfg = DukdConfig(p=0.5)
    for fn in (compute_losses, dukd_aux_terms):
        a, b = (fn(student, teacher, lr, hr, 2, cfg, gen(11)) for _ in range(2))
        assert {k: v.item() for k, v in a.items()} == {k: v.item() for k, v in b.items()}


def test_one_step_equals_the_two_step_halves():
    student, teacher = tiny_sr(3, seed=2), Teacher(tiny_sr(3, seed=1))
    lr, hr = data(scale=3)
    cfg = DukdConfig(w_pix=1.5, w_kd=0.7)
    both = compute_losses(student, teacher, lr, hr, 3, cfg, gen(4))
    std = standard_terms(student, teacher, lr, hr, cfg)
    aux = dukd_aux_terms(student, teacher, lr, hr, 3, cfg, gen(4))
    assert set(both) == set(std) | set(aux)
    for k in (set(std) | set(aux)) - {"total"}:
        assert torch.allclose(both[k], (std | aux)[k], rtol=1e-5)
    assert torch.allclose(both["total"], std["total"] + aux["total"], rtol=1e-5)


def test_zoom_weights_scale_only_their_own_terms():
    student, teacher = tiny_sr(2, seed=2), Teacher(tiny_sr(2, seed=1))
    lr, hr = data(scale=2)
    base = DukdConfig(w_pix=1.5, w_kd=0.7)
    terms = dukd_aux_terms(student, teacher, lr, hr, 2, base, gen(5))
    dosed = dukd_aux_terms(student, teacher, lr, hr, 2, DukdConfig(w_pix=1.5, w_kd=0.7, w_zoom_in=2.0,
                                                                   w_zoom_out=0.25), gen(5))
    # The terms themselves are unweighted and equal; only the total moves, by hand-computed factors.
    assert all(torch.equal(terms[k], dosed[k]) for k in terms if k != "total")
    want = (2.0 * 0.7 * terms["zoom_in_kd"] + 0.25 * 1.5 * terms["zoom_out_pix"]
            + 0.25 * 0.7 * terms["zoom_out_kd"])
    assert torch.allclose(dosed["total"], want, rtol=1e-6)
    std = standard_terms(student, teacher, lr, hr, DukdConfig(w_pix=1.5, w_kd=0.7, w_zoom_in=9.0, w_zoom_out=9.0))
    assert torch.allclose(std["total"], 1.5 * std["pix"] + 0.7 * std["kd"], rtol=1e-6)


def test_teacher_calls_are_batched_and_cached_targets_replace_them():
    scale = 2
    student, teacher = tiny_sr(scale, seed=2), Counting(Teacher(tiny_sr(scale, seed=1)))
    lr, hr = data(scale, n=3)
    cfg = DukdConfig()
    fresh = compute_losses(student, teacher, lr, hr, scale, cfg, gen(9))
    n_tiles = zoom_in_count(scale) * len(lr)
    # LR batch + zoom-in tiles in one call, zoom-out inputs in another.
    assert [len(x) for x in teacher.inputs] == [len(lr) + n_tiles, len(lr)]
    cache = {"kd": teacher(lr), "zoom_out": teacher(zoom_out(lr, scale))}
    teacher.inputs.clear()
    cached = compute_losses(student, teacher, lr, hr, scale, cfg, gen(9), teacher_targets=cache)
    assert [len(x) for x in teacher.inputs] == [n_tiles]  # only the (random) zoom-in tiles
    for k in fresh:
        assert torch.allclose(fresh[k], cached[k], rtol=1e-5), k


def test_cached_zoom_in_targets_are_cells_of_the_whole_patch_output():
    # A pixel-local teacher (nearest upsampling) maps a tile to exactly the matching cell of its
    # output on the whole HR patch, so cached zoom-in targets must reproduce on-the-fly ones.
    scale = 2
    student, teacher = tiny_sr(scale, seed=2), Counting(nn.Upsample(scale_factor=scale, mode="nearest"))
    lr, hr = data(scale, n=3)
    cfg = DukdConfig()
    fresh = compute_losses(student, teacher, lr, hr, scale, cfg, gen(9))
    cache = {"kd": teacher(lr), "zoom_in": teacher(hr)}
    teacher.inputs.clear()
    cached = compute_losses(student, teacher, lr, hr, scale, cfg, gen(9), teacher_targets=cache)
    assert [x.shape[-1] for x in teacher.inputs] == [lr.shape[-1] // scale]  # only the zoom-out inputs
    for k in fresh:
        assert torch.equal(fresh[k], cached[k]), k
    aux = dukd_aux_terms(student, None, lr, hr, scale, DukdConfig(zoom_out=False), gen(9),
                         teacher_targets={"zoom_in": cache["zoom_in"]})
    assert torch.equal(aux["zoom_in_kd"], fresh["zoom_in_kd"])


def test_missing_teacher_and_unknown_targets_are_errors():
    lr, hr = data()
    student = tiny_sr(2)
    with pytest.raises(ValueError, match="teacher"):
        compute_losses(student, None, lr, hr, 2, DukdConfig(mode="kd"), gen())
    kd_only = compute_losses(student, None, lr, hr, 2, DukdConfig(mode="kd"), gen(), {"kd": hr})
    assert set(kd_only) == {"pix", "kd", "total"}
    with pytest.raises(ValueError, match="unknown teacher_targets"):
        compute_losses(student, None, lr, hr, 2, DukdConfig(mode="kd"), gen(), {"zoom_in_kd": hr})
    with pytest.raises(ValueError, match="mode"):
        compute_losses(student, None, lr, hr, 2, DukdConfig(mode="dkd"), gen())  # type: ignore[arg-type]


@pytest.mark.parametrize("scale,hw", [(3, (6, 10)), (3, (7, 8)), (4, (5, 5))])
def test_non_square_and_non_divisible_patches(scale, hw):
    # Zoom-out of a size the scale does not divide comes back larger; only the LR part is compared.
    student, teacher = tiny_sr(scale, seed=2), Teacher(tiny_sr(scale, seed=1))
    lr, hr = data(scale, n=4, hw=hw)
    terms = compute_losses(student, teacher, lr, hr, scale, DukdConfig(p=0.5, n_zoom_in=2), gen())
    terms["total"].backward()
    assert all(torch.isfinite(v) for v in terms.values())


def test_registry_models_as_student_and_teacher():
    lr, hr = data(scale=2, n=2, hw=(8, 8))
    student = build_model("edsr", 2, num_feat=8, num_block=1)
    teacher = Teacher(build_model("edsr", 2, num_feat=16, num_block=2))
    terms = compute_losses(student, teacher, lr, hr, 2, DukdConfig(), gen())
    terms["total"].backward()
    assert set(terms) == EXPECTED_KEYS["dukd", True]


def test_sharded_draws_match_the_whole_batch():
    # Two "processes" with half the batch each see exactly the terms of one process with all of it.
    lr, hr = data()
    student, teacher = tiny_sr(2, seed=2), Teacher(tiny_sr(2, seed=1))
    cfg = DukdConfig(p=0.5, n_zoom_in=2, zoom_out=False)
    whole = dukd_aux_terms(student, teacher, lr, hr, 2, cfg, gen())["zoom_in_kd"]
    n = lr.shape[0] // 2
    halves = [dukd_aux_terms(student, teacher, lr[r * n:(r + 1) * n], hr[r * n:(r + 1) * n], 2, cfg, gen(),
                             shard=(r, 2))["zoom_in_kd"] for r in range(2)]
    assert torch.allclose(whole, sum(halves) / 2, atol=1e-7)
