"""benchmarks/gpu_check.py --quick: the prepared GPU check runs end to end on CPU (issue #11)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import onnxruntime

ROOT = Path(__file__).resolve().parents[1]


def test_quick_gpu_check_records_every_part_and_says_why_cuda_was_skipped(tmp_path):
    out = tmp_path / "gpu_check.json"
    proc = subprocess.run([sys.executable, "benchmarks/gpu_check.py", "--quick", "--profile", "--out", str(out)],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    speed = result["speed"]
    for mode in ("gt", "kd", "dukd"):
        assert speed[mode]["it_per_s"] > 0 and speed[mode]["peak_memory_mib"] > 0
        profile = speed[mode]["profile"]  # on CPU: torch ops take time, no GPU kernel ran
        assert profile["torch_ops_cpu_ms_per_step"] > 0 and profile["gpu_kernels_per_step"] == 0
        assert profile["top_self_cpu_ops"][0]["calls_per_step"] > 0
    assert speed["dukd_over_kd"] > 1  # DUKD adds the zoom-in and zoom-out passes to every KD step
    comparison = result["dukd_vs_kd"]
    assert comparison["dukd_minus_kd"]["val"] == comparison["dukd"]["val"] - comparison["kd"]["val"]
    backends = {b["name"]: b for b in result["parity"]["backends"]}
    assert backends["onnxruntime-cpu-reference"]["ran"] and backends["onnxruntime-cpu"]["ran"]
    assert all(abs(backends[n]["delta_psnr_y"]) <= 0.01 for n in ("onnxruntime-cpu-reference", "onnxruntime-cpu"))
    cuda = backends["onnxruntime-cuda"]
    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        assert cuda["ran"] or cuda["skipped_reason"]
    else:  # never a silent pass: the row says it did not run, and why
        assert not cuda["ran"] and "CUDAExecutionProvider" in cuda["skipped_reason"]
    assert "parity: onnxruntime-cpu-reference" in proc.stdout and "skipped:" in proc.stdout
