"""Every shipped recipe loads; recipe files are strict."""

from __future__ import annotations

from pathlib import Path

import pytest

from qdukd.errors import QdukdError
from qdukd.models import build_model
from qdukd.recipe import Recipe, load_recipe

RECIPE_DIR = Path(__file__).resolve().parents[1] / "recipes"
RECIPES = sorted(RECIPE_DIR.rglob("*.toml"))


@pytest.mark.parametrize("path", RECIPES, ids=lambda p: p.relative_to(p.parents[1]).as_posix())
def test_shipped_recipes_load_and_name_real_architectures(path):
    recipe = load_recipe(path)
    assert load_recipe(path.relative_to(RECIPE_DIR).with_suffix("").as_posix()) == recipe  # by name
    build_model(recipe.student.model, recipe.data.scale, **recipe.student.args)
    if recipe.teacher.model:
        assert recipe.teacher.weights
    assert Recipe.from_dict(recipe.to_dict()) == recipe


def test_div2k_recipes_carry_the_reference_hyper_parameters():
    r = load_recipe(RECIPE_DIR / "div2k" / "edsr_x4.toml")
    assert (r.data.batch, r.data.patch, r.train.iters, r.train.lr, r.train.milestones) == (16, 48, 250000, 1e-4,
                                                                                            (100000, 200000))
    assert (r.dukd.w_pix, r.dukd.w_kd, r.dukd.p, r.dukd.schedule, r.train.ema) == (5.0, 1.0, 0.3, "two_step", 0.999)
    assert r.teacher.args == {"num_feat": 256, "num_block": 32, "res_scale": 0.1}


def test_typos_are_rejected_with_the_file_and_a_suggestion(tmp_path):
    (tmp_path / "r.toml").write_text("[train]\niter = 5\n")
    with pytest.raises(QdukdError, match=r"r.toml: unknown key 'train.iter'; did you mean 'train.iters'"):
        load_recipe(tmp_path / "r.toml")
    (tmp_path / "s.toml").write_text("[trian]\niters = 5\n")
    with pytest.raises(QdukdError, match="did you mean 'train'"):
        load_recipe(tmp_path / "s.toml")
    (tmp_path / "t.toml").write_text("[train\n")
    with pytest.raises(QdukdError, match="not valid TOML"):
        load_recipe(tmp_path / "t.toml")
    (tmp_path / "u.toml").write_text('extends = "u.toml"\n')
    with pytest.raises(QdukdError, match="loops"):
        load_recipe(tmp_path / "u.toml")


def test_a_file_wins_over_a_shipped_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert load_recipe("demo") == load_recipe(RECIPE_DIR / "demo.toml")
    (tmp_path / "demo").write_text("[train]\niters = 5\n")
    assert load_recipe("demo").train.iters == 5
    with pytest.raises(QdukdError, match="unknown recipe .demo.toml. .*available: .*cpu/w4a4"):
        load_recipe("demo.toml")


def test_extends_and_overrides(tmp_path):
    (tmp_path / "base.toml").write_text("[train]\niters = 5\nlr = 0.1\n[student]\nargs = {num_feat = 8}\n")
    (tmp_path / "leaf.toml").write_text(
        'extends = "base.toml"\n[train]\niters = 7\n[student]\nargs = {num_block = 2}\n')
    r = load_recipe(tmp_path / "leaf.toml", ["train.lr=0.5", "quant.w_bits=8"])
    assert (r.train.iters, r.train.lr) == (7, 0.5)
    assert r.student.args == {"num_feat": 8, "num_block": 2}
    assert r.quant is not None and r.quant.w_bits == 8


def test_reports_name_the_dukd_schedule():
    from qdukd.recipe import method_label

    assert method_label({"dukd": {"mode": "dukd", "schedule": "two_step"}}) == "dukd (two-step)"
    assert method_label({"dukd": {"mode": "dukd", "schedule": "single"}}) == "dukd"
    assert method_label({"dukd": {"mode": "kd", "schedule": "two_step"}}) == "kd"  # no auxiliary step without DUKD
    assert method_label({}) == "?"


@pytest.mark.parametrize("name, mode, schedule", [
    # docs/TRAINING.md, "Which method": the winner on the study's validation split per scale and precision
    ("demo", "kd", None), ("cpu/w4a4", "kd", None), ("cpu/w8a8", "kd", None),  # x4, EDSR students
    ("div2k/edsr_x4", "dukd", "two_step"), ("div2k/rcan_x3", "dukd", "two_step"),  # the reference's
    ("div2k/edsr_x2", "dukd", "single"), ("div2k/swinir_x2", "dukd", "single"),  # x2 W4A4: won, or split
    # the deploy recipes' own regime: DUKD ties KD at x2 W8A8 (the study's regime: +0.027)
    ("deploy/quicksrnet_s_x2_w8a8", "kd", None), ("deploy/abpn_x2_w8a8", "kd", None),
    ("deploy/quicksrnet_m_x2_w8a8", "kd", None), ("deploy/quicksrnet_s_x4_w8a8", "kd", None),  # ties
    # x2 FP in the recipes' own regime: single-step DUKD won on every seed for QuickSRNet-S/M; ABPN split
    ("deploy/quicksrnet_s_x2_fp", "dukd", "single"), ("deploy/quicksrnet_m_x2_fp", "dukd", "single"),
    ("deploy/abpn_x2_fp", "kd", None), ("deploy/quicksrnet_s_x4_fp", "kd", None),
])
def test_shipped_defaults_follow_the_study(name, mode, schedule):
    d = load_recipe(name).dukd
    assert (d.mode, d.schedule if d.mode == "dukd" else None) == (mode, schedule)
    if d.mode == "dukd":
        assert (d.zoom_out, d.w_zoom_out) == (True, 1.0)
