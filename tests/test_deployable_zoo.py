"""benchmarks/deployable_zoo.py: a job it does not know is one error line, exit 2, before any training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_an_unknown_network_is_one_error_line_and_writes_nothing(tmp_path):
    out = tmp_path / "zoo.json"
    proc = subprocess.run([sys.executable, "benchmarks/deployable_zoo.py", "--nets", "nope_x2", "--out", str(out),
                           "--runs-dir", str(tmp_path / "runs")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "error: unknown jobs ['nope_x2']" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() and not (tmp_path / "runs").exists()
