"""Anomaly events: consecutive anomalous timestamps of one series, seen as one incident.

The outputs hold one row per (series, timestamp, feature) (:mod:`pipelines.schema`). A person is
told about incidents, not points: an outage flagged for five hours is one event with a start, an
end, a peak and the signals that drove it. Alerts, the digest and the feedback API all speak of
events built here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import pandas as pd

from pipelines.schema import OUTPUT_COLUMNS

Direction = Literal["rise", "fall"]


@dataclass(frozen=True)
class FeatureAtPeak:
    """One feature of the series at the event's peak timestamp."""

    feature: str
    actual: float | None
    expected: float | None
    lower: float | None
    upper: float | None
    feature_score: float | None
    is_anomaly: bool

    @property
    def direction(self) -> Direction | None:
        if self.actual is None or self.expected is None:
            return None
        return "rise" if self.actual >= self.expected else "fall"


@dataclass(frozen=True)
class AnomalyEvent:
    """Consecutive anomalous timestamps of one series (gaps of at most ``max_gap`` periods).

    ``start`` and ``end`` are the first and the last anomalous timestamps (both inclusive);
    ``value_ranges`` holds, per feature, the least and the greatest actual value of the event's
    anomalous rows (what a person's "false alarm" verdict is matched against).
    """

    job: str
    series: str
    dimensions: dict[str, str]
    start: datetime
    end: datetime
    rows: int
    peak_score: float
    peak_timestamp: datetime
    direction: Direction
    model: str
    model_version: str
    at_peak: tuple[FeatureAtPeak, ...]
    top_features: tuple[str, ...]
    value_ranges: dict[str, tuple[float, float]] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """Stable identity: the same incident found again (a re-run) has the same key."""
        return f"{self.job}|{self.series}|{self.start.isoformat()}"

    @property
    def top_feature(self) -> str:
        return self.top_features[0] if self.top_features else self.at_peak[0].feature

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (timestamps as ISO 8601 strings)."""
        return {
            "key": self.key,
            "job": self.job,
            "series": self.series,
            "dimensions": dict(self.dimensions),
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "rows": self.rows,
            "peak_score": self.peak_score,
            "peak_timestamp": self.peak_timestamp.isoformat(),
            "direction": self.direction,
            "model": self.model,
            "model_version": self.model_version,
            "at_peak": [{**f.__dict__} for f in self.at_peak],
            "top_features": list(self.top_features),
            "value_ranges": {k: list(v) for k, v in self.value_ranges.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AnomalyEvent:
        """Inverse of :meth:`to_dict`."""
        return cls(
            job=data["job"],
            series=data["series"],
            dimensions=dict(data.get("dimensions") or {}),
            start=datetime.fromisoformat(data["start"]),
            end=datetime.fromisoformat(data["end"]),
            rows=int(data["rows"]),
            peak_score=float(data["peak_score"]),
            peak_timestamp=datetime.fromisoformat(data["peak_timestamp"]),
            direction=data["direction"],
            model=data["model"],
            model_version=data["model_version"],
            at_peak=tuple(FeatureAtPeak(**f) for f in data["at_peak"]),
            top_features=tuple(data["top_features"]),
            value_ranges={k: (float(v[0]), float(v[1])) for k, v in (data.get("value_ranges") or {}).items()},
        )


def _number(value: Any) -> float | None:
    if value is None or pd.isna(value):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _runs(timestamps: pd.Series, limit: timedelta) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """(first, last) of each run of sorted timestamps whose neighbours are at most ``limit`` apart."""
    ordered = timestamps.sort_values().reset_index(drop=True)
    breaks = ordered.diff() > pd.Timedelta(limit)
    run_id = breaks.cumsum()
    return [(group.iloc[0], group.iloc[-1]) for _, group in ordered.groupby(run_id, sort=True)]


def _event(series_rows: pd.DataFrame, first: pd.Timestamp, last: pd.Timestamp, dimensions: list[str]) -> AnomalyEvent:
    inside = series_rows[(series_rows["timestamp"] >= first) & (series_rows["timestamp"] <= last)]
    flagged = inside[inside["is_anomaly"]]
    # The peak is the strongest anomalous row; ties go to the earliest, so a re-run picks the same.
    peak_row = flagged.sort_values(["score", "timestamp"], ascending=[False, True], kind="stable").iloc[0]
    peak_ts = peak_row["timestamp"]
    at_peak_rows = inside[inside["timestamp"] == peak_ts].sort_values(
        ["feature_score", "feature"], ascending=[False, True], kind="stable", na_position="last"
    )
    at_peak = tuple(
        FeatureAtPeak(
            feature=str(row.feature),
            actual=_number(row.value),
            expected=_number(row.expected),
            lower=_number(row.lower),
            upper=_number(row.upper),
            feature_score=_number(row.feature_score),
            is_anomaly=bool(row.is_anomaly),
        )
        for row in at_peak_rows.itertuples(index=False)
    )
    # Contribution over the whole event, not the peak alone: a signal that drove most of an
    # incident comes first even if another one spiked at its peak.
    contribution = flagged.groupby("feature")["feature_score"].mean().fillna(0.0)
    top = tuple(
        str(f) for f, share in sorted(contribution.items(), key=lambda item: (-item[1], item[0])) if share > 0
    ) or tuple(f.feature for f in at_peak if f.is_anomaly)
    leading = next((f for f in at_peak if f.feature == top[0]), at_peak[0]) if top else at_peak[0]
    values = flagged.dropna(subset=["value"]).groupby("feature")["value"].agg(["min", "max"])
    return AnomalyEvent(
        job=str(peak_row["job"]),
        series=str(peak_row["series"]),
        dimensions={d: str(peak_row[d]) for d in dimensions if not pd.isna(peak_row[d])},
        start=first.to_pydatetime(),
        end=last.to_pydatetime(),
        rows=int(flagged["timestamp"].nunique()),
        peak_score=float(peak_row["score"]),
        peak_timestamp=peak_ts.to_pydatetime(),
        direction=leading.direction or "rise",
        model=str(peak_row["model"]),
        model_version=str(peak_row["model_version"]),
        at_peak=at_peak,
        top_features=top,
        value_ranges={str(f): (float(r["min"]), float(r["max"])) for f, r in values.iterrows()},
    )


def anomaly_events(frame: pd.DataFrame, *, frequency: timedelta, max_gap: int = 1) -> list[AnomalyEvent]:
    """Group the anomalous timestamps of each series of ``frame`` into events.

    ``frame`` holds rows of the output schema (any dimension columns after them). Anomalous
    timestamps of one series at most ``max_gap`` normal periods of ``frequency`` apart belong to
    one event (``max_gap=0``: only directly consecutive timestamps). Events come sorted by
    series, then start.
    """
    if max_gap < 0:
        raise ValueError(f"max_gap must be 0 or more periods, got {max_gap}")
    if frame.empty or not frame["is_anomaly"].any():
        return []
    dimensions = [c for c in frame.columns if c not in OUTPUT_COLUMNS]
    frame = frame.assign(timestamp=pd.to_datetime(frame["timestamp"], utc=True))
    limit = frequency * (max_gap + 1)
    events = []
    for _, rows in frame.groupby("series", sort=True):
        flagged_times = rows.loc[rows["is_anomaly"].astype(bool), "timestamp"].drop_duplicates()
        if flagged_times.empty:
            continue
        rows = rows.assign(is_anomaly=rows["is_anomaly"].astype(bool))
        events.extend(_event(rows, first, last, dimensions) for first, last in _runs(flagged_times, limit))
    return events


__all__ = ["AnomalyEvent", "Direction", "FeatureAtPeak", "anomaly_events"]
