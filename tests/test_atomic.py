"""Atomic writes: whole files or none, with the permissions the user's umask gives."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from qdukd import atomic
from qdukd.atomic import atomic_path, write_json

ROOT = Path(__file__).resolve().parents[1]

# One process per umask: the module reads the umask once, at import.
WRITE_ALL = """
import sys
import numpy as np
import torch
from qdukd.atomic import write_json
from qdukd.checkpoint import save_checkpoint
from qdukd.images import write_image
out = sys.argv[1]
write_json(out + "/a.json", {"x": 1})
write_image(out + "/a.png", np.zeros((2, 3, 3), np.uint8))
save_checkpoint(out + "/a.pt", {"student": {"w": torch.zeros(1)}, "step": 1})
"""


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640)])
def test_files_get_the_umask_permissions(tmp_path, umask, mode):
    subprocess.run([sys.executable, "-c", WRITE_ALL, str(tmp_path)], cwd=ROOT, check=True, umask=umask)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir()}
    assert modes == {"a.json": mode, "a.png": mode, "a.pt": mode}


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "r.json"
    write_json(target, {"v": 1})
    for error in (RuntimeError, KeyboardInterrupt):
        with pytest.raises(error):
            with atomic_path(target) as tmp:
                tmp.write_text("half a fi")
                raise error()
    assert target.read_text() == '{\n  "v": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_reading_the_umask_does_not_change_it(monkeypatch):
    probe = "import os, qdukd.atomic; print(oct(os.umask(0)))"
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, check=True, umask=0o037,
                         capture_output=True, text=True).stdout
    assert out.strip() == "0o37"
    # Without /proc (not Linux) it is set and put back.
    mask = os.umask(0o027)
    try:
        monkeypatch.setattr(atomic.Path, "read_text", lambda self: (_ for _ in ()).throw(OSError("no /proc")))
        assert atomic._read_umask() == 0o027 and os.umask(0o027) == 0o027
    finally:
        os.umask(mask)


def test_sigterm_during_a_cli_write_exits_143_and_leaves_no_temporary_file(tmp_path):
    # A real SIGTERM to a real process, in the middle of an atomic write under the CLI runner.
    program = f"""
import os, signal, sys, time
from qdukd.atomic import atomic_path
from qdukd.cli import run

def body():
    with atomic_path({str(tmp_path / 'out.png')!r}) as tmp:
        tmp.write_bytes(b"half an image")
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
    return 0

sys.exit(run(body))
"""
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=60)
    assert done.returncode == 143, done.stderr
    assert list(tmp_path.iterdir()) == []
