"""A training run's folder: one run per folder, one process at a time.

The lock is an ``flock`` on ``DIR/.lock``: the kernel drops it when its process ends, however
it ends, so a lock file left by a crash is never mistaken for a live run.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from .errors import QdukdError, RunFolderBusy

LOCK_NAME = ".lock"


class RunFolder:
    """The ``--out`` folder of ``qdukd.train``.

    Args:
        path: the folder (created with its parents when missing).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock: int | None = None
        self._created = False

    def acquire(self) -> None:
        """Create the folder, take its lock and remove temp files a killed write left behind.

        Raises:
            QdukdError: the path is a file or cannot be created or written.
            RunFolderBusy: another live process trains into it.
        """
        if self.path.exists() and not self.path.is_dir():
            raise QdukdError(f"--out {self.path} is a file, not a folder; choose a folder for the run")
        try:
            self._created = not self.path.exists()
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise QdukdError(f"cannot create the run folder {self.path}: {e.strerror} "
                             "(choose a location you can write to)") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunFolderBusy(f"{self.path} is in use by another training process (pid {owner}); wait for it "
                             "to finish or choose another --out") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock = fd
        for tmp in self.path.glob(".*.tmp"):  # atomic_path's temp files: only a killed write leaves one
            tmp.unlink(missing_ok=True)

    def release(self) -> None:
        """Drop the lock (the file stays; it means nothing without a live holder)."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def abandon(self) -> None:
        """Release, and remove the folder again if :meth:`acquire` created it and nothing was written."""
        self.release()
        if self._created and [p.name for p in self.path.iterdir()] == [LOCK_NAME]:
            (self.path / LOCK_NAME).unlink()
            self.path.rmdir()

    def checkpoints(self) -> list[Path]:
        """The run's step checkpoints, oldest first."""
        return sorted(self.path.glob("step_*.pt"))

    def holds_run(self) -> Path | None:
        """A checkpoint that shows the folder already holds a run, or None."""
        found = self.checkpoints() + [p for p in [self.path / "last.pt"] if p.is_file()]
        return found[-1] if found else None
