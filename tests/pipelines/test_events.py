"""Grouping anomalous points of the outputs into events (pipelines/events.py)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pandas as pd
import pytest

from pipelines.events import AnomalyEvent, anomaly_events
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
