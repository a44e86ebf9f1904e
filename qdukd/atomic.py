"""Atomic file writes: readers see the old file or the whole new one, never half of it."""

from __future__ import annotations

import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator


def _read_umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc/self/status``)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    # Elsewhere the only way is to set it and put it back; at import no other thread is writing files.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# What open() would give a new file: mkstemp makes its files 0600 whatever the umask.
_FILE_MODE = 0o666 & ~_read_umask()


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` if the block succeeds.

    The file gets the permissions a plain ``open(path, "w")`` would (``0o666`` less the umask read
    at import). The parent folder is created if missing. If the block raises (or is interrupted),
    the temporary file is removed and ``path`` is left as it was.

    Args:
        path: the file to write.

    Example:
        with atomic_path("out/model.onnx") as tmp:
            onnx.save(model, tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        os.chmod(tmp, _FILE_MODE)
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2) + "\n")
