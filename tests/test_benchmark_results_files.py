"""The older benchmarks refuse an --out that is not their own results file, before any work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script, what, shape", [
    ("dukd_ablation.py", "an ablation results file", '{"rows": []}'),
    ("zoo_lr.py", "a rate-sweep results file", '{"rows": []}'),
    ("export_size.py", "an export-size results file", '{"runs": {}}'),
])
@pytest.mark.parametrize("corrupt", [False, True])
def test_wrong_out_is_one_error_line_and_left_as_it_was(tmp_path, script, what, shape, corrupt):
    out = tmp_path / "results.json"
    text = "{not json" if corrupt else shape  # unreadable, or another script's results
    out.write_text(text)
    proc = subprocess.run([sys.executable, f"benchmarks/{script}", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {out} is not {what}"), proc.stderr
    assert out.read_text() == text
