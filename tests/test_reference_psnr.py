"""The evaluation pipeline reproduces published PSNR with the authors' own networks.

Runs the real `python -m qdukd.eval` entry point on the real teachers and benchmark sets and
compares with PAN's own per-image test logs and IMDN's paper (../shared/data/README.md).
"""

from __future__ import annotations

import json
import re

import pytest

from conftest import shared_path
from qdukd.eval import main as eval_main

# IMDN paper, Table 3 (PSNR_Y; README of ../shared/data) and, for the uint8 Y convention,
# the figures measured with the authors' network that the same README records.
IMDN_PAPER = {(2, "Set5"): 38.00, (2, "Set14"): 33.63, (4, "Set5"): 32.21, (4, "Set14"): 28.58}
IMDN_X4_UINT8 = {"Set5": 32.1867, "Set14": 28.5724}


def _pan_log(scale: int, set_name: str) -> tuple[dict[str, tuple[float, float]], tuple[float, float]]:
    text = shared_path("reference", f"PAN_x{scale}_test.log").read_text()
    section = text.split(f"Testing [{set_name}]")[1]
    body, tail = section.split("----Average", 1)
    images = {m[1]: (float(m[2]), float(m[3])) for m in
              re.finditer(r"INFO: (\w+)\s+- PSNR: .*?PSNR_Y: (\d+\.\d+) dB; SSIM_Y: (\d+\.\d+)", body)}
    avg = re.search(r"PSNR_Y: (\d+\.\d+) dB; SSIM_Y: (\d+\.\d+)", tail)
    return images, (float(avg[1]), float(avg[2]))


def _evaluate(tmp_path, model: str, scale: int, convention: str = "float") -> dict[str, dict]:
    out = tmp_path / f"{model}{scale}{convention}.json"
    sets = [str(shared_path("benchmarks", s)) for s in ("Set5", "Set14")]
    weights = shared_path("teachers", f"{model.upper()}_x{scale}.pth")
    code = eval_main(["--model", model, "--scale", str(scale), "--weights", str(weights),
                      "--data", *sets, "--ycbcr", convention, "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    assert result["model"] == model and result["scale"] == scale and result["convention"] == convention
    return {s["name"]: s for s in result["sets"]}


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_pan_matches_its_own_log_on_every_image(tmp_path, scale):
    sets = _evaluate(tmp_path, "pan", scale)
    for set_name in ("Set5", "Set14"):
        logged, (avg_psnr, avg_ssim) = _pan_log(scale, set_name)
        ours = {i["name"]: i for i in sets[set_name]["images"]}
        assert ours.keys() == logged.keys()
        for name, (psnr_y, ssim_y) in logged.items():
            assert ours[name]["psnr_y"] == pytest.approx(psnr_y, abs=0.005), (set_name, name)
            assert ours[name]["ssim_y"] == pytest.approx(ssim_y, abs=1e-4), (set_name, name)
        assert sets[set_name]["psnr_y"] == pytest.approx(avg_psnr, abs=0.005)
        assert sets[set_name]["ssim_y"] == pytest.approx(avg_ssim, abs=1e-4)


@pytest.mark.parametrize("scale", [2, 4])
def test_imdn_matches_its_paper(tmp_path, scale):
    sets = _evaluate(tmp_path, "imdn", scale)
    for set_name in ("Set5", "Set14"):
        assert sets[set_name]["psnr_y"] == pytest.approx(IMDN_PAPER[scale, set_name], abs=0.01)


def test_uint8_y_convention_is_the_rounded_one(tmp_path):
    sets = _evaluate(tmp_path, "imdn", 4, "uint8")
    for set_name, value in IMDN_X4_UINT8.items():
        assert sets[set_name]["psnr_y"] == pytest.approx(value, abs=5e-4)
