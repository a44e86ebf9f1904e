"""benchmarks/deployable_zoo.py: bad arguments are one error line, exit 2, before any training."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("argv, says", [
    (["--nets", "nope_x2"], "error: unknown jobs ['nope_x2']"),
    (["--nets", "abpn_x2", "--runs", "0"], "error: --runs 0:"),
    (["--nets", "abpn_x2", "--exact"], "has none for ['abpn_x2']"),  # no finished row to export again
    (["--nets", "abpn_x2", "--fp-control"], "has none for ['abpn_x2']"),
])
def test_bad_arguments_are_one_error_line_and_write_nothing(tmp_path, argv, says):
    out = tmp_path / "zoo.json"
    proc = subprocess.run([sys.executable, "benchmarks/deployable_zoo.py", *argv, "--out", str(out),
                           "--runs-dir", str(tmp_path / "runs")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert says in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", '{"runs": {}}'])
def test_a_results_file_that_is_not_one_is_one_error_line_and_left_as_it_was(tmp_path, text):
    out = tmp_path / "zoo.json"
    out.write_text(text)
    for argv in (["--nets", "abpn_x2"], ["--table"]):
        proc = subprocess.run([sys.executable, "benchmarks/deployable_zoo.py", *argv, "--out", str(out),
                               "--runs-dir", str(tmp_path / "runs")], cwd=ROOT, capture_output=True, text=True,
                              timeout=120)
        assert proc.returncode == 2, proc.stderr
        assert "is not a zoo results file" in proc.stderr and "Traceback" not in proc.stderr
    assert out.read_text() == text and not (tmp_path / "runs").exists()


def test_table_of_a_missing_results_file_is_an_error_not_an_empty_table(tmp_path):
    proc = subprocess.run([sys.executable, "benchmarks/deployable_zoo.py", "--table", "--out",
                           str(tmp_path / "none.json")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "no results file" in proc.stderr and "|---|" not in proc.stdout
