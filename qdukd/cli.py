"""What every ``python -m qdukd.X`` entry point shares: error handling and key=value args."""

from __future__ import annotations

import sys
import warnings
from typing import Callable

from .errors import QdukdError

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def run(main: Callable[[], int]) -> int:
    """Run a CLI body: bad input prints one ``error:`` line and exits 2; Ctrl-C exits 130."""
    warnings.simplefilter("default", UserWarning)
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    try:
        return main()
    except QdukdError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


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
