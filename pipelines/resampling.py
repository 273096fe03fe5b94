"""Put each series on the job's ``frequency`` grid, by the job's documented ``resample`` rule.

The detectors count their windows in rows (``level_window``, ``window``, the lookback read
before a prediction window), so a row must mean one period of ``frequency``: irregular
timestamps, several rows in one period and gaps are resolved here, after validation and before
training or scoring, and never silently: every run logs the counts per series and returns them.

Buckets are ``[k * frequency, (k + 1) * frequency)`` counted from the Unix epoch (1970-01-01
00:00 UTC, a Thursday for weekly frequencies), labelled by their start — except when every row of
the series has the same offset from that grid (5-minute data stamped at :04, :09, ...): the grid
is then shifted by the offset, so regular data keep their own timestamps. Only buckets between a
series' first and last rows exist: nothing is invented before or after the data.

A ``frequency`` of whole days keeps UTC buckets (the windows runs read are floored to them), but
a bucket whose rows all carry one timestamp is labelled by it, and an empty bucket takes the time
of day of the last bucket with rows: data stamped at a local midnight (05:00Z in New York's
winter, 04:00Z in its summer) keep their own timestamps across a daylight-saving change, the same
in every run, instead of moving to 00:00Z whenever a run's rows happen to straddle the change.
Rows a whole number of periods apart give or take a daylight-saving shift (an hour) are one
period each even when two share a UTC day: London's midnight is 00:00Z in winter and 23:00Z in
summer, so its two local days either side of the spring change fell in one UTC day (merged,
one day's value lost) and the autumn change left a UTC day empty (a day invented an hour before
the next). Rows of a frequency of 4 hours or more that follow a local clock that way are
labelled by their own timestamps too: 12-hourly rows at New York's 00:00 and 12:00 all moved to
00:00Z and 12:00Z whenever a run's rows straddled a change.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from pipelines.config import ResampleConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ResampleStats:
    """What resampling did to one series.

    ``merged_rows``: rows that shared a bucket with at least one other row (combined into one
    by the aggregate); ``moved_rows``: rows whose timestamp was not a bucket start (relabelled to
    their bucket's start); ``filled``: empty buckets forward-filled (at least one feature took a
    value; a feature missing in the bucket filled from stays missing); ``missing``: empty buckets
    left missing.
    """

    rows: int
    buckets: int
    merged_rows: int
    moved_rows: int
    filled: int
    missing: int

    @property
    def changed(self) -> bool:
        return bool(self.merged_rows or self.moved_rows or self.filled or self.missing)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def describe(self) -> str:
        return (
            f"{self.rows} rows -> {self.buckets} buckets: {self.merged_rows} rows merged into shared buckets, "
            f"{self.moved_rows} moved to their bucket start, {self.filled} empty buckets forward-filled, "
            f"{self.missing} left missing"
        )


def floor_to_grid(moment: datetime, frequency: timedelta) -> datetime:
    """The start of the epoch-aligned bucket of ``frequency`` holding ``moment`` (UTC-aware)."""
    stamp = pd.Timestamp(moment).tz_convert("UTC").as_unit("ns")
    step = pd.Timedelta(frequency).value
    return pd.Timestamp(stamp.value - stamp.value % step, tz="UTC").to_pydatetime()


#: One day in nanoseconds: frequencies that are a multiple of it label their buckets by the rows' own
#: time of day (see the module docstring).
_DAY = pd.Timedelta(days=1).value


def _whole_days(step: int) -> bool:
    return step % _DAY == 0


def _grid_offset(stamps: np.ndarray, step: int) -> int:
    """The grid's offset from the epoch grid (ns): that of every row when they all share one, else 0.

    Data stamped with one offset from the epoch grid (every 5 minutes at :04, :09, ...) keep
    their own timestamps: the grid is shifted by that offset rather than the rows moved.
    """
    phases = stamps % step
    return int(phases[0]) if (phases == phases[0]).all() else 0


#: Most a day's rows move when the clocks change (an hour; Lord Howe Island's half hour is less).
_DST_SHIFT = pd.Timedelta(hours=1).value
#: Shortest frequency whose rows may follow a local clock: a shift of an hour is then at most a
#: quarter of a period, not to be mistaken for rows of another period (a gap of 2h at 3h).
_CLOCK_STEP = 4 * _DST_SHIFT


def _clock_buckets(stamps: np.ndarray, step: int) -> np.ndarray | None:
    """The bucket number of each row (sorted ns stamps) when every row follows the one before it by
    a whole number of periods give or take a daylight-saving shift (or shares its timestamp): rows
    of a local clock, one period each counted from the first, whatever UTC grid they fall on (see
    the module docstring); else None."""
    if len(stamps) < 2:
        return stamps // step
    gaps = np.diff(stamps)
    periods = (gaps + step // 2) // step
    if not ((gaps == 0) | ((periods >= 1) & (np.abs(gaps - periods * step) <= _DST_SHIFT))).all():
        return None
    return stamps[0] // step + np.r_[0, np.cumsum(periods)]


def _labelled_buckets(stamps: np.ndarray, step: int) -> np.ndarray | None:
    """The bucket number of each row (sorted ns stamps) when rows are labelled by their own
    timestamps, else None (one grid offset for the series): under whole days (:func:`_clock_buckets`
    when the rows follow a local clock, else their UTC day), or a frequency of several hours whose
    rows follow a local clock (12-hourly data at New York's 00:00 and 12:00 are at 05:00Z and 17:00Z,
    then 04:00Z and 16:00Z: a run whose rows straddled the change moved every row to 00:00Z and
    12:00Z, one on either side kept them)."""
    if not _whole_days(step) and step < _CLOCK_STEP:
        return None
    clock = _clock_buckets(stamps, step)
    if clock is None and _whole_days(step):
        return stamps // step
    return clock


def grid_buckets(index: pd.DatetimeIndex, frequency: timedelta) -> int:
    """How many buckets :func:`resample_series` makes of rows stamped ``index`` (first to last)."""
    if index.empty:
        return 0
    stamps, step = index.as_unit("ns").asi8, pd.Timedelta(frequency).value
    buckets = _labelled_buckets(np.sort(stamps), step)
    if buckets is not None:
        return int(buckets[-1] - buckets[0]) + 1
    offset = _grid_offset(stamps, step)
    return int((stamps.max() - offset) // step - (stamps.min() - offset) // step) + 1


def resample_series(rows: pd.DataFrame, frequency: timedelta, rule: ResampleConfig) -> tuple[pd.DataFrame, ResampleStats]:
    """``rows`` (sorted UTC DatetimeIndex, float feature columns) on the ``frequency`` grid."""
    step = pd.Timedelta(frequency)
    if rows.empty:
        return rows, ResampleStats(0, 0, 0, 0, 0, 0)
    stamps = rows.index.as_unit("ns").asi8
    buckets = _labelled_buckets(stamps, step.value)
    if buckets is not None:
        return _resample_days(rows, stamps, buckets, step, rule)
    phases = stamps % step.value
    offset = _grid_offset(stamps, step.value)
    on_grid = phases == offset
    if on_grid.all() and (len(stamps) < 2 or (pd.Series(stamps).diff().iloc[1:] == step.value).all()):
        # Already one row per period without gaps: nothing to change, and no copy of large batches.
        return rows, ResampleStats(len(rows), len(rows), 0, 0, 0, 0)

    out, counts, filled = _aggregate(rows, step, pd.Timestamp(offset, tz="UTC"), rule)
    stats = ResampleStats(
        rows=len(rows),
        buckets=len(out),
        merged_rows=int(counts[counts > 1].sum()),
        moved_rows=int((~on_grid).sum()),
        filled=filled,
        missing=int((counts == 0).sum()) - filled,
    )
    return out.astype("float64"), stats


def _resample_days(
    rows: pd.DataFrame, stamps: np.ndarray, index: np.ndarray, step: pd.Timedelta, rule: ResampleConfig
) -> tuple[pd.DataFrame, ResampleStats]:
    """:func:`resample_series` for a frequency of whole days or rows of a local clock, each row in
    its bucket ``index`` (:func:`_labelled_buckets`): buckets labelled by their rows' own time.

    A daily series stamped at a zone's local midnight has two times of day, an hour apart, on
    either side of a daylight-saving change. Shifting the grid by one shared offset (as for
    sub-daily data) then depends on whether a run's rows straddle the change, so the same day
    was published at 05:00Z by one run and 00:00Z by the next. Labelling each bucket by its rows'
    timestamp when they all carry one keeps every day's stamp whatever the window, and the
    buckets stay those the windows are floored to, so a label never leaves its run's window.
    """
    if len(index) < 2 or (np.diff(index) == 1).all():
        # One row per bucket without gaps: every row keeps its timestamp, nothing to change.
        return rows, ResampleStats(len(rows), len(rows), 0, 0, 0, 0)
    # Aggregated on the bucket numbers (UTC days, or periods counted from a first row that
    # follows a daylight-saving clock), then labelled.
    buckets = pd.DatetimeIndex(index * step.value, tz="UTC", name=rows.index.name)
    out, counts, filled = _aggregate(rows.set_axis(buckets), step, pd.Timestamp(0, tz="UTC"), rule)
    position = index - index[0]  # of each row's bucket in ``out`` (the rows are sorted)
    starts = out.index.as_unit("ns").asi8
    held, first = np.unique(position, return_index=True)
    last = len(position) - 1 - np.unique(position[::-1], return_index=True)[1]
    # A bucket whose rows share one timestamp is labelled by it, else (rows merged) by its start;
    # an empty bucket takes the time of day of the last bucket with rows, so a missing local day
    # sits at the local midnight of the day before it. Integers throughout: a float cannot hold a
    # nanosecond timestamp exactly.
    own = np.zeros(len(out), dtype="int64")
    own[held] = np.where(stamps[first] == stamps[last], stamps[first], starts[held])
    has_rows = np.zeros(len(out), dtype=bool)
    has_rows[held] = True
    source = np.maximum.accumulate(np.where(has_rows, np.arange(len(out)), 0))
    labels = own[source] + (np.arange(len(out)) - source) * step.value
    out = out.set_axis(pd.DatetimeIndex(labels, tz="UTC", name=rows.index.name).as_unit(rows.index.unit))
    stats = ResampleStats(
        rows=len(rows),
        buckets=len(out),
        merged_rows=int(counts[counts > 1].sum()),
        moved_rows=int((stamps != labels[position]).sum()),
        filled=filled,
        missing=int((counts == 0).sum()) - filled,
    )
    return out.astype("float64"), stats


def _aggregate(rows: pd.DataFrame, step: pd.Timedelta, origin: pd.Timestamp, rule: ResampleConfig) -> tuple[pd.DataFrame, pd.Series, int]:
    """``rows`` in buckets of ``step`` from ``origin`` labelled by their starts, combined and filled
    by ``rule``; with the rows per bucket and the number of empty buckets forward-filled."""
    buckets = rows.resample(step, origin=origin, closed="left", label="left")
    counts = buckets.size()
    if rule.aggregate == "sum":
        # An empty bucket summed is 0, which would read as a measured zero: keep it missing.
        out = buckets.sum(min_count=1)
    else:
        out = buckets.agg(rule.aggregate)
    empty = (counts == 0).to_numpy()
    filled = 0
    if rule.fill == "ffill" and empty.any():
        # An empty bucket takes the last bucket with rows as it is, a value missing there included:
        # pandas' ffill would reach across a value the source reported missing and repeat the one
        # before it, a measurement nobody made for that time. Only empty buckets are filled: a value
        # missing in the source stays missing (validation decided how many of those are acceptable).
        position = np.arange(len(out))
        # The first bucket always has rows (buckets start at the series' first row).
        last = pd.Series(np.where(empty, np.nan, position)).ffill().to_numpy(dtype="int64")
        reach = position - last  # 1 for the first empty bucket after rows, 2 for the next...
        fill = empty & (reach <= (rule.ffill_limit or len(out)))
        forward = out.iloc[last].set_axis(out.index)
        out = out.where(pd.Series(~fill, index=out.index), forward, axis=0)
        filled = int((fill & out.notna().any(axis=1).to_numpy()).sum())
    return out, counts, filled


__all__ = ["ResampleStats", "floor_to_grid", "grid_buckets", "resample_series"]
