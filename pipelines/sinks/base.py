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
        """Replace the rows of ``job`` in ``[start, end)`` by ``frame``.

        Every row of the job in the window goes, also those of series (or features) that ``frame``
        lacks: a series gone from the source has no rows in a rerun of the window, as it had none
        in the source, rather than the scores of an earlier run beside the new ones.
        """

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
    _refuse_guessed_values(frame, where)
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


def _refuse_guessed_values(frame: pd.DataFrame, where: str) -> None:
    """Refuse the values that :func:`pipelines.schema.conform` would store as a guess.

    It reads a time without a zone as UTC: a frame of local times (a source in Europe/Berlin) was
    stored an hour or two off, on the wrong day file, while the window itself must be
    timezone-aware (:func:`utc`). It casts ``is_anomaly`` with ``bool``: a missing flag (NaN) and
    the text "False" became True, an anomaly no detector found, alerted on.
    """

    def first(rows: pd.Series) -> str:
        row = frame[rows].iloc[0]
        return f"series {row.get('series')!r}, feature {row.get('feature')!r} at {row.get('timestamp')}"

    for column, kind in schema.OUTPUT_COLUMNS.items():
        if not kind.startswith("timestamp") or column not in frame.columns:
            continue
        values = frame[column]
        if pd.api.types.is_datetime64_dtype(values) and not isinstance(values.dtype, pd.DatetimeTZDtype):
            naive = values.notna()
        elif values.dtype == object:
            naive = values.map(lambda v: isinstance(v, datetime) and v.tzinfo is None).astype(bool)
        else:
            continue
        if naive.any():
            raise SinkError(
                f"{where}: {int(naive.sum())} of {len(frame)} rows have a {column} without a time zone (first: "
                f"{first(naive)}), which would be a guess; make the column timezone-aware (e.g. "
                f"tz_localize the source's zone, then tz_convert('UTC')); nothing was written"
            )
    if "is_anomaly" in frame.columns:
        flags = frame["is_anomaly"]
        wrong = flags.isna() | ~flags.isin([True, False])
        if wrong.any():
            shown = flags[wrong].iloc[0]
            raise SinkError(
                f"{where}: {int(wrong.sum())} of {len(frame)} rows have an is_anomaly that is not True or False (first: "
                f"{shown!r}, {first(wrong)}); label every row, True or False; nothing was written"
            )


def as_output(frame: pd.DataFrame) -> pd.DataFrame:
    """A frame read back from storage in the output schema; columns past the fixed ones are dimensions."""
    dimensions = [c for c in frame.columns if c not in schema.OUTPUT_COLUMNS]
    return schema.conform(frame, dimensions).sort_values(["series", "timestamp", "feature"], ignore_index=True)
