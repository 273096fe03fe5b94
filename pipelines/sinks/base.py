"""What every sink shares: the protocol, and the checks that make a replace of a window safe."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

import pandas as pd

from pipelines import schema
from pipelines.errors import SinkError


class Sink(Protocol):
    def write(
        self, frame: pd.DataFrame, *, job: str, dimensions: list[str], start: datetime, end: datetime
    ) -> object:
        """Replace the rows of ``job`` in ``[start, end)`` by ``frame``."""

    def read(self, *, job: str, start: datetime | None = None, end: datetime | None = None) -> pd.DataFrame:
        """Rows of ``job`` in ``[start, end)`` (unbounded where ``None``), in the output schema."""


def utc(moment: datetime) -> pd.Timestamp:
    """``moment`` as a UTC timestamp; a naive time is refused, since its zone would be a guess."""
    stamp = pd.Timestamp(moment)
    if stamp.tzinfo is None:
        raise ValueError(f"{moment} has no time zone; pass a timezone-aware datetime (UTC)")
    return stamp.tz_convert("UTC")


def checked_batch(
    frame: pd.DataFrame, *, job: str, dimensions: list[str], start: datetime, end: datetime
) -> tuple[pd.DataFrame, pd.Timestamp, pd.Timestamp]:
    """``frame`` in the output schema with the window as UTC timestamps.

    Every row must belong to ``job`` and to ``[start, end)``: a rerun only removes the window's
    rows of the job, so any other row would be written once more by each rerun.
    """
    start, end = utc(start), utc(end)
    where = f"job {job!r}, window [{start}, {end})"
    if start >= end:
        raise SinkError(f"{where}: the window is empty; start must come before end")
    try:
        frame = schema.conform(frame, dimensions)
    except ValueError as exc:
        raise SinkError(f"{where}: {exc}; build the frame with pipelines.schema.conform") from exc
    # Parquet takes a row without a key, which the BigQuery table (REQUIRED) then refuses after
    # the day files were replaced, naming no row: the outputs disagree at every retry.
    for column in ("series", "timestamp", "feature"):
        missing = frame[column].isna()
        if missing.any():
            first = frame[missing].iloc[0]
            raise SinkError(
                f"{where}: {int(missing.sum())} of {len(frame)} rows have no {column} (first: series {first['series']!r}, "
                f"feature {first['feature']!r} at {first['timestamp']}); every output row needs a series, a timestamp "
                "and a feature: drop or fix those rows; nothing was written"
            )
    # The key of an output row: the tables have no unique constraint, so a row given twice was
    # stored twice, and counted twice by every reader, until the window was replaced.
    repeated = frame.duplicated(["series", "timestamp", "feature"], keep=False)
    if repeated.any():
        first = frame[repeated].iloc[0]
        raise SinkError(
            f"{where}: {int(repeated.sum())} of {len(frame)} rows share their series, timestamp and feature with another "
            f"(first: series {first['series']!r}, feature {first['feature']!r} at {first['timestamp']}); each key may "
            "appear once: drop the repeated rows (or publish each series' scores once); nothing was written"
        )
    inside = frame["job"].eq(job).fillna(False) & frame["timestamp"].ge(start) & frame["timestamp"].lt(end)
    stray = frame[~inside]
    if len(stray):
        raise SinkError(
            f"{where}: {len(stray)} of {len(frame)} rows belong to another job or lie outside the window "
            f"(first: job {stray['job'].iloc[0]!r} at {stray['timestamp'].iloc[0]}); "
            "write each job and window separately"
        )
    return frame, start, end


def as_output(frame: pd.DataFrame) -> pd.DataFrame:
    """A frame read back from storage in the output schema; columns past the fixed ones are dimensions."""
    dimensions = [c for c in frame.columns if c not in schema.OUTPUT_COLUMNS]
    return schema.conform(frame, dimensions).sort_values(["series", "timestamp", "feature"], ignore_index=True)
