"""``python -m nas.status RUN_DIR``: a search at a glance, finished or still running.

Reads the run directory's SQLite store read-only, so it can be run at any moment beside
the search that writes it (the store is in WAL mode: readers never block the writer),
and prints evaluations done against the budget, cost, the ten best architectures with
their metrics, the failures with their reasons, the Pareto front when the run has one,
and the time per evaluation. ``--json`` prints the same as one JSON object.
"""
from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from nas.cli import user_errors
from nas.report.status import format_report, read_run, status_report


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nas.status", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path, help="the run directory of a search (it holds store.sqlite)")
    parser.add_argument("--top", type=int, default=10, help="how many of the best architectures to list")
    parser.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    args = parser.parse_args(argv)
    with user_errors("nothing was changed"):
        report = status_report(read_run(args.run_dir), top=args.top)
        print(json.dumps(asdict(report), indent=1) if args.json else format_report(report))


if __name__ == "__main__":
    main()
