"""Backfills through Airflow 3's own backfill (``airflow backfill create``) on a running Airflow.

The job ``backfill_hourly`` (tests/airflow_jobs/) reads CSV files that this test writes under the
server's project. A day of hourly intervals is backfilled; every interval's rows must be in the
Parquet dataset and the SQL table exactly once. Then rows arrive late for a few intervals, those
are backfilled again with ``--reprocess-behavior completed``, and their rows are replaced.
The scenario's helpers are shared with ``benchmarks/backfill.py``, which runs a month.
"""

from __future__ import annotations

import pandas as pd
import pytest

from benchmarks.backfill import (
    FEATURES,
    FIRST_DAY,
    SERIES,
    add_late_rows,
    copies,
    create_backfill,
    read_outputs,
    rows_per_timestamp,
    train,
    wait_for_backfill,
    write_source,
)

pytestmark = [pytest.mark.airflow, pytest.mark.slow]

LATE_HOURS = [10, 11, 12]


def late_us_rows(frame: pd.DataFrame) -> pd.Series:
    """Region us reports hours 10-12 of the backfilled day late."""
    stamp = pd.to_datetime(frame["timestamp"])
    return (frame["region"] == "us") & (stamp.dt.normalize() == FIRST_DAY) & stamp.dt.hour.isin(LATE_HOURS)


def test_backfill_writes_each_interval_once_and_late_rows_replace_them(airflow_server) -> None:
    server = airflow_server
    late = write_source(server.project, FIRST_DAY, 1, withheld=late_us_rows)
    assert len(late) == len(LATE_HOURS)
    trained = train(server, FIRST_DAY)
    assert trained.returncode == 0, trained.stderr[-3000:]

    hours = list(pd.date_range(FIRST_DAY, periods=24, freq="h"))
    backfill = create_backfill(server, hours[0], hours[-1])
    states = wait_for_backfill(server, backfill, hours, timeout=1200)
    assert states == {h.isoformat(): "success" for h in hours}, server.log_tail()

    full = len(SERIES) * len(FEATURES)
    expected = {h: len(FEATURES) if h.hour in LATE_HOURS else full for h in hours}  # us not there yet
    parquet, sql = read_outputs(server.project)
    # Backfill runs go up to 10 at once whatever the DAG's max_active_runs: two publishes that
    # rewrite the same day file at once lose one run's rows unless publish is serialized.
    assert rows_per_timestamp(parquet, hours) == expected, "rows lost: were two publishes of one day file concurrent?"
    assert rows_per_timestamp(sql, hours) == expected
    first_scored = parquet.groupby("timestamp")["scored_at"].max()

    # Region us reports hours 10-12 late (a new file in the source's folder); those intervals
    # are backfilled again, re-scored whole, and their rows replaced.
    add_late_rows(server.project, late.assign(requests=late["requests"] + 0.5))
    again = [h for h in hours if h.hour in LATE_HOURS]
    backfill = create_backfill(server, again[0], again[-1], "--reprocess-behavior", "completed")
    assert wait_for_backfill(server, backfill, again, timeout=600) == {h.isoformat(): "success" for h in again}

    parquet, sql = read_outputs(server.project)
    for frame in (parquet, sql):
        assert rows_per_timestamp(frame, hours) == {h: full for h in hours}
        assert copies(frame, hours) == (0, 0)
        arrived = frame[(frame["series"] == "region=us") & (frame["feature"] == "requests") & frame["timestamp"].isin(again)]
        assert arrived.sort_values("timestamp")["value"].tolist() == (late["requests"] + 0.5).tolist()
    rescored = parquet.groupby("timestamp")["scored_at"].max()
    assert all(rescored[h] > first_scored[h] for h in again)
    assert all(rescored[h] == first_scored[h] for h in hours if h not in again)
