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


def _grid_offset(stamps: np.ndarray, step: int) -> int:
    """The grid's offset from the epoch grid (ns): that of every row when they all share one, else 0.

    Data stamped with one offset from the epoch grid (every 5 minutes at :04, :09, ...) keep
    their own timestamps: the grid is shifted by that offset rather than the rows moved.
    """
    phases = stamps % step
    return int(phases[0]) if (phases == phases[0]).all() else 0


def grid_buckets(index: pd.DatetimeIndex, frequency: timedelta) -> int:
    """How many buckets :func:`resample_series` makes of rows stamped ``index`` (first to last)."""
    if index.empty:
        return 0
    stamps, step = index.as_unit("ns").asi8, pd.Timedelta(frequency).value
    offset = _grid_offset(stamps, step)
    return int((stamps.max() - offset) // step - (stamps.min() - offset) // step) + 1


def resample_series(rows: pd.DataFrame, frequency: timedelta, rule: ResampleConfig) -> tuple[pd.DataFrame, ResampleStats]:
    """``rows`` (sorted UTC DatetimeIndex, float feature columns) on the ``frequency`` grid."""
    step = pd.Timedelta(frequency)
    if rows.empty:
        return rows, ResampleStats(0, 0, 0, 0, 0, 0)
    stamps = rows.index.as_unit("ns").asi8
    phases = stamps % step.value
    offset = _grid_offset(stamps, step.value)
    on_grid = phases == offset
    if on_grid.all() and (len(stamps) < 2 or (pd.Series(stamps).diff().iloc[1:] == step.value).all()):
        # Already one row per period without gaps: nothing to change, and no copy of large batches.
        return rows, ResampleStats(len(rows), len(rows), 0, 0, 0, 0)

    origin = pd.Timestamp(offset, tz="UTC")
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
    stats = ResampleStats(
        rows=len(rows),
        buckets=len(out),
        merged_rows=int(counts[counts > 1].sum()),
        moved_rows=int((~on_grid).sum()),
        filled=filled,
        missing=int(empty.sum()) - filled,
    )
    return out.astype("float64"), stats


__all__ = ["ResampleStats", "floor_to_grid", "grid_buckets", "resample_series"]
