"""Windows of runs without a data interval (asset-triggered or manual train runs)."""

from __future__ import annotations

from datetime import UTC, datetime

from pipelines.config import parse_job
from pipelines.workspace import triggered_training_end

JOB = parse_job(
    {
        "name": "hourly",
        "source": {"kind": "file", "path": "data.csv"},
        "timestamp": "ts",
        "frequency": "1h",
        "features": ["value"],
        "model": {"kind": "seasonal_mad"},
    }
)


def test_the_latest_triggering_event_end_wins_on_the_job_grid() -> None:
    ends = ["2024-03-02T05:00:00+00:00", "2024-03-03T07:30:00+01:00"]  # the second is 06:30 UTC
    due = datetime(2024, 5, 1, tzinfo=UTC)
    assert triggered_training_end(JOB, ends, due) == datetime(2024, 3, 3, 6, tzinfo=UTC)


def test_without_events_the_run_ends_when_it_was_due_floored_to_the_grid() -> None:
    assert triggered_training_end(JOB, [], datetime(2024, 5, 1, 10, 59, tzinfo=UTC)) == datetime(2024, 5, 1, 10, tzinfo=UTC)


def test_without_events_or_due_time_it_ends_now() -> None:
    before = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    end = triggered_training_end(JOB, [], None)
    assert end >= before and end.minute == 0 and end.second == 0
