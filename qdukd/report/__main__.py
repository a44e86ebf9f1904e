"""``python -m qdukd.report RUN_DIR [RUN_DIR ...] [--out FILE]``: training curves as one HTML page.

Example:
    python -m qdukd.report runs/demo                        # writes runs/demo/report.html
    python -m qdukd.report runs/gt runs/kd runs/dukd --out compare.html

Each RUN_DIR is the --out folder of a ``python -m qdukd.train`` run (it holds log.csv, and
val.csv once validated). Several runs are overlaid, one colour each. Exit codes: 0 written;
2 bad input (a missing folder, no or a corrupt log.csv, an --out that cannot be written or would
replace an input), one error: line; 3 a crash.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..cli import EXIT_OK, Parser, check_output_file, run
from ..errors import QdukdError
from .training_page import CHECKPOINT, LOG, VAL, write_training_report

REPORT = "report.html"


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m qdukd.report", description=__doc__.splitlines()[0],
               formatter_class=argparse.RawDescriptionHelpFormatter, epilog="\n".join(__doc__.splitlines()[2:]))
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="qdukd.train run folders (their --out)")
    p.add_argument("--out", metavar="FILE", help=f"the page to write (.html); default RUN_DIR/{REPORT} for one run, "
                                                 "required for several")
    return p


def output_path(runs: list[Path], out: str | None) -> Path:
    """Where the page goes: ``--out``, or ``RUN_DIR/report.html`` for a single run.

    Raises:
        QdukdError: several runs without ``--out``, a name that is not ``.html``, an input file
            (a run's log.csv, val.csv or last.pt), or a place that cannot be written.
    """
    if out is None:
        if len(runs) > 1:
            raise QdukdError(f"{len(runs)} runs are overlaid on one page: name it with --out FILE.html")
        path = runs[0] / REPORT
    else:
        path = Path(out)
        if path.suffix.lower() not in (".html", ".htm") and not path.is_dir():
            raise QdukdError(f"--out {path} is not an .html file name; name the page e.g. {path.stem or 'runs'}.html")
    inputs = {(r / name).resolve() for r in runs for name in (LOG, VAL, CHECKPOINT)}
    if path.resolve() in inputs:
        raise QdukdError(f"--out {path} is an input of the report; choose another file name")
    return check_output_file(path, "--out")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        runs = [Path(r) for r in args.runs]
        seen = set()
        for r in runs:
            if r.resolve() in seen:
                raise QdukdError(f"run folder {r} is given twice; name each run once")
            seen.add(r.resolve())
            if not r.is_dir():  # before --out is checked: the usual mistake is the run's path
                raise QdukdError(f"run folder {r} is {'a file' if r.exists() else 'missing'}; pass the --out folder "
                                 "of a qdukd.train run")
        path = write_training_report(runs, output_path(runs, args.out))
        print(f"wrote {path} (open it in a browser)")
        return EXIT_OK

    return run(body)


if __name__ == "__main__":
    sys.exit(main())
