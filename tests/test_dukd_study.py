"""benchmarks/dukd_study.py: run keys keep settings apart; the recipe regime trains as the recipes ship."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
import dukd_study  # noqa: E402


def args(*argv: str):
    return dukd_study.parser().parse_args(argv)


def test_a_run_key_names_its_length_and_regime_so_tables_never_merge_two_settings():
    assert dukd_study.setting(args("--scale", "2"), "w8a8") == "x2"
    assert dukd_study.setting(args("--scale", "2", "--iters", "900"), "w8a8") == "x2-900it"
    assert dukd_study.setting(args("--scale", "2", "--iters", "900"), "fp") == "x2"  # FP runs --fp-iters
    assert dukd_study.setting(args("--scale", "2", "--fp-iters", "500"), "fp") == "x2-500it"
    assert dukd_study.setting(args("--scale", "2", "--regime", "recipe"), "w8a8") == "x2-recipe"
    # QAT from a longer FP stage, or at another rate, is another setting; the FP runs themselves are not
    long_fp = args("--scale", "2", "--fp-iters", "4000", "--lr", "1e-4")
    assert dukd_study.setting(long_fp, "w8a8") == "x2-fp4000it-lr0.0001"
    assert dukd_study.setting(long_fp, "fp") == "x2-4000it"
    assert dukd_study.setting(args("--scale", "2", "--lr", "1e-3"), "w8a8") == "x2"  # x2's own rate


def test_a_longer_fp_stage_gets_its_own_folder_so_qat_never_starts_from_the_default_one():
    runs = Path("runs/study/quicksrnet_s_x2")
    assert dukd_study.fp_stage(args("--scale", "2"), runs) == runs / "fp"
    assert dukd_study.fp_stage(args("--scale", "2", "--fp-iters", "4000"), runs) == runs / "fp-4000it"
    assert dukd_study.fp_stage(args("--scale", "2", "--fp-iters", "4000", "--fp-run", "x"), runs) == Path("x")


def test_the_recipe_regime_keeps_the_recipes_patch_length_and_rate():
    a = args("--scale", "2", "--student", "abpn", "--regime", "recipe", "--lr", "3e-3")
    kd = dukd_study.run_overrides(a, "w8a8", "kd", 1, Path("fp"))
    # recipes/deploy/abpn_x2_w8a8.toml: 150 iterations; its 32-px patches and rate are not overridden
    assert "train.iters=150" in kd and not any(o.startswith(("data.patch", "train.lr")) for o in kd)
    assert "train.iters=300" in dukd_study.run_overrides(a, "w8a8", "kd_2x", 1, Path("fp"))
    assert f'data.holdout=["{dukd_study.VAL}"]' in kd  # the validation split stays held out
    study = dukd_study.run_overrides(args("--scale", "2"), "w8a8", "kd", 1, Path("fp"))
    assert {"data.patch=48", "train.iters=300", "train.lr=0.001"} <= set(study)


def test_table_keeps_a_longer_run_apart_from_the_default_length(tmp_path, capsys):
    def result(key: str, val: float) -> dict:
        return {key: {"photos_val": val, "set5": 30.0, "set14": 28.0, "overrides": [], "curve": []}}

    a, b = tmp_path / "dukd_study_a.json", tmp_path / "dukd_study_b.json"
    a.write_text(json.dumps({"student": "s", "runs": {**result("x2/w8a8/kd/seed0", 27.0),
                                                      **result("x2/w8a8/dukd/seed0", 27.5)}}))
    b.write_text(json.dumps({"student": "s", "runs": {**result("x2-900it/w8a8/kd/seed0", 28.0),
                                                      **result("x2-900it/w8a8/dukd/seed0", 27.9)}}))
    dukd_study.table([a, b], [])
    out = capsys.readouterr().out
    assert "s/x2/w8a8:" in out and "s/x2-900it/w8a8:" in out
    assert "| dukd | 1 | 27.5000 | 30.0000 | 28.0000 | +0.5000 ± nan" in out
    assert "| dukd | 1 | 27.9000 | 30.0000 | 28.0000 | -0.1000 ± nan" in out


def test_table_of_a_setting_without_dukd_runs_does_not_name_a_zoom_in_source(tmp_path, capsys):
    f = tmp_path / "dukd_study_kd.json"
    f.write_text(json.dumps({"student": "s", "runs": {"x2/fp/kd/seed0": {
        "photos_val": 27.0, "set5": 30.0, "set14": 28.0, "overrides": [], "curve": []}}}))
    dukd_study.table([f], [])
    assert "zoom-in targets unused (no DUKD run)" in capsys.readouterr().out


def test_cost_refuses_the_recipe_regime_with_one_error_line():
    proc = subprocess.run([sys.executable, "benchmarks/dukd_study.py", "--cost", "--regime", "recipe"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "--cost times the study's regime" in proc.stderr


@pytest.mark.parametrize("argv, message", [
    (["--student", "nope", "--scale", "2"], "no recipes/deploy/nope_x2_fp.toml, nope_x2_w8a8.toml"),
    (["--regime", "recipe", "--scale", "2", "--iters", "900"], "leave out --iters"),
    (["--regime", "recipe", "--scale", "2", "--lr", "1e-3", "--fp-iters", "50"], "leave out --fp-iters --lr"),
])
def test_a_study_that_cannot_run_as_asked_is_one_error_line_before_any_training(argv, message, tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/dukd_study.py", *argv, "--out", str(tmp_path / "r.json")],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("text", ["[1, 2]", '{"student": "s"}', '{"student": "s", "runs": []}', "{not json", None])
def test_table_of_a_file_that_is_not_a_study_result_is_one_error_line(text, tmp_path):
    f = tmp_path / "dukd_study_bad.json"
    if text is not None:  # None: the file does not exist
        f.write_text(text)
    proc = subprocess.run([sys.executable, "benchmarks/dukd_study.py", "--table", str(f)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "is not a study result file" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_mean_curve_counts_a_repeated_last_step_once():
    one = [{"step": 250.0, "photos_val": 30.0}, {"step": 500.0, "photos_val": 31.0}]
    again = [*one, {"step": 500.0, "photos_val": 31.0}]  # the run validated once more after it finished
    other = [{"step": 250.0, "photos_val": 32.0}, {"step": 500.0, "photos_val": 33.0}]
    assert dukd_study.mean_curve([again, other]) == ([250.0, 500.0], [31.0, 32.0])
    assert dukd_study.mean_curve([one]) == ([250.0, 500.0], [30.0, 31.0])


@pytest.mark.parametrize("text, message", [
    ("{not json", "is not a study result file"),
    ('{"student": "abpn", "runs": {}}', "holds abpn runs: give --student quicksrnet_s its own --out"),
])
def test_an_out_file_the_study_cannot_append_to_stops_it_before_any_training(text, message, tmp_path):
    out = tmp_path / "dukd_study_x.json"
    out.write_text(text)
    proc = subprocess.run([sys.executable, "benchmarks/dukd_study.py", "--scale", "2", "--precisions", "fp",
                           "--runs", str(tmp_path / "runs"), "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert out.read_text() == text and not (tmp_path / "runs").exists()


def test_table_prints_each_methods_mean_validation_curve_when_asked(tmp_path, capsys):
    def run(points: list[tuple[int, float]]) -> dict:
        return {"photos_val": points[-1][1], "set5": 30.0, "set14": 28.0, "overrides": [],
                "curve": [{"step": float(t), "photos_val": v} for t, v in points]}

    f = tmp_path / "dukd_study_c.json"
    f.write_text(json.dumps({"student": "s", "runs": {"x2/fp/kd/seed0": run([(100, 27.0), (200, 28.0)]),
                                                      "x2/fp/kd/seed1": run([(100, 27.5), (200, 28.5)])}}))
    dukd_study.table([f], [])
    assert "mean validation curve" not in capsys.readouterr().out
    dukd_study.table([f], [], curves=True)
    assert "kd mean validation curve: 100: 27.250, 200: 28.250" in capsys.readouterr().out
