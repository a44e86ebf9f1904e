"""Your own network through qdukd: the documented example end to end, the trust opt-in, FX adds,
conventions, plugins."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

from qdukd.checkpoint import load_checkpoint, save_checkpoint
from qdukd.errors import QdukdError
from qdukd.models import build_model
from qdukd.models.common import Add
from qdukd.quant import QuantAdd, QuantConfig, prepare_qat, quantized_layers

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "custom_model"


def _cli(tool: str, *args: str, cwd: Path, pythonpath: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(pythonpath)} if pythonpath else None
    return subprocess.run([sys.executable, "-m", f"qdukd.{tool}", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=600)


@pytest.fixture
def user_folder(tmp_path, monkeypatch) -> Path:
    """The example's files in a folder outside the package, importable as a user's module."""
    folder = tmp_path / "user"
    shutil.copytree(EXAMPLE, folder)
    monkeypatch.syspath_prepend(str(folder))
    return folder


def test_the_documented_example_runs_end_to_end_and_the_clis_rebuild_its_student(user_folder):
    # As a user runs it: from their folder, their module importable because the script lives there.
    res = subprocess.run([sys.executable, "distill.py", "--out", "runs/t", "--iters", "60"], capture_output=True,
                         text=True, cwd=user_folder, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "parity gate: PASSED" in res.stdout
    ckpt = load_checkpoint(user_folder / "runs" / "t" / "last.pt")
    assert ckpt["recipe"]["student"] == {"model": "tinysr:TinySR", "args": {"num_feat": 16, "num_block": 2},
                                         "init": ""}
    # Its residual adds were found and quantized (W8A8 with quantize_adds).
    assert {k: v["kind"] for k, v in ckpt["quant"]["layers"].items() if k.startswith("fx_add")} == \
        {"fx_add0": "add", "fx_add1": "add"}
    # The CLIs rebuild it from the checkpoint alone, given the opt-in, and refuse without it.
    last = user_folder / "runs" / "t" / "last.pt"
    refused = _cli("export", last, "--out", "exp", cwd=user_folder, pythonpath=user_folder)
    assert refused.returncode == 2 and "--trust-model-code" in refused.stderr and "Traceback" not in refused.stderr
    ok = _cli("export", last, "--out", "exp", "--trust-model-code", "--no-progress", cwd=user_folder,
              pythonpath=user_folder)
    assert ok.returncode == 0 and "parity gate: PASSED" in ok.stdout, ok.stdout + ok.stderr


@pytest.fixture
def markers(tmp_path) -> Path:
    """A module that leaves a file behind when imported, and a function that does when called."""
    folder = tmp_path / "code"
    folder.mkdir()
    (folder / "marked.py").write_text(textwrap.dedent(f"""
        from pathlib import Path
        Path({str(tmp_path / 'imported')!r}).touch()

        def make(scale):
            Path({str(tmp_path / 'called')!r}).touch()
    """))
    return folder


def _checkpoint_naming(model: str, path: Path) -> Path:
    """A real checkpoint (an EDSR student) whose recipe names ``model`` instead."""
    from qdukd.recipe import DataSection, Recipe, StudentSection
    student = build_model("edsr", 4, num_feat=8, num_block=1)
    recipe = Recipe(data=DataSection(scale=4), student=StudentSection(model=model, args={}))
    save_checkpoint(path, {"recipe": recipe.to_dict(), "student": student.state_dict(), "quant": None, "ema": None,
                           "step": 1})
    return path


@pytest.mark.parametrize("tool", ["export", "eval", "upscale"])
def test_a_checkpoint_naming_foreign_code_is_refused_without_importing_it(tool, markers, tmp_path):
    ckpt = _checkpoint_naming("marked:make", tmp_path / "foreign.pt")
    demo_val = ROOT / "qdukd" / "demo_data" / "val"
    args = {"export": [ckpt, "--out", tmp_path / "exp"], "eval": ["--weights", ckpt, "--data", demo_val],
            "upscale": [ckpt, demo_val, "--out", tmp_path / "up"]}[tool]
    res = _cli(tool, *args, cwd=tmp_path, pythonpath=markers)
    assert res.returncode == 2 and "code outside qdukd" in res.stderr and "--trust-model-code" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "imported").exists()  # never imported
    # With the opt-in it is imported, but a function is not an nn.Module: refused before any call.
    res = _cli(tool, *args, "--trust-model-code", cwd=tmp_path, pythonpath=markers)
    assert res.returncode == 2 and "not an nn.Module subclass" in res.stderr, res.stderr
    assert (tmp_path / "imported").exists() and not (tmp_path / "called").exists()


def test_subprocess_popen_is_never_called(tmp_path):
    ckpt = _checkpoint_naming("subprocess:Popen", tmp_path / "popen.pt")
    for extra in ([], ["--trust-model-code"]):
        res = _cli("export", ckpt, "--out", tmp_path / "exp", *extra, cwd=tmp_path)
        assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "type subprocess:Popen, not an nn.Module subclass" in res.stderr
    assert not (tmp_path / "exp").exists()


class _Untraceable(nn.Module):
    """Data-dependent control flow: torch.fx cannot trace it."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale
        self.conv = nn.Conv2d(3, 3 * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if y.mean() > 0:
            y = y + y
        return self.shuffle(y)


class _WrongSize(_Untraceable):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class _NoScale(nn.Module):
    def __init__(self, width: int = 4) -> None:
        super().__init__()


def test_fx_finds_residual_adds_and_only_those(user_folder):
    model = build_model("tinysr:TinySR", 4, trust_code=True, num_feat=8, num_block=2)
    adds = [n for n, m in model.named_modules() if isinstance(m, Add)]
    assert adds == ["fx_add0", "fx_add1", "fx_add2"]  # two residual blocks and the bicubic skip
    prepare_qat(model, QuantConfig.from_string("w8a8,quantize_adds=true"))
    quantized = quantized_layers(model)
    assert isinstance(quantized["fx_add0"], QuantAdd) and isinstance(quantized["fx_add1"], QuantAdd)
    assert "fx_add2" not in quantized  # after the pixel shuffle: the float tail
    from tinysr import TinySR
    plain = TinySR(scale=4, num_feat=8, num_block=2)
    assert list(build_model("tinysr:TinySR", 4, trust_code=True, num_feat=8, num_block=2).state_dict()) == \
        list(plain.state_dict())  # the rewrite adds no state


def test_an_untraceable_model_keeps_float_adds_and_says_so_once(monkeypatch):
    monkeypatch.setitem(sys.modules, "userzoo", sys.modules[__name__])
    with pytest.warns(UserWarning, match="cannot be traced by torch.fx .*adds stay in float"):
        model = build_model("userzoo:_Untraceable", 2, trust_code=True)
    assert model(torch.rand(1, 3, 8, 8)).shape == (1, 3, 16, 16)


@pytest.mark.parametrize("name,words", [
    ("userzoo:_WrongSize", r"maps \(1, 3, 16, 16\) to \(1, 3, 16, 16\), not \(1, 3, 64, 64\)"),
    ("userzoo:_NoScale", "must take its upscaling factor as a 'scale' constructor argument"),
    ("userzoo:missing", "has no missing"),
    ("nosuchpackage.nets:Net", "cannot import nosuchpackage.nets"),
    ("edsrr", "unknown model 'edsrr'"),
])
def test_models_breaking_a_convention_are_named(name, words, monkeypatch):
    monkeypatch.setitem(sys.modules, "userzoo", sys.modules[__name__])
    with pytest.raises(QdukdError, match=words):
        build_model(name, 4, trust_code=True)


def test_a_plugin_registers_a_name_through_entry_points(user_folder, tmp_path, monkeypatch):
    dist = tmp_path / "site" / "tinysr_plugin-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tinysr-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[qdukd.models]\ntinysr = tinysr:TinySR\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    with pytest.raises(QdukdError, match="'tinysr' is code outside qdukd \\(tinysr:TinySR\\)"):
        build_model("tinysr", 4)
    model = build_model("tinysr", 4, trust_code=True, num_feat=8)
    assert model(torch.rand(1, 3, 8, 8)).shape == (1, 3, 32, 32)


def test_a_student_object_must_be_importable(tmp_path):
    from qdukd.recipe import Recipe
    from qdukd.trainer import Trainer

    class Local(_Untraceable):
        pass

    with pytest.raises(QdukdError, match="defined in a script or function"):
        Trainer(Recipe(), tmp_path / "r", student=Local(4))
    assert not (tmp_path / "r").exists()
