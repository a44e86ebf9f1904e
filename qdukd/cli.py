"""What every ``python -m qdukd.X`` entry point shares: error handling and key=value args."""

from __future__ import annotations

import argparse
import errno
import os
import select
import signal
import sys
import tempfile
import threading
import traceback
import warnings
from pathlib import Path
from typing import Callable, NoReturn

from .errors import QdukdError

# A pipeline reads these: 1 is only ever a failed parity gate, never a crash.
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_CRASH = 0, 1, 2, 3


class Parser(argparse.ArgumentParser):
    """argparse with usage errors as one ``error:`` line (exit 2), like every other bad input."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)


def run(main: Callable[[], int]) -> int:
    """Run a CLI body and map its outcome to an exit code.

    Bad input (:class:`QdukdError`, or a file-system error on a path the user named) prints one
    ``error:`` line and exits 2; Ctrl-C exits 130; SIGTERM exits 143 once ``finally`` blocks have
    removed their temporary files; anything else is a bug: the traceback and exit code 3. A reader
    that closes stdout early (``| head``) stops the CLI quietly with 141 (128 + SIGPIPE, as a shell
    reports it for a C tool), leaving no half-written file, as Ctrl-C does.
    """
    warnings.simplefilter("default", UserWarning)
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    # Python's default SIGTERM kills the process where it stands, leaving hidden .tmp files behind.
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminated) if in_main else None
    try:
        code = main()
        sys.stdout.flush()  # a reader that went away shows here, not as a warning at exit
        return code
    except BrokenPipeError:
        if not _stdout_reader_gone():  # a pipe of our own (a worker, a subprocess) broke: a bug
            return _crash()
        # stdout's reader went away (``| head``): stop, as SIGPIPE stops a C tool. Point stdout at
        # /dev/null so the interpreter's last flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except QdukdError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as e:
        if e.filename is None:  # not about a path: a crash like any other
            return _crash()
        print(f"error: {_os_error_line(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception:
        return _crash()
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reading end is closed (poll flags its write end)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no real file descriptor, or no poll() (Windows)
        return False


def _terminated(signum: int, frame: object) -> NoReturn:
    sys.exit(128 + signum)  # SystemExit unwinds through every finally block on its way out


def _os_error_line(e: OSError) -> str:
    """A file-system error as one line with the fix the common cases need."""
    fix = {errno.EACCES: "check its permissions or choose another location",
           errno.EPERM: "check its permissions or choose another location",
           errno.EROFS: "the file system is read-only; choose another location",
           errno.ENOSPC: "the disk is full; free space or choose another location",
           errno.ENOTDIR: "a part of the path is a file, not a folder",
           errno.EISDIR: "it is a folder; name a file",
           errno.ENOENT: "check the path"}.get(e.errno or 0, "check the path")
    return f"cannot use {e.filename}: {e.strerror or 'file-system error'} ({fix})"


def _crash() -> int:
    traceback.print_exc()
    print(f"qdukd crashed (exit {EXIT_CRASH}): this is a bug, not bad input; please report it with the "
          "traceback above", file=sys.stderr)
    return EXIT_CRASH


def check_input_file(path: str | Path, what: str, inside: str) -> Path:
    """``path`` as a Path, after checking it is a file with something in it.

    Args:
        path: the file a user named.
        what: how messages name it (``"checkpoint"``, ``"model"``).
        inside: what to pass instead when ``path`` is a folder (``"the .pt/.pth file"``).

    Raises:
        QdukdError: missing, a folder, or empty.
    """
    path = Path(path)
    if path.is_dir():
        raise QdukdError(f"{what} {path} is a folder, not a file; pass {inside} inside it")
    if not path.is_file():
        raise QdukdError(f"{what} not found: {path}")
    if path.stat().st_size == 0:
        raise QdukdError(f"{what} {path} is an empty file (0 bytes): an interrupted copy or save? Use another file")
    return path


def check_output_file(path: str | Path, flag: str) -> Path:
    """Fail now, not after the work, when ``path`` cannot be written (its parent is created).

    Raises:
        QdukdError: ``path`` is a folder, a part of it is a file, or its folder is not writable.
    """
    path = Path(path)
    if path.is_dir():
        raise QdukdError(f"{flag} {path} is a folder; name a file")
    blocker = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise QdukdError(f"{flag} {path}: {blocker} is a file, not a folder")
    check_writable_folder(path.parent, f"{flag} {path}")
    return path


def check_writable_folder(folder: str | Path, what: str) -> Path:
    """Create ``folder`` (and its parents) and prove it takes files, before any work.

    Raises:
        QdukdError: it cannot be created or written (read-only, no permission, a file in the way).
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise QdukdError(f"{what}: cannot write in {folder} ({e.strerror or e}); choose another location") from None
    return folder


def parse_kv(pairs: list[str], what: str) -> dict[str, object]:
    """``["num_feat=32", "res_scale=0.1"]`` -> ``{"num_feat": 32, "res_scale": 0.1}``.

    Values are read as int, float, bool or comma-separated tuples where they parse as such.
    """
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise QdukdError(f"{what} must look like key=value, got {pair!r}")
        out[key.strip()] = parse_value(value.strip())
    return out


def parse_value(text: str) -> object:
    """Best-effort literal: int, float, true/false, a comma list of those, else the string."""
    if "," in text:
        return tuple(parse_value(t.strip()) for t in text.split(",") if t.strip())
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return text
