"""quantizer_sensitivity: one quantizer on at a time, switches restored; the benchmark's bad input."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qdukd.errors import QdukdError
from qdukd.models import build_model
from qdukd.quant import QuantConfig, calibrate, fake_quantizers, prepare_qat, quantizer_sensitivity

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def prepared():
    """QuickSRNet-S x2 at W8A8 except 2-bit weights in ``cnn.2``, and its float twin's output."""
    torch.manual_seed(0)
    model = build_model("quicksrnet_s", 2).eval()
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        reference = copy.deepcopy(model)(x)
    cfg = QuantConfig(w_bits=8, a_bits=8, head_tail="int8", rules=(("cnn.2", 2, 8),))
    calibrate(prepare_qat(model, cfg), [torch.rand(2, 3, 16, 16) for _ in range(2)])
    return model, x, reference


def neg_mse(x: torch.Tensor, reference: torch.Tensor):
    def score(model: torch.nn.Module) -> float:
        with torch.no_grad():
            return -float((model(x) - reference).pow(2).mean())
    return score


def test_each_quantizer_alone_the_2_bit_one_costs_most_and_none_on_is_the_float_network(prepared):
    model, x, reference = prepared
    scores = quantizer_sensitivity(model, neg_mse(x, reference))
    names = [n for n, m in model.named_modules() if m in fake_quantizers(model)]
    assert list(scores) == ["none", "all", *names]
    assert scores["none"] == 0.0  # every quantizer off: exactly the float model
    singles = {k: v for k, v in scores.items() if k not in ("none", "all")}
    assert min(singles, key=singles.get) == "cnn.2.weight_quant"
    assert all(v < 0 for v in singles.values())  # each one alone changes the output
    assert all(q.enabled for q in fake_quantizers(model))


def test_switches_are_left_as_found_even_when_the_score_fails(prepared):
    model, x, reference = prepared
    off = fake_quantizers(model)[1]
    off.enabled = False
    calls = []

    def failing(m: torch.nn.Module) -> float:
        calls.append(1)
        if len(calls) == 3:
            raise RuntimeError("scoring failed")
        return 0.0

    with pytest.raises(RuntimeError):
        quantizer_sensitivity(model, failing)
    assert [q.enabled for q in fake_quantizers(model)] == [q is not off for q in fake_quantizers(model)]


def test_a_model_without_quantizers_is_an_error():
    with pytest.raises(QdukdError, match="prepare_qat"):
        quantizer_sensitivity(build_model("quicksrnet_s", 2), lambda m: 0.0)


def run_script(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "benchmarks/quant_sensitivity.py", *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_the_benchmark_rejects_an_fp_recipe_and_a_foreign_out_file_in_one_line(tmp_path):
    fp = run_script("recipes/deploy/quicksrnet_s_x2_fp.toml", "--name", "x", "--out", str(tmp_path / "s.json"))
    assert fp.returncode == 2 and fp.stderr.strip().splitlines() == [
        "error: recipes/deploy/quicksrnet_s_x2_fp.toml has no [quant] section: give a QAT recipe"]
    assert not (tmp_path / "s.json").exists()
    foreign = tmp_path / "other.json"
    foreign.write_text('{"rows": []}')
    bad = run_script("--table", "--out", str(foreign))
    assert bad.returncode == 2 and "not a quant_sensitivity results file" in bad.stderr
    assert "Traceback" not in bad.stderr and foreign.read_text() == '{"rows": []}'
