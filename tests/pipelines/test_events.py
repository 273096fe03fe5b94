"""Grouping anomalous points of the outputs into events (pipelines/events.py)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from pipelines.events import AnomalyEvent, anomaly_events, window_events
from pipelines.schema import conform

HOUR = timedelta(hours=1)
START = pd.Timestamp("2024-03-01T00:00Z")


def output_rows(
    series: str = "region=eu",
    *,
    features: tuple[str, ...] = ("requests", "latency_ms"),
    hours: int = 24,
    start: pd.Timestamp = START,
    anomalies: dict[int, dict[str, float]] | None = None,
    job: str = "web",
    dimensions: dict[str, str] | None = None,
    version: str = "v1",
) -> pd.DataFrame:
    """Published rows of one series: every feature near 100 (expected 100, bounds 90–110);
    ``anomalies`` maps an hour index to {feature: actual value} flagged there, with a score
    that grows with the distance from 100."""
    anomalies = anomalies or {}
    rng = np.random.default_rng(7)
    rows = []
    for hour in range(hours):
        timestamp = start + pd.Timedelta(hours=hour)
        for feature in features:
            value = anomalies.get(hour, {}).get(feature)
            flagged = value is not None
            actual = value if flagged else 100 + float(rng.normal(0, 2))
            distance = abs(actual - 100)
            rows.append(
                {
                    "job": job,
                    "series": series,
                    "timestamp": timestamp,
                    "feature": feature,
                    "value": actual,
                    "expected": 100.0,
                    "lower": 90.0,
                    "upper": 110.0,
                    "score": min(0.999, 0.9 + distance / 1000) if flagged else 0.1,
                    "feature_score": distance / 100 if flagged else 0.0,
                    "is_anomaly": flagged,
                    "model": "seasonal_mad",
                    "model_version": version,
                    "run_id": "run",
                    "interval_start": start,
                    "interval_end": start + pd.Timedelta(hours=hours),
                    "scored_at": start,
                    **(dimensions or {"region": series.split("=")[-1]}),
                }
            )
    frame = pd.DataFrame(rows)
    return conform(frame, list(dimensions or {"region": ""}))


def test_consecutive_points_form_one_event_with_peak_direction_and_signals():
    frame = output_rows(anomalies={5: {"requests": 150}, 6: {"requests": 180, "latency_ms": 120}, 7: {"requests": 140}})
    [event] = anomaly_events(frame, frequency=HOUR)
    assert (event.job, event.series, event.dimensions) == ("web", "region=eu", {"region": "eu"})
    assert event.start == START + 5 * HOUR and event.end == START + 7 * HOUR
    assert event.rows == 3
    assert event.peak_timestamp == START + 6 * HOUR
    assert event.peak_score == pytest.approx(0.98)
    assert event.direction == "rise"
    assert event.top_features == ("requests", "latency_ms")
    by_feature = {f.feature: f for f in event.at_peak}
    assert by_feature["requests"].actual == 180 and by_feature["requests"].expected == 100
    assert (by_feature["requests"].lower, by_feature["requests"].upper) == (90, 110)
    assert by_feature["latency_ms"].actual == 120 and by_feature["latency_ms"].is_anomaly
    assert event.value_ranges == {"requests": (140.0, 180.0), "latency_ms": (120.0, 120.0)}
    assert event.key == f"web|region=eu|{(START + 5 * HOUR).isoformat()}"
    assert (event.model, event.model_version) == ("seasonal_mad", "v1")


@pytest.mark.parametrize(
    ("max_gap", "expected"),
    [
        (0, [(3, 3), (5, 5), (8, 8)]),  # only directly consecutive hours
        (1, [(3, 5), (8, 8)]),  # one normal hour inside an event: 3 and 5 join, 8 is two hours off
        (2, [(3, 8)]),
    ],
)
def test_gaps_up_to_max_gap_join_events(max_gap, expected):
    frame = output_rows(anomalies={3: {"requests": 150}, 5: {"requests": 160}, 8: {"requests": 170}})
    events = anomaly_events(frame, frequency=HOUR, max_gap=max_gap)
    assert [((e.start - START) // HOUR, (e.end - START) // HOUR) for e in events] == expected


def test_fall_and_series_are_kept_apart():
    frame = pd.concat(
        [
            output_rows("region=eu", anomalies={2: {"latency_ms": 40}}),
            output_rows("region=us", anomalies={2: {"requests": 170}, 3: {"requests": 160}}),
        ],
        ignore_index=True,
    )
    eu, us = anomaly_events(frame, frequency=HOUR)
    assert (eu.series, eu.direction, eu.top_features, eu.rows) == ("region=eu", "fall", ("latency_ms",), 1)
    assert (us.series, us.direction, us.rows) == ("region=us", "rise", 2)
    assert eu.dimensions == {"region": "eu"} and us.dimensions == {"region": "us"}


def test_no_anomalies_no_events_and_round_trip():
    assert anomaly_events(output_rows(), frequency=HOUR) == []
    [event] = anomaly_events(output_rows(anomalies={1: {"requests": 130}}), frequency=HOUR)
    assert AnomalyEvent.from_dict(event.to_dict()) == event
    with pytest.raises(ValueError, match="max_gap must be 0 or more"):
        anomaly_events(output_rows(), frequency=HOUR, max_gap=-1)


# -- events of a window (what GET …/events lists for start/end) -------------------------------------


class Reader:
    """Reads a job's published Parquet output as the API does, remembering the ranges it read."""

    def __init__(self, root: str):
        from pipelines.sinks.parquet import ParquetSink

        self.sink = ParquetSink(root)
        self.calls: list[tuple[object, object]] = []

    def __call__(self, low, high) -> pd.DataFrame:
        self.calls.append((low, high))
        return self.sink.read(job="web", start=low, end=high)


@pytest.fixture
def published(tmp_path) -> Reader:
    """A real published Parquet output of two days: eu anomalous from 20:00 of day one to 04:00 of
    day two (growing, peak at 04:00), us from 02:00 to 03:00 of day two."""
    eu = output_rows("region=eu", hours=48, anomalies={hour: {"requests": 120.0 + 5 * (hour - 20)} for hour in range(20, 29)})
    us = output_rows("region=us", hours=48, anomalies={26: {"requests": 150}, 27: {"requests": 160}})
    reader = Reader(str(tmp_path / "outputs"))
    frame = pd.concat([eu, us], ignore_index=True)
    reader.sink.write(frame, job="web", dimensions=["region"], start=START, end=START + 48 * HOUR)
    return reader


def test_an_event_straddling_the_window_is_returned_whole_whatever_the_window(published):
    whole = [e for e in window_events(published, start=None, end=None, frequency=HOUR) if e.series == "region=eu"]
    assert [(e.start, e.end, e.rows) for e in whole] == [(START + 20 * HOUR, START + 28 * HOUR, 9)]
    for start, end in [(24, None), (None, 24), (22, 26), (28, 29), (19, 21), (0, 48)]:
        low = None if start is None else START + start * HOUR
        high = None if end is None else START + end * HOUR
        [event] = [e for e in window_events(published, start=low, end=high, frequency=HOUR) if e.series == "region=eu"]
        # Cut to the window (the defect), the start, rows, peak and key changed with the window:
        # a label kept by the event's span no longer matched it exactly, and two adjoining
        # windows listed one incident as two events.
        assert event == whole[0], (start, end)
        assert event.key == f"web|region=eu|{(START + 20 * HOUR).isoformat()}"
        assert event.peak_timestamp == START + 28 * HOUR and event.value_ranges == {"requests": (120.0, 160.0)}
        assert not event.cut_at_start and not event.cut_at_end
    # Adjoining pages list the incident once each, as the same event.
    [before] = window_events(published, start=START, end=START + 24 * HOUR, frequency=HOUR)
    after = window_events(published, start=START + 24 * HOUR, end=START + 48 * HOUR, frequency=HOUR)
    assert before in after and before.key in {e.key for e in after}


def test_events_only_beyond_the_window_are_not_listed_and_the_gap_rule_holds_at_the_edge(published):
    # us (02:00-03:00 of day two) lies wholly after this window; eu ends at 04:00 of day two.
    assert [e.series for e in window_events(published, start=START, end=START + 24 * HOUR, frequency=HOUR)] == ["region=eu"]
    assert window_events(published, start=START + 29 * HOUR, end=START + 48 * HOUR, frequency=HOUR, max_gap=0) == []
    # 29:00 is normal: with one normal period allowed, a window from there still joins nothing
    # (30:00 on is normal too), and a window ending at 20:00 does not list the event starting there.
    assert window_events(published, start=START + 29 * HOUR, end=START + 48 * HOUR, frequency=HOUR, max_gap=1) == []
    assert window_events(published, start=START, end=START + 20 * HOUR, frequency=HOUR) == []
    with pytest.raises(ValueError, match="max_gap must be 0 or more"):
        window_events(published, start=None, end=None, frequency=HOUR, max_gap=-1)


def test_reading_beyond_the_window_is_capped_and_a_still_cut_event_says_so(published):
    [event] = window_events(published, start=START + 24 * HOUR, end=START + 25 * HOUR, frequency=HOUR, max_periods=2)
    assert (event.start, event.end) == (START + 22 * HOUR, START + 26 * HOUR)
    assert event.cut_at_start and event.cut_at_end
    assert all(START + 22 * HOUR <= low and high <= START + 27 * HOUR for low, high in published.calls)
    assert AnomalyEvent.from_dict(event.to_dict()) == event
    # One remembered before the flags existed (the alert state) reads as never cut.
    old = {k: v for k, v in event.to_dict().items() if not k.startswith("cut_")}
    assert not AnomalyEvent.from_dict(old).cut_at_start
    # A window whose events end well inside it reads nothing beyond it.
    published.calls.clear()
    window_events(published, start=START + 25 * HOUR, end=START + 29 * HOUR, frequency=HOUR, max_gap=0)
    assert published.calls[0] == (START + 25 * HOUR, START + 29 * HOUR)


def _published_job(tmp_path, frame: pd.DataFrame, **alerts):
    from pipelines.config import parse_job
    from pipelines.sinks import ParquetSink

    job = parse_job(
        {
            "name": "web",
            "source": {"kind": "file", "path": str(tmp_path / "in.csv")},
            "timestamp": "timestamp",
            "frequency": "1h",
            "dimensions": ["region"],
            "features": ["requests", "latency_ms"],
            "model": {"kind": "seasonal_mad"},
            "outputs": {"parquet": str(tmp_path / "outputs")},
            "registry": str(tmp_path / "models"),
            "alerts": {"dashboard_url": "https://airflow.example.com", "email": {"to": ["oncall@example.com"]}, **alerts},
        }
    )
    end = START + 24 * HOUR
    ParquetSink(job.outputs.parquet).write(frame, job="web", dimensions=["region"], start=START.to_pydatetime(), end=end.to_pydatetime())
    return job


def test_published_events_are_built_from_the_features_alerts_watch(tmp_path):
    """The events API listed an incident built from every anomalous point while alerts, with
    ``alerts.features``, built it from the watched features' points only: latency at 04-05 then
    requests at 06-07 was one event 04:00-07:00 in the API and a 06:00 alert under another key, so
    a verdict on the listed event never reached the alert."""
    from pipelines.alerts import alertable
    from pipelines.events import published_events

    flagged = {4: {"latency_ms": 150}, 5: {"latency_ms": 150}, 6: {"requests": 180}, 7: {"requests": 160}}
    frame = pd.concat([output_rows(anomalies=flagged), output_rows("region=us", anomalies=flagged)], ignore_index=True)
    every = _published_job(tmp_path / "every", frame)
    assert [(e.series, e.start, e.end) for e in published_events(every)] == [
        (series, START + 4 * HOUR, START + 7 * HOUR) for series in ("region=eu", "region=us")
    ]

    watched = _published_job(tmp_path / "watched", frame, features=["requests"], series=["region=eu"])
    events = published_events(watched)
    alerted = anomaly_events(alertable(watched, frame), frequency=HOUR)
    eu = [e for e in events if e.series == "region=eu"]
    assert [e.key for e in eu] == [e.key for e in alerted] and [(e.start, e.end, e.rows) for e in eu] == [(START + 6 * HOUR, START + 7 * HOUR, 2)]
    # alerts.series chooses what is sent, not what happened: the other series' incident is listed, from the same features.
    assert [(e.series, e.start) for e in events if e.series != "region=eu"] == [("region=us", START + 6 * HOUR)]
    assert published_events(watched, series="region=us", start=(START + 5 * HOUR).to_pydatetime())[0].start == START + 6 * HOUR
