"""Every CLI driven as a hostile-but-realistic user would, through subprocesses.

Each bad input must end in exit code 2 and exactly one ``error:`` line (no traceback, no
terminal colour codes, no advice to load pickles unsafely), with the files afterwards as they
should be: nothing half-written, inputs intact, a trained checkpoint still there. A failed
parity gate or quality floor is exit 1, and only that.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import DEMO
from qdukd.checkpoint import load_checkpoint
from qdukd.errors import QdukdError
from qdukd.recipe import load_recipe

ROOT = Path(__file__).resolve().parents[1]
RECIPE = str(ROOT / "recipes" / "demo.toml")
VAL = str(DEMO / "val")
FAST = ["train.iters=2", "train.log_every=1", "--no-progress"]


def cli(tool: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", f"qdukd.{tool}", *map(str, args)], capture_output=True, text=True,
                          timeout=600, cwd=cwd)


def one_error(res: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 2 and a single ``error:`` line in our own words, naming ``words``."""
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    line = lines[0]
    assert "Traceback" not in res.stderr and "\x1b[" not in line and "weights_only=False" not in line
    for w in words:
        assert w in line, line
    return line


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A real (2-step) demo run: its folder holds step_00000002.pt and last.pt."""
    out = tmp_path_factory.mktemp("run") / "run"
    res = cli("train", RECIPE, "--out", out, *FAST)
    assert res.returncode == 0, res.stderr
    return out


@pytest.fixture(scope="module")
def broken(tmp_path_factory, run) -> dict[str, Path]:
    """Damaged checkpoints, made the ways they happen: diverged, killed copies, foreign files."""
    d = tmp_path_factory.mktemp("broken")
    ckpt = torch.load(run / "last.pt", weights_only=True)
    ckpt["student"]["conv_first.weight"][0, 0, 0, 0] = float("nan")
    torch.save(ckpt, d / "nan.pt")
    data = (run / "last.pt").read_bytes()
    (d / "empty.pt").write_bytes(b"")
    (d / "truncated.pt").write_bytes(data[: len(data) // 3])
    no_recipe = torch.load(run / "last.pt", weights_only=True)
    del no_recipe["recipe"]
    torch.save(no_recipe, d / "no_recipe.pt")
    torch.save(torch.nn.Conv2d(1, 1, 1), d / "pickled_module.pt")  # a whole module: code, not tensors
    return {p.stem: p for p in d.iterdir()}


# --- 1. a broken model never passes ---------------------------------------------------------


@pytest.mark.parametrize("tool", ["export", "upscale", "eval"])
def test_a_nan_checkpoint_is_refused_by_every_cli_naming_the_tensor(tool, broken, tmp_path):
    args = {"export": [broken["nan"], "--out", tmp_path / "exp"],
            "upscale": [broken["nan"], VAL, "--out", tmp_path / "up"],
            "eval": ["--weights", broken["nan"], "--data", VAL]}[tool]
    one_error(cli(tool, *args), "tensor 'conv_first.weight'", "non-finite")
    assert list(tmp_path.iterdir()) == []  # nothing written


@pytest.mark.parametrize("name,words", [
    ("empty", ["is an empty file (0 bytes)"]),
    ("truncated", ["not a complete PyTorch file"]),
    ("no_recipe", ["has no recipe"]),
    ("pickled_module", ["holds Python objects", "never unpickles"]),
])
def test_damaged_checkpoints_exit_2_in_our_own_words(name, words, broken, tmp_path):
    one_error(cli("export", broken[name], "--out", tmp_path / "exp"), str(broken[name]), *words)


def test_the_gate_fails_with_exit_1_below_the_quality_floor_and_a_lower_floor_passes(run, tmp_path):
    res = cli("export", run / "last.pt", "--out", tmp_path / "exp", "--no-progress", "--min-gain-over-bicubic", "30")
    assert res.returncode == 1 and "quality floor: the PyTorch student scores" in res.stdout, res.stdout + res.stderr
    res = cli("export", run / "last.pt", "--out", tmp_path / "exp", "--no-progress")
    assert res.returncode == 0 and "parity gate: PASSED" in res.stdout, res.stdout + res.stderr


# --- 3. inputs checked before work starts ----------------------------------------------------


@pytest.mark.parametrize("override,words", [
    ("eval.sets=[\"/no/such/set\"]", ["data folder not found: /no/such/set"]),
    ("train.iters=-1", ["train.iters must be >= 0"]),
    ("train.device=\"cuda:7\"", ["train.device 'cuda:7' does not exist"]),
    ("train.ietrs=5", ["unknown key 'train.ietrs'", "did you mean 'train.iters'"]),
])
def test_bad_recipe_values_are_refused_before_any_work(override, words, tmp_path):
    started = time.perf_counter()
    one_error(cli("train", RECIPE, "--out", tmp_path / "r", override, "--no-progress"), *words)
    assert not (tmp_path / "r").exists()  # no empty run folder left behind
    assert time.perf_counter() - started < 60  # refused up front, not after training


@pytest.mark.parametrize("override,words", [
    ("data.batch=0", "data.batch must be >= 1"),
    ("data.patch=1", "data.patch must be >= 2"),
    ("train.lr=0", "train.lr must be > 0"),
    ("train.betas=[0.9,1.0]", r"train.betas must both be in \[0, 1\)"),
    ("train.threads=-2", "train.threads must be >= 1"),
    ("train.ema=1.0", r"train.ema must be in \[0, 1\)"),
    ("train.milestones=[200,100]", "train.milestones must be positive and increasing"),
    ("data.train=[]", "data.train must list at least one"),
    ("eval.sets=[]", "eval.sets must list at least one"),
    ("dukd.p=1.5", r"dukd.p must be a probability in \[0, 1\]"),
    ("dukd.w_kd=-1", "dukd.w_kd must be >= 0"),
])
def test_recipe_ranges_name_the_full_key(override, words):
    with pytest.raises(QdukdError, match=f"demo.toml: {words}"):
        load_recipe(RECIPE, [override])


def test_a_validation_image_smaller_than_the_scale_is_found_before_the_first_step(tmp_path):
    sets = tmp_path / "val"
    sets.mkdir()
    shutil.copy(next(Path(VAL).glob("*.png")), sets / "ok.png")
    from PIL import Image
    Image.new("RGB", (3, 3)).save(sets / "tiny.png")
    one_error(cli("train", RECIPE, "--out", tmp_path / "r", f"eval.sets=[\"{sets}\"]", "--no-progress"),
              "tiny.png is 3x3, smaller than the x4 scale")


# --- 4. run folders are owned ----------------------------------------------------------------


def test_a_fresh_run_refuses_a_folder_holding_another_run(run):
    before = (run / "last.pt").read_bytes()
    one_error(cli("train", RECIPE, "--out", run, *FAST), "already holds a run", "--resume")
    assert (run / "last.pt").read_bytes() == before


def test_resume_refuses_a_changed_recipe_naming_the_key(run):
    one_error(cli("train", RECIPE, "--out", run, "--resume", "train.lr=0.5", *FAST),
              "started with train.lr = 0.0002", "says 0.5")


def test_resume_into_an_empty_folder_starts_a_new_run_and_says_so(tmp_path):
    res = cli("train", RECIPE, "--out", tmp_path / "new", "--resume", *FAST)
    assert res.returncode == 0 and f"no checkpoint in {tmp_path / 'new'}: starting a new run" in res.stderr
    assert load_checkpoint(tmp_path / "new" / "last.pt")["step"] == 2


def test_two_processes_cannot_train_into_one_folder_and_a_dead_ones_lock_is_stale(tmp_path):
    out = tmp_path / "r"
    first = subprocess.Popen([sys.executable, "-m", "qdukd.train", RECIPE, "--out", str(out), "train.iters=100000",
                              "--no-progress"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (out / ".lock").exists() and time.time() < deadline:
            time.sleep(0.2)
        one_error(cli("train", RECIPE, "--out", out, "--resume", *FAST), "in use by another training process",
                  f"pid {first.pid}")
    finally:
        first.kill()  # dies holding the lock, as a crashed run does
        first.wait()
    (out / ".last.pt.x1y2.tmp").write_bytes(b"half a checkpoint")  # a killed checkpoint write
    res = cli("train", RECIPE, "--out", out, "--resume", *FAST)
    assert res.returncode == 0, res.stderr
    assert not list(out.glob(".*.tmp"))


# --- 5. nothing of the user's is overwritten; files get the user's umask ----------------------


def test_checkpoints_and_json_follow_the_umask(run, tmp_path):
    umask = os.umask(0)
    os.umask(umask)
    want = 0o666 & ~umask
    assert stat.S_IMODE((run / "last.pt").stat().st_mode) == want
    res = cli("eval", "--weights", run / "last.pt", "--data", VAL, "--json", tmp_path / "r.json")
    assert res.returncode == 0, res.stderr
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == want


# --- 6. every path a user can pass ------------------------------------------------------------


def test_paths_of_the_wrong_kind_exit_2_with_one_line(run, tmp_path):
    a_file = tmp_path / "notes.md"
    a_file.write_text("not a folder")
    cases = [
        (cli("train", RECIPE, "--out", a_file, *FAST), ["is a file, not a folder"]),
        (cli("train", tmp_path, "--out", tmp_path / "r", *FAST), ["is a folder; pass a .toml file"]),
        (cli("train", run / "last.pt", "--out", tmp_path / "r", *FAST), ["not a text file"]),
        (cli("export", run, "--out", tmp_path / "e"), ["is a folder, not a file"]),
        (cli("export", run / "last.pt", "--out", a_file), ["is not an earlier qdukd export"]),
        (cli("export", run / "last.pt", "--out", tmp_path / "e", "--verify-data", a_file), ["is a file"]),
        (cli("eval", "--weights", run / "last.pt", "--data", VAL, "--json", tmp_path), ["is a folder; name a file"]),
        (cli("eval", "--weights", run / "last.pt", "--data", VAL, "--json", a_file / "r.json"),
         [f"{a_file} is a file, not a folder"]),
        (cli("eval", "--weights", run / "last.pt", "--data", a_file), ["is a file; pass a folder of images"]),
        (cli("eval", "--weights", run, "--data", VAL), ["is a folder, not a file"]),
    ]
    for res, words in cases:
        one_error(res, *words)
    assert a_file.read_text() == "not a folder"  # never overwritten


@pytest.mark.skipif(not Path("/sys").is_dir(), reason="needs /sys, a location nobody may create files in")
def test_unwritable_locations_exit_2_before_the_work(run):
    one_error(cli("train", RECIPE, "--out", "/sys/qdukd-run", *FAST), "cannot create the run folder /sys/qdukd-run")
    one_error(cli("eval", "--weights", run / "last.pt", "--data", VAL, "--json", "/sys/r.json"), "cannot write in /sys")
    one_error(cli("export", run / "last.pt", "--out", "/sys/qdukd-exp", "--no-progress"), "/sys")


def test_a_crash_is_exit_3_with_its_traceback_never_1_or_2(tmp_path):
    # No CLI crashes on purpose; the mapping is checked on the shared runner itself.
    code = ("import sys; from qdukd.cli import run\n"
            "def body():\n    raise RuntimeError('a bug')\n"
            "sys.exit(run(body))\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 3 and "Traceback" in res.stderr and "RuntimeError: a bug" in res.stderr
    assert "this is a bug, not bad input" in res.stderr


@pytest.mark.parametrize("tool,args", [("train", ["--out"]), ("eval", ["--scale", "5", "--data", VAL]),
                                       ("export", []), ("upscale", ["model.onnx", "--tile", "x"])])
def test_usage_errors_are_one_line_too(tool, args):
    one_error(cli(tool, *args), f"see python -m qdukd.{tool} --help")
