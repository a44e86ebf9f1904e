"""The trainer and `python -m qdukd.train`: resume, signals, NaN, recipes, DDP."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from qdukd.checkpoint import load_checkpoint, save_checkpoint, student_from_checkpoint
from qdukd.errors import QdukdError
from qdukd.images import to_tensor
from qdukd.models import build_model
from qdukd.recipe import Recipe, load_recipe
from qdukd.trainer import Trainer, learning_rate

ROOT = Path(__file__).resolve().parents[1]

TINY = [
    "data.patch=12", "data.batch=4", "student.args={num_feat=8, num_block=1}", "student.init=\"\"",
    "teacher.model=\"edsr\"", "teacher.args={num_feat=8, num_block=1}",
    "train.log_every=1", "train.calib_batches=1", "train.ema=0.9", "eval.sets=[\"demo:val\"]",
]


@pytest.fixture
def teacher_file(tmp_path) -> str:
    torch.manual_seed(0)
    path = tmp_path / "teacher.pth"
    torch.save(build_model("edsr", 4, num_feat=8, num_block=1).state_dict(), path)
    return str(path)


def tiny_recipe(teacher_file: str, *overrides: str) -> Recipe:
    return Recipe().with_overrides([*TINY, f"teacher.weights=\"{teacher_file}\"", *overrides])


def test_learning_rate_schedules():
    r = Recipe().with_overrides(["train.lr=1.0", "train.iters=100", "train.milestones=[10, 20]"])
    assert [learning_rate(s, r) for s in (0, 9, 10, 19, 20)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])
    c = r.with_overrides(["train.scheduler=\"cosine\""])
    assert learning_rate(0, c) == 1.0 and learning_rate(50, c) == pytest.approx(0.5) and learning_rate(100, c) < 1e-12


@pytest.mark.parametrize("schedule", ["single", "two_step"])
def test_resume_gives_identical_weights(tmp_path, teacher_file, schedule):
    recipe = tiny_recipe(teacher_file, "train.iters=6", "quant={w_bits=4, a_bits=4}",
                         f"dukd.schedule=\"{schedule}\"")
    full = Trainer(recipe, tmp_path / "full", progress=False)
    full.fit()
    part = Trainer(recipe.with_overrides(["train.iters=3"]), tmp_path / "part", progress=False)
    part.fit()
    resumed = Trainer(recipe, tmp_path / "part", resume=True, progress=False)
    assert resumed.step == 3
    resumed.fit()
    a, b = full.student.state_dict(), resumed.student.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert all(torch.equal(full.ema.state[k], resumed.ema.state[k]) for k in a)


def test_checkpoint_alone_rebuilds_the_quantized_student(tmp_path, teacher_file):
    recipe = tiny_recipe(teacher_file, "train.iters=2", "quant={w_bits=4, a_bits=4}")
    trainer = Trainer(recipe, tmp_path, progress=False)
    trainer.fit()
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert Recipe.from_dict(ckpt["recipe"]) == recipe and ckpt["step"] == 2
    model = student_from_checkpoint(ckpt, use_ema=False)
    x = torch.rand(1, 3, 10, 12)
    trainer.student.eval()
    with torch.no_grad():
        assert torch.equal(model(x), trainer.student(x))
    assert not list(tmp_path.glob("*.tmp")) and [p.name for p in tmp_path.glob(".*")] == [".lock"]


def test_resuming_a_run_saved_before_quantize_bias_keeps_its_float_biases(tmp_path, teacher_file):
    recipe = tiny_recipe(teacher_file, "train.iters=2", "quant={w_bits=4, a_bits=4}")
    Trainer(recipe.with_overrides(["quant.quantize_bias=false", "train.iters=1"]), tmp_path, progress=False).fit()
    for path in tmp_path.glob("*.pt"):  # as an older qdukd wrote them: no quantize_bias key anywhere
        ckpt = load_checkpoint(path)
        del ckpt["recipe"]["quant"]["quantize_bias"], ckpt["quant"]["config"]["quantize_bias"]
        save_checkpoint(path, ckpt)
    with pytest.raises(QdukdError, match="started with quant.quantize_bias = False"):  # today's default rounds
        Trainer(recipe, tmp_path, resume=True, progress=False)
    resumed = Trainer(recipe.with_overrides(["quant.quantize_bias=false"]), tmp_path, resume=True, progress=False)
    assert resumed.step == 1
    resumed.fit()


def test_nan_loss_names_step_and_term(tmp_path, teacher_file):
    sd = torch.load(teacher_file, weights_only=True)
    sd["conv_first.weight"] *= 1e38  # finite weights whose outputs overflow
    torch.save(sd, teacher_file)
    trainer = Trainer(tiny_recipe(teacher_file, "train.iters=3", "dukd.mode=\"kd\""), tmp_path, progress=False)
    with pytest.raises(QdukdError, match=r"'kd' is (nan|inf) at step 0: lower train.lr"):
        trainer.fit()
    assert not list(tmp_path.glob("*.pt"))


def test_teacher_weights_with_nan_are_refused_naming_the_tensor(tmp_path, teacher_file):
    sd = torch.load(teacher_file, weights_only=True)
    sd["conv_last.bias"][1] = float("nan")
    torch.save(sd, teacher_file)
    with pytest.raises(QdukdError, match=r"tensor 'conv_last.bias' has 1 non-finite"):
        Trainer(tiny_recipe(teacher_file, "train.iters=3", "dukd.mode=\"kd\""), tmp_path, progress=False)


def test_gt_mode_needs_no_teacher_and_kd_mode_does(tmp_path):
    Trainer(Recipe().with_overrides([*TINY[:3], "train.iters=1", "dukd.mode=\"gt\""]), tmp_path, progress=False).fit()
    with pytest.raises(QdukdError, match="needs a teacher"):
        Trainer(Recipe().with_overrides([*TINY[:3], "dukd.mode=\"kd\""]), tmp_path / "kd", progress=False)


def test_aux_batches_leave_activation_ranges_alone(teacher_file, tmp_path):
    from qdukd.quant import activation_range_parameters

    grads = {}
    for updates in (False, True):
        recipe = tiny_recipe(teacher_file, "train.iters=1", "quant={w_bits=4, a_bits=4}",
                             f"dukd.aux_updates_ranges={str(updates).lower()}")
        t = Trainer(recipe, tmp_path / str(updates), progress=False)
        t.optimizer.step = lambda: None  # keep the gradients for inspection
        t.optimizer.zero_grad = lambda set_to_none=True: None
        t.train_step(0)
        grads[updates] = [p.grad.clone() for p in activation_range_parameters(t.student)]
    std_only = Trainer(tiny_recipe(teacher_file, "train.iters=1", "quant={w_bits=4, a_bits=4}",
                                   "dukd.mode=\"kd\""), tmp_path / "kd", progress=False)
    std_only.optimizer.step = lambda: None
    std_only.optimizer.zero_grad = lambda set_to_none=True: None
    std_only.train_step(0)
    kd = [p.grad for p in activation_range_parameters(std_only.student)]
    assert all(torch.equal(a, b) for a, b in zip(grads[False], kd))
    assert any(not torch.equal(a, b) for a, b in zip(grads[True], kd))


def _cli(*args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "qdukd.train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, **kw)


def test_cli_rejects_unknown_keys_with_a_suggestion(tmp_path):
    proc = _cli("recipes/demo.toml", "--out", str(tmp_path), "train.iter=5")
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "did you mean 'train.iters'" in err and len(err.strip().splitlines()) == 1


def test_sigterm_saves_a_checkpoint_and_resume_finishes(tmp_path, teacher_file):
    args = ["recipes/demo.toml", *TINY, f"teacher.weights=\"{teacher_file}\"", "train.iters=100000",
            "--out", str(tmp_path), "--no-progress"]
    proc = _cli(*args)
    deadline = time.time() + 120
    while not (tmp_path / "log.csv").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err  # saved, but not finished
    step = load_checkpoint(tmp_path / "last.pt")["step"]
    assert 0 < step < 100000
    assert f"stopped after step {step}, saved {tmp_path / f'step_{step:08d}.pt'}" in err
    # The documented order: RECIPE --out DIR --resume key=value ... (overrides after the options).
    proc = _cli(*args[:-4], "--out", str(tmp_path), "--resume", "--no-progress", "train.iters=" + str(step + 2))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert load_checkpoint(tmp_path / "last.pt")["step"] == step + 2


@pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")
@pytest.mark.parametrize("schedule", ["single", "two_step"])
def test_two_processes_equal_one_with_the_same_global_batch(tmp_path, teacher_file, schedule):
    common = ["recipes/demo.toml", *TINY, f"teacher.weights=\"{teacher_file}\"", "train.iters=3",
              "train.lr=1e-3", "quant={w_bits=8, a_bits=8}", f"dukd.schedule=\"{schedule}\"", "--no-progress"]
    single = _cli(*common, "--out", str(tmp_path / "one"))
    assert single.wait(timeout=300) == 0, single.stderr.read()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    ddp = subprocess.run([torchrun, "--standalone", "--nproc_per_node=2", "-m", "qdukd.train", *common,
                          "--out", str(tmp_path / "two")], capture_output=True, text=True, cwd=ROOT, env=env,
                         timeout=300)
    assert ddp.returncode == 0, ddp.stderr[-2000:]
    a = load_checkpoint(tmp_path / "one" / "last.pt")["student"]
    b = load_checkpoint(tmp_path / "two" / "last.pt")["student"]
    # Adam turns float-summation noise in near-zero gradients into steps of up to ~lr, so the
    # tolerance is a fraction of one step (lr 1e-3, 3 steps: weights move up to 3e-3). Two-step
    # makes twice the Adam steps, and a flipped rounding decision of a weight's LSQ step size moves
    # that element by about a step: there the test is that such elements stay rare (a wrong
    # gradient reduction would move most of them) and within two steps.
    floats = [k for k in a if a[k].dtype.is_floating_point]
    if schedule == "single":
        for k in floats:
            assert torch.allclose(a[k], b[k], atol=2.5e-4, rtol=0), k
    else:
        diff = torch.cat([(a[k] - b[k]).abs().flatten() for k in floats])
        assert float((diff > 2.5e-4).float().mean()) < 0.02 and float(diff.max()) < 2e-3
    init = Trainer(load_recipe(ROOT / "recipes" / "demo.toml", [*TINY, f"teacher.weights=\"{teacher_file}\"",
                                                                 "quant={w_bits=8, a_bits=8}"]),
                   tmp_path / "init", progress=False)
    moved = max((a[k] - v).abs().max().item() for k, v in init.student.state_dict().items()
                if v.dtype.is_floating_point)
    assert moved > 1e-3  # training really moved the weights, by far more than the tolerance


def test_zoom_in_cache_cuts_the_teachers_hr_output_and_is_shared_on_disk(tmp_path, teacher_file):
    cache = tmp_path / "cache"
    options = ["train.iters=1", "teacher.cache_zoom_in=true", f"teacher.cache_dir=\"{cache}\"", "data.augment=false"]
    recipe = tiny_recipe(teacher_file, *options)
    trainer = Trainer(recipe, tmp_path / "a", progress=False)
    item = trainer.data[0]
    hr, patch = trainer.data.hrs[item["image"]], item["hr"]
    assert set(item) == {"lr", "hr", "image", "zoom_in"} and item["zoom_in"].shape[-1] == 4 * patch.shape[-1]
    # Where the HR patch was cut, the teacher's output of the whole HR image gives the target.
    p = patch.shape[-1]
    whole = to_tensor(hr)[0]
    top, left = next((t, c) for t in range(hr.shape[0] - p + 1) for c in range(hr.shape[1] - p + 1)
                     if torch.equal(whole[:, t:t + p, c:c + p], patch))
    full = trainer.teacher(to_tensor(hr))[0]
    cut = full[:, 4 * top:4 * (top + p), 4 * left:4 * (left + p)]
    assert torch.allclose(cut, item["zoom_in"].float(), atol=2e-3)
    trainer.fit()
    files = {f: f.stat().st_mtime_ns for f in cache.glob("hr-*.npy")}
    assert len(files) == len(trainer.data.hrs)
    # A second run with the same teacher reads the files (memory-mapped) instead of recomputing.
    again = Trainer(recipe, tmp_path / "b", progress=False)
    assert all(isinstance(t, np.memmap) for t in again.data.targets["zoom_in"])
    assert {f: f.stat().st_mtime_ns for f in cache.glob("hr-*.npy")} == files
    # Other teacher weights are another cache entry.
    other = tmp_path / "other.pth"
    torch.save({k: v + 0.01 for k, v in torch.load(teacher_file, weights_only=True).items()}, other)
    Trainer(tiny_recipe(str(other), *options), tmp_path / "c", progress=False)
    assert len(list(cache.glob("hr-*.npy"))) == 2 * len(files)


def test_demo_recipe_loads():
    r = load_recipe(ROOT / "recipes" / "demo.toml")
    # W4A4 KD from the bundled teacher: the study's measured default for EDSR students at x4 W4A4.
    assert r.quant is not None and (r.quant.w_bits, r.quant.a_bits) == (4, 4)
    assert r.dukd.mode == "kd" and r.teacher.weights == "demo:teacher_edsr_x4.pth"


def test_teacher_cache_targets_are_the_teachers_output_cropped(tmp_path, teacher_file):
    recipe = tiny_recipe(teacher_file, "train.iters=1", "dukd.mode=\"kd\"", "teacher.cache=true",
                         "data.augment=false")
    trainer = Trainer(recipe, tmp_path, progress=False)
    item = trainer.data[0]
    full = trainer.teacher(to_tensor(trainer.data.lrs[item["image"]]))
    # The cached target is a crop of the whole-image output: find it and compare (float16 storage).
    h = item["kd"].shape[-1]
    hits = [(t, l) for t in range(0, full.shape[-2] - h + 1, 4) for l in range(0, full.shape[-1] - h + 1, 4)
            if torch.allclose(full[0, :, t:t + h, l:l + h], item["kd"].float(), atol=2e-3)]
    assert len(hits) == 1
    trainer.fit()


def test_validation_psnr_is_logged_at_the_step_it_was_measured(tmp_path, teacher_file):
    recipe = tiny_recipe(teacher_file, "train.iters=4", "train.val_every=2", "train.log_every=1", "dukd.mode=\"kd\"")
    scores = Trainer(recipe, tmp_path / "run", progress=False).fit()
    with (tmp_path / "run" / "val.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["step"] for r in rows] == ["2", "4"]  # every val_every steps and at the end, nothing else
    assert float(rows[-1]["psnr_y/val"]) == pytest.approx(scores[0].psnr_y)
    with (tmp_path / "run" / "log.csv").open() as f:
        log = list(csv.DictReader(f))
    assert [r["step"] for r in log] == ["1", "2", "3", "4"] and {"lr", "it_per_s", "pix", "kd", "total"} <= set(log[0])
