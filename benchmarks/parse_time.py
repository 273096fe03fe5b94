"""How long Airflow takes to parse ``dags/anomaly_jobs.py`` as the number of configured jobs grows.

Every measurement is a fresh Python process (``AIRFLOW_HOME`` in a temporary folder, example
DAGs off, no import timeout so a slow parse is measured rather than cut) that builds
``DagBag(dag_folder=<file>)`` and reads the file's parse duration from ``dagbag_stats``: the
time Airflow spends importing the file and collecting its DAGs, imports of the file included,
interpreter start and Airflow's own import excluded. The DAG processor then serializes each
DAG; that time is measured in the same process and reported beside it. The baseline is a
DAG file holding only ``from airflow.sdk import DAG``.

Jobs are copies of ``config/jobs/demo_web_metrics.yaml`` with different names, in a temporary
jobs folder (``ANOMALY_PIPELINES_JOBS_DIR``); each job makes four DAGs (train, tune, predict, score).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.report import REPO, fmt_number, fmt_ratio, machine_line, median, table

log = logging.getLogger(__name__)

DAG_FILE = REPO / "dags" / "anomaly_jobs.py"
DEMO_JOB = REPO / "config" / "jobs" / "demo_web_metrics.yaml"
EMPTY_DAG_FILE = "from airflow.sdk import DAG\n"
FULL_JOBS = (1, 50, 500)
QUICK_JOBS = (1, 5)
RESULT_MARK = "BENCH_RESULT "
#: Airflow's defaults the figures are compared with.
DAGBAG_IMPORT_TIMEOUT = 30.0
DAG_FILE_PROCESSOR_TIMEOUT = 50.0


def write_jobs(folder: Path, count: int) -> list[str]:
    """``count`` copies of the demo job named ``bench_job_0000``, ...; returns the names."""
    import yaml

    demo = yaml.safe_load(DEMO_JOB.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(count):
        name = f"bench_job_{i:04d}"
        (folder / f"{name}.yaml").write_text(yaml.safe_dump({**demo, "name": name}, sort_keys=False))
        names.append(name)
    return names


@dataclass(frozen=True)
class Variant:
    """One DAG file parsed with one jobs folder; ``jobs`` is None for the empty DAG file."""

    label: str
    dag_file: Path
    jobs: int | None
    jobs_dir: Path


def _child_env(variant: Variant, airflow_home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "0",  # 0 = no timeout: measure, do not cut
        "AIRFLOW__CORE__DAGS_FOLDER": str(variant.dag_file.parent),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{airflow_home / 'airflow.db'}",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "ANOMALY_PIPELINES_JOBS_DIR": str(variant.jobs_dir),
    }


def parse_once(variant: Variant, airflow_home: Path) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.parse_time", "--child", str(variant.dag_file)]
    done = subprocess.run(command, cwd=REPO, env=_child_env(variant, airflow_home), capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"parse benchmark child failed for {variant.label}:\n{done.stderr[-4000:]}")
    (line,) = [line for line in done.stdout.splitlines() if line.startswith(RESULT_MARK)]
    return json.loads(line[len(RESULT_MARK) :])


def _child(dag_file: str) -> None:
    from airflow.dag_processing.dagbag import DagBag
    from airflow.serialization.serialized_objects import DagSerialization

    bag = DagBag(dag_folder=dag_file)
    if bag.import_errors:
        raise SystemExit(f"the DAG file did not import: {bag.import_errors}")
    parse = sum(stat.duration.total_seconds() for stat in bag.dagbag_stats)
    start = time.perf_counter()
    for dag in bag.dags.values():
        DagSerialization.to_dict(dag)
    serialize = time.perf_counter() - start
    # The file's own share: loading and validating the job files again, imports now warm.
    load_jobs = None
    if "pipelines.config" in sys.modules:
        from pipelines.config import load_jobs as load

        start = time.perf_counter()
        load()
        load_jobs = time.perf_counter() - start
    result = {
        "parse": parse,
        "serialize": serialize,
        "load_jobs": load_jobs,
        "dags": len(bag.dags),
        "tasks": sum(len(dag.tasks) for dag in bag.dags.values()),
    }
    print(RESULT_MARK + json.dumps(result), flush=True)


@dataclass(frozen=True)
class Measured:
    variant: Variant
    repeats: int
    parse: float
    serialize: float
    load_jobs: float | None
    dags: int
    tasks: int


def measure(quick: bool, repeats: int | None = None) -> list[Measured]:
    counts = QUICK_JOBS if quick else FULL_JOBS
    repeats = repeats or (1 if quick else 3)
    with tempfile.TemporaryDirectory(prefix="bench-parse-") as tmp:
        root = Path(tmp)
        empty = root / "empty_dag" / "empty_dag.py"
        empty.parent.mkdir()
        empty.write_text(EMPTY_DAG_FILE)
        no_jobs = root / "jobs_none"
        no_jobs.mkdir()
        variants = [Variant("empty DAG file", empty, None, no_jobs)]
        for count in counts:
            folder = root / f"jobs_{count}"
            write_jobs(folder, count)
            variants.append(Variant(f"{count} job{'s' if count > 1 else ''}", DAG_FILE, count, folder))
        runs: dict[str, list[dict[str, Any]]] = {v.label: [] for v in variants}
        for repeat in range(repeats):
            for variant in variants if repeat % 2 == 0 else list(reversed(variants)):
                log.info("parse benchmark: %s, repeat %d of %d", variant.label, repeat + 1, repeats)
                home = root / f"airflow_home_{repeat}_{len(runs[variant.label])}_{variant.jobs}"
                runs[variant.label].append(parse_once(variant, home))
    results = []
    for variant in variants:
        found = runs[variant.label]
        load_jobs = [r["load_jobs"] for r in found if r["load_jobs"] is not None]
        results.append(
            Measured(
                variant=variant,
                repeats=repeats,
                parse=median(r["parse"] for r in found),
                serialize=median(r["serialize"] for r in found),
                load_jobs=median(load_jobs) if load_jobs else None,
                dags=found[0]["dags"],
                tasks=found[0]["tasks"],
            )
        )
    return results


def markdown(results: list[Measured]) -> str:
    empty = results[0]
    with_jobs = [m for m in results if m.variant.jobs]
    smallest = with_jobs[0]
    headers = [
        "DAG file",
        "DAGs",
        "tasks",
        "parse (s)",
        "parse minus empty file (s)",
        f"parse ratio (vs {smallest.variant.label})",
        "of which load_jobs() (s)",
        "serialize DAGs (s)",
        "parse + serialize (s)",
    ]
    rows = [
        [
            m.variant.label,
            f"{m.dags:,}",
            f"{m.tasks:,}",
            fmt_number(m.parse),
            "—" if m.variant.jobs is None else fmt_number(m.parse - empty.parse),
            "—" if m.variant.jobs is None else fmt_ratio(m.parse / smallest.parse),
            fmt_number(m.load_jobs),
            fmt_number(m.serialize),
            fmt_number(m.parse + m.serialize),
        ]
        for m in results
    ]
    largest = with_jobs[-1]
    second = with_jobs[-2] if len(with_jobs) > 1 else smallest
    per_job = (largest.parse - second.parse) / max(largest.variant.jobs - second.variant.jobs, 1)
    per_job_total = (largest.parse + largest.serialize - second.parse - second.serialize) / max(
        largest.variant.jobs - second.variant.jobs, 1
    )
    fixed = smallest.parse - per_job * smallest.variant.jobs
    fixed_total = smallest.parse + smallest.serialize - per_job_total * smallest.variant.jobs
    fits_import = f"{(DAGBAG_IMPORT_TIMEOUT - fixed) / per_job:,.0f}" if per_job > 0 else "any number of"
    fits_processor = (
        f"{(DAG_FILE_PROCESSOR_TIMEOUT - fixed_total) / per_job_total:,.0f}" if per_job_total > 0 else "any number of"
    )
    yaml_share = 100 * (largest.load_jobs or 0) / largest.parse
    repeats = empty.repeats
    return "\n\n".join(
        [
            "## DAG file parse time: number of jobs",
            machine_line(f"{repeats} fresh process{'es' if repeats > 1 else ''} per DAG file and job count"),
            "Measured with `airflow.dag_processing.dagbag.DagBag(dag_folder=<file>)` in a fresh "
            "process per measurement (`AIRFLOW_HOME` in a temporary folder, "
            "`AIRFLOW__CORE__LOAD_EXAMPLES=False`, import timeout off): *parse* is the file's "
            "duration in `dagbag_stats`, i.e. importing `dags/anomaly_jobs.py` (with its imports: "
            "`pipelines.config`, pydantic, YAML), running `load_jobs()` and building and checking "
            "the DAGs; interpreter start and Airflow's own import are not in it. The empty DAG "
            "file holds only `from airflow.sdk import DAG`. *of which load_jobs()* is a second "
            "`load_jobs()` in the same process (imports warm): the share of reading and validating "
            "the YAML files. *serialize DAGs* is `DagSerialization.to_dict` on every DAG, which the "
            "DAG processor does after parsing, in the same process. Jobs are copies of "
            "`config/jobs/demo_web_metrics.yaml`; each job makes four DAGs (train, tune, predict, score).",
            table(headers, rows),
            f"At {largest.variant.jobs:,} jobs, serializing the DAGs takes "
            f"{fmt_ratio(largest.serialize / largest.parse)} the time of parsing them, and reading and "
            f"validating the job files (`load_jobs()`) {yaml_share:.0f}% of the parse: "
            f"{_cost_note(yaml_share)}. "
            f"Each job beyond {second.variant.jobs} added {per_job * 1000:,.1f} ms of parsing "
            f"({per_job_total * 1000:,.1f} ms with serialization), over a fixed "
            f"{max(fixed, 0):.2f} s. At that rate one file fits about "
            f"{fits_import} jobs in Airflow's default `dagbag_import_timeout` "
            f"({DAGBAG_IMPORT_TIMEOUT:g} s) and about {fits_processor} jobs in the default "
            f"`dag_file_processor_timeout` ({DAG_FILE_PROCESSOR_TIMEOUT:g} s, parsing plus "
            "serialization) on this machine; the file is parsed again every "
            "`min_file_process_interval` (30 s by default).",
        ]
    )


def _cost_note(yaml_share: float) -> str:
    if yaml_share < 50:
        return "most of the cost is building and serializing four DAGs per job, not the YAML"
    return "the YAML files are most of the parse"


def run(quick: bool = False) -> str:
    return markdown(measure(quick))


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="python -m benchmarks.parse_time")
    parser.add_argument("--child", metavar="DAG_FILE", help="parse this file once and print the figures")
    args = parser.parse_args()
    if args.child:
        _child(args.child)
    else:
        print(run(quick=True))
