"""The demo behind ``make demo``: the bundled jobs trained and scored through Airflow.

``python -m pipelines.demo`` loads the demo SQLite table, runs ``<job>__train`` then
``<job>__predict`` for every demo job with Airflow's ``dag.test()`` (the real scheduler code
path, in one process, on the SQLite metadata database), and prints where the labeled anomalies
are and what was found.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from pipelines.config import JobConfig, base_dir, get_job, resolve_path
from pipelines.errors import PipelineError

DEMO_JOBS = ("demo_web_metrics", "demo_sensors")
TRAIN_END = "2024-03-01T00:00:00+00:00"
PREDICT_WINDOW = {"start": "2024-03-01T00:00:00+00:00", "end": "2024-03-08T00:00:00+00:00"}


def setup_demo_database(path: Path | None = None) -> Path:
    """(Re)load ``data/demo/sensor_readings.csv`` into the SQLite table the SQL demo job reads."""
    import pandas as pd

    path = path or base_dir() / "var" / "demo" / "sensors.db"
    path.parent.mkdir(parents=True, exist_ok=True)
    import sqlalchemy as sa

    frame = pd.read_csv(base_dir() / "data" / "demo" / "sensor_readings.csv", parse_dates=["reading_time"])
    # Through SQLAlchemy, so times are stored as its DateTime text (YYYY-MM-DD HH:MM:SS.ffffff),
    # the form the SQL source's bound window is compared with.
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        frame.to_sql("sensor_readings", connection, if_exists="replace", index=False)
        connection.execute(sa.text("CREATE INDEX IF NOT EXISTS ix_readings_time ON sensor_readings (reading_time)"))
    engine.dispose()
    return path


class DemoError(RuntimeError):
    """A step of the demo that failed; the task logs above it say why."""


def _loaded_dags():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(base_dir() / "dags"))


def _run_dag(dag_id: str, conf: dict, logical_date: str):
    import pendulum

    bag = _loaded_dags()
    # A job file of the user's that does not validate is an import error that takes no demo DAG
    # with it (pipelines.config.scan_jobs): it is shown, and the demo goes on.
    errors = "\n".join(f"{path}: {error}" for path, error in bag.import_errors.items())
    if dag_id not in bag.dags:
        raise DemoError(f"the DAG {dag_id} was not loaded; DAG import errors:\n{errors or 'none'}")
    if errors:
        print(f"   (DAG import errors, not of the demo jobs:\n{errors})", flush=True)
    dag = bag.dags[dag_id]
    started = time.monotonic()
    run = dag.test(logical_date=pendulum.parse(logical_date), run_conf=conf)
    state = str(getattr(run, "state", "unknown")).rsplit(".", 1)[-1]
    print(f"   {dag_id}: {state} in {time.monotonic() - started:.1f} s", flush=True)
    if state != "success":
        raise DemoError(f"{dag_id} ended in state {state}; see the task logs above")
    return run


def summarize(job: JobConfig) -> str:
    """Where the job's outputs are and, per series, the rows scored and anomalies found."""
    from pipelines.db import engine_for
    from pipelines.reporting import format_table
    from pipelines.sinks import ParquetSink, SqlSink
    from pipelines.workspace import to_utc

    start, end = to_utc(PREDICT_WINDOW["start"]), to_utc(PREDICT_WINDOW["end"])
    root = resolve_path(job.outputs.parquet)
    frame = ParquetSink(root, job.outputs.storage_options).read(job=job.name, start=start, end=end)
    lines = [f"job {job.name} ({job.model.kind}), window {PREDICT_WINDOW['start']} .. {PREDICT_WINDOW['end']}"]
    lines.append(f"  Parquet dataset: {root}/job={job.name}/")
    if job.outputs.table:
        table = job.outputs.table
        sql_rows = len(SqlSink(engine_for(table.connection), table.name, table.db_schema).read(job=job.name, start=start, end=end))
        lines.append(f"  SQL table:       {table.name} in {table.connection.describe()} ({sql_rows} rows for this window)")
    rows = []
    for series, group in frame.groupby("series", sort=True):
        flagged = group[group["is_anomaly"]]
        top = flagged.sort_values(["score", "feature_score"], ascending=False).head(1)
        rows.append(
            {
                "series": series,
                "timestamps": group["timestamp"].nunique(),
                "rows": len(group),
                "anomalous timestamps": flagged["timestamp"].nunique(),
                "strongest": "" if top.empty else f"{top['timestamp'].iloc[0]:%Y-%m-%d %H:%M} {top['feature'].iloc[0]}",
            }
        )
    lines.append("  " + format_table(rows).replace("\n", "\n  "))
    return "\n".join(lines)


def picture(job: JobConfig) -> str:
    """Draw the job's outputs for the demo window next to its Parquet dataset; where it went."""
    from pipelines.errors import MissingDependencyError
    from pipelines.plots import plot_job
    from pipelines.workspace import to_utc

    path = Path(resolve_path(job.outputs.parquet)).parent / f"{job.name}.png"
    try:
        drawn = plot_job(job, to_utc(PREDICT_WINDOW["start"]), to_utc(PREDICT_WINDOW["end"]), path)
    except MissingDependencyError as exc:  # the demo's outputs are written; only the picture is missing
        return f"  Picture: not drawn ({exc})"
    return f"  Picture:         {path} ({len(drawn)} panels: values, expected band, anomalies)"


def main(argv: list[str] | None = None) -> int:
    # The docstring is reST: its ``make demo`` was shown with the backticks, and "demo.py" named no command.
    parser = argparse.ArgumentParser(prog="python -m pipelines.demo", description=(__doc__ or "").replace("``", "`"))
    parser.add_argument("--setup-only", action="store_true", help="only load the demo SQLite table")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    database = setup_demo_database()
    print(f"demo SQLite table sensor_readings loaded into {database}")
    if args.setup_only:
        return 0
    try:
        jobs = {name: get_job(name) for name in DEMO_JOBS}  # another job file that does not validate hides none
        for name in DEMO_JOBS:
            print(f"\n== {name}: train (window ending {TRAIN_END}) then predict {PREDICT_WINDOW}", flush=True)
            _run_dag(f"{name}__train", {"end": TRAIN_END}, TRAIN_END)
            _run_dag(f"{name}__predict", PREDICT_WINDOW, PREDICT_WINDOW["end"])
    except (DemoError, PipelineError) as exc:
        # What failed, as the last line `make demo` prints, not a traceback of the demo's own code.
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print("\n== Results")
    for name in DEMO_JOBS:
        print(summarize(jobs[name]))
        print(picture(jobs[name]) + "\n")
    print("Open the Airflow UI with `make up` (http://localhost:8080; the login is printed there).")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
