"""``python -m benchmarks [--quick] [--only throughput,predict,parse,nab,tuning,...]`` (``make bench``).

Runs each benchmark module's ``run(quick) -> str`` in turn and writes what it returns as that
benchmark's section of docs/BENCHMARKS.md. ``--quick`` runs small versions and only prints:
quick figures are too small to publish.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
from collections.abc import Sequence

from benchmarks.report import BENCHMARKS_MD, write_section

#: Benchmark name (for --only, and the name of its section) -> module with ``run(quick) -> str``.
BENCHMARKS: dict[str, str] = {
    "throughput": "benchmarks.throughput",
    "predict": "benchmarks.predict_scaling",
    "parse": "benchmarks.parse_time",
    "one_off": "benchmarks.one_off",
    "nab": "benchmarks.nab",
    "tuning": "benchmarks.tuning",
    "train_many": "benchmarks.train_many",
    "backfill": "benchmarks.backfill",
    "dashboard": "benchmarks.dashboard",
    "api": "benchmarks.api_latency",
    "sql_read": "benchmarks.sql_read",
}

log = logging.getLogger("benchmarks")


def _selected(only: str | None) -> list[str]:
    if not only:
        return list(BENCHMARKS)
    names = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        raise SystemExit(f"unknown benchmark(s) {', '.join(unknown)}; choose among {', '.join(BENCHMARKS)}")
    return names


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description="Run the benchmarks and write their sections of docs/BENCHMARKS.md."
    )
    parser.add_argument("--quick", action="store_true", help="small runs; print the sections, write nothing")
    parser.add_argument("--only", metavar="NAMES", help=f"comma-separated subset of: {','.join(BENCHMARKS)}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    # The library logs every step of every run; the benchmarks' own progress is what matters here.
    logging.getLogger("pipelines").setLevel(logging.WARNING)

    for name in _selected(args.only):
        module = importlib.import_module(BENCHMARKS[name])
        log.info("%s: starting (%s)", name, "quick" if args.quick else "full")
        start = time.perf_counter()
        section = module.run(args.quick)
        log.info("%s: done in %.0f s", name, time.perf_counter() - start)
        if args.quick:
            print(section, end="\n\n", flush=True)
        else:
            write_section(name, section)
            log.info("%s: section written to %s", name, BENCHMARKS_MD)
    return 0


if __name__ == "__main__":
    sys.exit(main())
