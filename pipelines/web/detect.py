"""Synchronous detection on points sent to the API, with the job's champion models.

The same steps as a predict run, on an in-memory batch: the job's validation (built-in checks
and its suite), :func:`~pipelines.extraction.prepare`, each series resampled to the job's grid,
its champion, and :func:`~pipelines.scoring.labeled_frame` for the output schema. Nothing is
written.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd

from pipelines.config import JobConfig, resolve_path
from pipelines.errors import DataValidationError, ModelError
from pipelines.extraction import prepare, series_groups
from pipelines.resampling import grid_buckets, resample_series
from pipelines.scoring import labeled_frame
from pipelines.sources.base import SUPPORTED_YEARS, DayFirstDates, parse_timestamps
from pipelines.training import load_champion
from pipelines.validation import validate_batch
from pipelines.web.schemas import MAX_DETECT_POINTS
from pipelines.workspace import Window

log = logging.getLogger(__name__)

_SHOWN = 5  # rows or names quoted in an error message; the count says how many more there are
_QUOTED_CHARS = 60  # of one name or value quoted in an error message
#: Of a dimension value: a name (a region, a host), far longer than any.
_LONGEST_DIMENSION = 10_000


class TooManyPoints(DataValidationError):
    """The points' series, on the job's grid, hold more data points than one call may score."""


def _listing(items: list[Any]) -> str:
    shown = ", ".join(map(str, items[:_SHOWN]))
    return shown + (f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")


def _quoted(value: Any) -> str:
    """``repr(value)``, cut short: a 16 MiB key or text value was echoed whole into the 422."""
    if isinstance(value, str) and len(value) > _QUOTED_CHARS:
        return f"{value[:_QUOTED_CHARS]!r}... ({len(value):,} characters)"
    return repr(value)


def points_of(job: JobConfig, rows: int) -> int:
    """Data points in ``rows`` rows, as OCI counts them: timestamps x signals (the job's features)."""
    return rows * len(job.features)


def check_columns(job: JobConfig, records: list[dict[str, Any]]) -> None:
    """Every record must have exactly the job's columns; the error names the others and the rows."""
    expected = set(job.columns)
    unknown: dict[str, list[int]] = {}
    missing: dict[str, list[int]] = {}
    for row, record in enumerate(records):
        if record.keys() == expected:
            continue
        for name in record.keys() - expected:
            unknown.setdefault(name, []).append(row)
        for name in expected - record.keys():
            missing.setdefault(name, []).append(row)
    problems = [
        f"unknown column {_quoted(name)} in points {_listing(rows)}" for name, rows in sorted(unknown.items())
    ] + [f"missing column {name!r} in points {_listing(rows)}" for name, rows in sorted(missing.items())]
    if problems:
        # Capped like the rows: points with 200,000 keys of their own made a 7 MB error message.
        more = f"; and {len(problems) - _SHOWN} more unknown or missing columns" if len(problems) > _SHOWN else ""
        raise DataValidationError(
            f"job {job.name}: the points do not have the job's columns: {'; '.join(problems[:_SHOWN])}{more}. "
            f"Each point needs exactly {', '.join(job.columns)} (timestamp {job.timestamp!r}, "
            f"dimensions {job.dimensions or 'none'}, features {job.features}); points are numbered from 0."
        )


def check_feature_types(job: JobConfig, records: list[dict[str, Any]]) -> None:
    """Features are JSON numbers or null: text ("2400", "NaN") is refused here, naming the points,
    rather than converted (or reported by the suite as an error about mixed types)."""
    problems = []
    for name in job.features:
        rows = [row for row, record in enumerate(records) if isinstance(record[name], str)]
        if rows:
            shown = _listing([_quoted(records[row][name]) for row in rows])
            problems.append(f"column {name!r}: text where a number (or null) belongs, e.g. {shown} in points {_listing(rows)}")
    if problems:
        raise DataValidationError(f"job {job.name}: {'; '.join(problems)}. Send features as JSON numbers, e.g. 2400 or 120.5.")


def check_dimension_lengths(job: JobConfig, records: list[dict[str, Any]]) -> None:
    """Dimension values are names: one far longer than any is refused here, quoted short, instead of
    being echoed whole by the suite (a 16 MiB value made a 32 MiB answer and took ~300 MB of the api-server)."""
    problems = []
    for name in job.dimensions:
        rows = [row for row, record in enumerate(records) if isinstance(record[name], str) and len(record[name]) > _LONGEST_DIMENSION]
        if rows:
            shown = _listing([_quoted(records[row][name]) for row in rows])
            problems.append(f"column {name!r}: values longer than {_LONGEST_DIMENSION:,} characters, e.g. {shown} in points {_listing(rows)}")
    if problems:
        raise DataValidationError(f"job {job.name}: {'; '.join(problems)}. Send the dimension values the job's series are named by.")


def _parsed_times(job: JobConfig, values: pd.Series) -> pd.Series:
    """The timestamps parsed as files' are (:func:`parse_timestamps`), or an error naming the bad ones.

    Parsed here, vectorised, rather than by the validation suite's per-value dateutil check,
    which takes seconds for 30,000 points; missing timestamps stay NaT for the suite to report.
    """
    try:
        # text too long for a time is unparseable, unread
        parsed = parse_timestamps(values, job.timestamp_format, refuse_day_first=True)
    except DayFirstDates as exc:
        raise DataValidationError(
            f"job {job.name}: column {job.timestamp!r}, point {values.index[exc.position]}: {exc}. Send ISO 8601 "
            "(e.g. 2024-03-03T14:00:00Z), or set the job's timestamp_format to how the dates are written."
        ) from exc
    except ValueError as exc:  # it refuses to guess the zone of naive times among aware ones
        raise DataValidationError(
            f"job {job.name}: column {job.timestamp!r}: {exc}. Send every timestamp with its offset "
            "(e.g. 2024-03-03T14:00:00Z) or every one without (then taken as UTC)."
        ) from exc
    bad = parsed.isna() & values.notna()
    if bad.any():
        rows = list(values.index[bad])
        raise DataValidationError(
            f"job {job.name}: column {job.timestamp!r}: {len(rows)} timestamps are not "
            + (f"written as the job's timestamp_format {job.timestamp_format!r}" if job.timestamp_format else "ISO 8601 date-times")
            + f", e.g. {_listing([_quoted(value) for value in values[bad].tolist()])} in points {_listing(rows)}. "
            + ("Send them in that form." if job.timestamp_format else "Send text such as 2024-03-03T14:00:00Z (naive times are taken as UTC).")
        )
    first, last = SUPPORTED_YEARS
    far = parsed.notna() & ~parsed.dt.year.between(first, last)
    if far.any():
        rows = list(values.index[far])
        raise DataValidationError(
            f"job {job.name}: column {job.timestamp!r}: {len(rows)} timestamps are out of range, "
            f"e.g. {_listing([_quoted(values[row]) for row in rows])} in points {_listing(rows)}; use dates between {first} and {last}."
        )
    return parsed


def _check_grid_size(job: JobConfig, groups: list[tuple[str, dict[str, str], pd.DataFrame]]) -> None:
    """Each series is scored on the job's grid from its first point to its last: two points a
    year apart are 8,760 hourly rows. The call's limit counts those rows, not the points sent."""
    buckets = {key: grid_buckets(rows.index, job.frequency) for key, _, rows in groups}
    points = points_of(job, sum(buckets.values()))
    if points > MAX_DETECT_POINTS:
        widest = max(buckets, key=buckets.__getitem__)
        raise TooManyPoints(
            f"job {job.name}: on the job's {job.frequency} grid the points span {sum(buckets.values()):,} rows x "
            f"{len(job.features)} features = {points:,} data points (series {widest} alone {buckets[widest]:,} rows), "
            f"more than the {MAX_DETECT_POINTS:,} one call may score. Send points closer together, or score the "
            f"whole file with a one-off scoring run: POST /api/v1/jobs/{job.name}/score-file (a run of the "
            f"{job.name}__score DAG with the file as its input)."
        )


@dataclass(frozen=True)
class Detected:
    frame: pd.DataFrame
    versions: dict[str, str]
    resampling: dict[str, dict[str, int]]


def detect_points(job: JobConfig, records: list[dict[str, Any]], *, run_id: str) -> Detected:
    """Validate ``records`` like a batch of the job and score each series with its champion.

    Raises :class:`DataValidationError` for bad points and :class:`ModelError` when a series has
    no champion; the rows of each series are scored without earlier history, so its first
    ``lookback`` points have only the points before them in the call as context.
    """
    check_columns(job, records)
    check_feature_types(job, records)
    check_dimension_lengths(job, records)
    raw = pd.DataFrame.from_records(records, columns=job.columns)
    raw[job.timestamp] = _parsed_times(job, raw[job.timestamp])
    # A single request is a batch of any size: the job's min_rows is about scheduled windows.
    checked = job.model_copy(update={"validation": job.validation.model_copy(update={"min_rows": 1})})
    suite = resolve_path(job.validation.suite) if job.validation.suite else None
    report = validate_batch(raw, checked, suite_path=suite)
    if not report.success:
        raise DataValidationError(
            f"{report.summary()}\nPoints are numbered from 0; fix them and send the call again.", report=report.to_dict()
        )
    prepared = prepare(raw, job)
    groups = list(series_groups(prepared, job))
    _check_grid_size(job, groups)
    champions = {key: load_champion(job, key) for key, _, _ in groups}
    untrained = [key for key, champion in champions.items() if champion is None]
    if untrained:
        raise ModelError(
            f"job {job.name}: no champion model is serving series {_listing(untrained)}. "
            f"Run the train DAG ({job.name}__train) or `anomaly-pipelines train {job.name}` first, "
            "or leave these series out of the call."
        )
    times = prepared[job.timestamp]
    interval = Window(times.min().to_pydatetime(), (times.max() + job.frequency).to_pydatetime())
    frames = []
    versions: dict[str, str] = {}
    resampling: dict[str, dict[str, int]] = {}
    for key, dims, rows in groups:
        version, detector = champions[key]  # type: ignore[misc]  # untrained series raised above
        versions[key] = version.version
        # On the job's grid, as predict runs score (the champion was trained on it).
        rows, done = resample_series(rows, job.frequency, job.resample)
        resampling[key] = done.to_dict()
        frames.append(labeled_frame(job, key, dims, (version, detector), rows, None, interval, run_id))
    frame = pd.concat(frames, ignore_index=True)
    log.info("job %s: detect call %s scored %d points of %d series", job.name, run_id, len(frame), len(groups))
    return Detected(frame, versions, resampling)
