"""Anomaly events: consecutive anomalous timestamps of one series, seen as one incident.

The outputs hold one row per (series, timestamp, feature) (:mod:`pipelines.schema`). A person is
told about incidents, not points: an outage flagged for five hours is one event with a start, an
end, a peak and the signals that drove it. Alerts, the digest and the feedback API all speak of
events built here.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import pandas as pd

from pipelines.schema import OUTPUT_COLUMNS

if TYPE_CHECKING:
    from pipelines.config import JobConfig

Direction = Literal["rise", "fall"]

#: Most periods :func:`window_events` reads beyond each edge of a window to find where an event
#: overlapping it begins or ends. Without a bound, a series flagged for months (a dead sensor, a
#: level shift the model never learned) would make every listing read its whole history; 10,000
#: periods is more than a year of hourly data and a week of minutes, longer than any incident a
#: person looks at as one. An event still going on there says so (``cut_at_start``/``cut_at_end``).
MAX_EXTENSION_PERIODS = 10_000

#: Reads the published rows with timestamps in ``[start, end)`` (``None``: unbounded).
RowReader = Callable[[datetime | None, datetime | None], pd.DataFrame]


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
    anomalous rows (what a person's "false alarm" verdict is matched against). ``cut_at_start``
    (``cut_at_end``): the run of anomalous rows goes on before ``start`` (after ``end``) beyond
    what was read, so ``start`` (``end``) is where reading stopped, not where the incident did
    (:func:`window_events` reads at most :data:`MAX_EXTENSION_PERIODS` beyond a window).
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
    cut_at_start: bool = False
    cut_at_end: bool = False

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
            "cut_at_start": self.cut_at_start,
            "cut_at_end": self.cut_at_end,
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
            # Events remembered (alert state) before these flags existed were never cut.
            cut_at_start=bool(data.get("cut_at_start", False)),
            cut_at_end=bool(data.get("cut_at_end", False)),
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


def _edge_series(
    frame: pd.DataFrame,
    limit: timedelta,
    *,
    low: datetime | None,
    high: datetime | None,
    start: datetime | None,
    end: datetime | None,
) -> tuple[set[str], set[str]]:
    """Series whose run of anomalous rows overlapping ``[start, end)`` may go on before ``low``
    (first set) or from ``high`` on (second set): an anomalous row there would join it."""
    before: set[str] = set()
    after: set[str] = set()
    flagged = frame.loc[frame["is_anomaly"].astype(bool), ["series", "timestamp"]]
    flagged = flagged.assign(timestamp=pd.to_datetime(flagged["timestamp"], utc=True))

    def in_window(run: tuple[pd.Timestamp, pd.Timestamp]) -> bool:
        # A run wholly in what was read beyond the window is not listed: no need to read on for it.
        return (start is None or run[1] >= start) and (end is None or run[0] < end)

    for series, times in flagged.groupby("series", sort=True)["timestamp"]:
        runs = _runs(times.drop_duplicates(), limit)
        first, last = runs[0], runs[-1]
        if low is not None and in_window(first) and first[0] - limit < low:
            before.add(str(series))
        if high is not None and in_window(last) and last[1] + limit >= high:
            after.add(str(series))
    return before, after


def window_events(
    read: RowReader,
    *,
    start: datetime | None,
    end: datetime | None,
    frequency: timedelta,
    max_gap: int = 1,
    max_periods: int = MAX_EXTENSION_PERIODS,
) -> list[AnomalyEvent]:
    """The events (as :func:`anomaly_events` groups them) overlapping ``[start, end)``, each whole.

    An event straddling an edge of the window is read on beyond it until its run of anomalous
    rows ends (no anomalous row within ``max_gap`` periods), at most ``max_periods`` periods beyond
    each edge; one still going on there is marked ``cut_at_start``/``cut_at_end``. So the same
    incident has the same start, end, peak, rows, signals and :attr:`AnomalyEvent.key` whatever
    the window (a label, kept by the event's span, stays with it), and two adjoining windows list
    it once each, identically, instead of as two events. ``read(low, high)`` gives the published
    rows in ``[low, high)``, of the series wanted only.
    """
    if max_gap < 0:
        raise ValueError(f"max_gap must be 0 or more periods, got {max_gap}")
    frame = read(start, end)
    if frame.empty or not frame["is_anomaly"].any():
        return []
    limit = frequency * (max_gap + 1)
    cap = frequency * max_periods
    low, high = start, end
    before, after = _edge_series(frame, limit, low=low, high=high, start=start, end=end)
    # Read outwards in growing steps: most events end a few periods past the edge, a few go on
    # for days, and each read opens the day files of its range.
    step = limit * 8
    while True:
        grow_before = bool(before) and start is not None and low is not None and start - low < cap
        grow_after = bool(after) and end is not None and high is not None and high - end < cap
        if not (grow_before or grow_after):
            break  # every run ends inside what was read, or the cap is reached
        parts = [frame]
        if grow_before:
            new_low = max(low - step, start - cap)
            rows = read(new_low, low)
            parts.append(rows[rows["series"].isin(before)])
            low = new_low
        if grow_after:
            new_high = min(high + step, end + cap)
            rows = read(high, new_high)
            parts.append(rows[rows["series"].isin(after)])
            high = new_high
        parts = [part for part in parts if not part.empty]
        frame = pd.concat(parts, ignore_index=True) if len(parts) > 1 else parts[0]
        step *= 2
        before, after = _edge_series(frame, limit, low=low, high=high, start=start, end=end)
    events = []
    for event in anomaly_events(frame, frequency=frequency, max_gap=max_gap):
        if (start is not None and event.end < start) or (end is not None and event.start >= end):
            continue  # wholly in what was read beyond the window
        events.append(
            replace(
                event,
                cut_at_start=event.series in before and low is not None and event.start - limit < low,
                cut_at_end=event.series in after and high is not None and event.end + limit >= high,
            )
        )
    return events


def watched(job: JobConfig, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``is_anomaly`` kept where the job's ``alerts.features`` allow, by the rule alerts
    use (:func:`pipelines.alerts.alertable`): a timestamp stays anomalous only when a watched feature
    drove it. Every series is kept: ``alerts.series`` chooses what is sent, not what happened, and a
    verdict on any series is read by training and tuning.
    """
    alerts = getattr(job, "alerts", None)
    if alerts is None or not alerts.features:
        return frame
    from pipelines.alerts import alertable

    return alertable(job.model_copy(update={"alerts": alerts.model_copy(update={"series": []})}), frame)


def published_events(
    job: JobConfig, *, series: str | None = None, start: datetime | None = None, end: datetime | None = None
) -> list[AnomalyEvent]:
    """Events of the job's published output overlapping ``[start, end)`` (unbounded where None), each
    whole, built as alerts build them: grouped by ``alerts.max_gap`` and from the points the
    ``alerts.features`` drove (:func:`watched`). Built from every anomalous point instead, an event
    the alert told as 06:00-07:00 was listed as 05:00-08:00 under another key, and a label given on
    it never reached the alert (nor the event alerts never sent about, on an unwatched feature).
    """
    from pipelines.config import resolve_path
    from pipelines.sinks.parquet import ParquetSink

    sink = ParquetSink(resolve_path(job.outputs.parquet), job.outputs.storage_options)

    def read(low: datetime | None, high: datetime | None) -> pd.DataFrame:
        rows = sink.read(job=job.name, start=low, end=high)
        return watched(job, rows if series is None else rows[rows["series"] == series])

    alerts = getattr(job, "alerts", None)
    max_gap = alerts.max_gap if alerts is not None else 1
    return window_events(read, start=start, end=end, frequency=job.frequency, max_gap=max_gap)


__all__ = [
    "MAX_EXTENSION_PERIODS",
    "AnomalyEvent",
    "Direction",
    "FeatureAtPeak",
    "RowReader",
    "anomaly_events",
    "published_events",
    "watched",
    "window_events",
]
