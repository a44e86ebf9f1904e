"""`python -m qdukd.eval` end to end, as a user runs it: output, JSON, and bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import torch

from conftest import DEMO, shared_path
from qdukd.models import build_model


def run_eval(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "qdukd.eval", *args], capture_output=True, text=True, timeout=300)


def test_demo_images_table_and_json(tmp_path):
    out = tmp_path / "r" / "bicubic.json"
    res = run_eval("--model", "bicubic", "--scale", "4", "--data", str(DEMO / "val"), "--json", str(out))
    assert res.returncode == 0, res.stderr
    assert "PSNR_Y" in res.stdout and "float convention" in res.stdout
    result = json.loads(out.read_text())
    (s,) = result["sets"]
    assert s["name"] == "val" and [i["name"] for i in s["images"]] == sorted(p.stem for p in (DEMO / "val").iterdir()
                                                                          if p.suffix == ".png")
    assert 20 < s["psnr_y"] < 40 and 0 < s["ssim_y"] < 1


def _one_error_line(res: subprocess.CompletedProcess, *needles: str) -> None:
    assert res.returncode == 2
    lines = [l for l in res.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_bad_input_exits_2_with_one_line(tmp_path):
    _one_error_line(run_eval("--model", "bicubic", "--scale", "4", "--data", str(tmp_path / "nope")), "nope")
    bad = tmp_path / "set"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"garbage")
    _one_error_line(run_eval("--model", "bicubic", "--scale", "2", "--data", str(bad)), "broken.png")
    _one_error_line(run_eval("--model", "pan", "--scale", "4", "--weights", str(tmp_path / "w.pth"),
                             "--data", str(DEMO / "val")), "not found", "w.pth")
    (tmp_path / "corrupt.pth").write_bytes(b"\x00" * 100)
    _one_error_line(run_eval("--model", "pan", "--scale", "4", "--weights", str(tmp_path / "corrupt.pth"),
                             "--data", str(DEMO / "val")), "corrupt.pth")
    torch.save(build_model("edsr", 2, num_feat=8, num_block=1).state_dict(), tmp_path / "edsr.pth")
    _one_error_line(run_eval("--model", "pan", "--scale", "2", "--weights", str(tmp_path / "edsr.pth"),
                             "--data", str(DEMO / "val")), "missing")
    _one_error_line(run_eval("--model", "edsr", "--scale", "2", "--arch", "num_feet=8",
                             "--data", str(DEMO / "val")), "num_feet")


def test_lr_files_for_another_scale_are_rejected(tmp_path):
    set5 = shared_path("benchmarks", "Set5")
    # A BasicSR layout whose X2 folder really holds the x4 files.
    shutil.copytree(set5 / "HR", tmp_path / "S" / "HR")
    (tmp_path / "S" / "LR_bicubic" / "X2").mkdir(parents=True)
    for p in (set5 / "LR_bicubic" / "X4").iterdir():
        shutil.copy(p, tmp_path / "S" / "LR_bicubic" / "X2" / p.name.replace("x4", "x2"))
    _one_error_line(run_eval("--model", "bicubic", "--scale", "2", "--data", str(tmp_path / "S")), "wrong --scale")


def test_reader_closing_stdout_exits_141_quietly_with_json_written(tmp_path):
    # `qdukd.eval ... --json r.json | head -0`: the reader is gone before the table is printed.
    out = tmp_path / "r.json"
    proc = subprocess.Popen([sys.executable, "-m", "qdukd.eval", "--model", "bicubic", "--scale", "4",
                             "--data", str(DEMO / "val"), "--json", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=300) == 141, err
    assert "Traceback" not in err and "Exception" not in err and "error" not in err, err  # only the progress bar
    assert json.loads(out.read_text())["sets"][0]["name"] == "val"


def test_a_broken_pipe_that_is_not_stdout_is_still_a_crash():
    # Only a closed stdout is the reader's doing; a BrokenPipeError from our own pipes is a bug.
    code = ("import sys; from qdukd.cli import run\n"
            "def body():\n    raise BrokenPipeError(32, 'Broken pipe')\n"
            "sys.exit(run(body))")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert res.returncode == 3 and "Traceback" in res.stderr and "BrokenPipeError" in res.stderr, res.stderr
