"""Extract a window from a job's source, validate it, and split it into one batch per series.

These are the first two steps of every train, tune and predict run; the Airflow tasks and the
CLI call these functions with the same arguments.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from pipelines import storage
from pipelines.config import FileSource, JobConfig, resolve_path
from pipelines.errors import ConfigError, DataValidationError, EmptyWindowError, SourceDataError
from pipelines.resampling import ResampleStats, floor_to_grid, resample_series
from pipelines.series import series_key
from pipelines.sources import FileReader, make_source
from pipelines.sources.base import (
    DayFirstDates,
    DayFirstDoubt,
    TimestampZone,
    binary_as_text,
    first_zone,
    parse_timestamps,
    source_error,
    window_mask,
)
from pipelines.validation import WINDOW_ROWS, RowNumbers, check_and_raise
from pipelines.workspace import (
    Window,
    Workspace,
    schema_record_path,
    utcnow,
    validation_report_path,
)

log = logging.getLogger(__name__)

#: What to do about timestamps with and without a time zone in one source.
_ONE_ZONE = "Store every timestamp with its offset (e.g. 2024-01-01T00:00:00Z) or every one without (then taken as UTC)"


@dataclass(frozen=True)
class Extracted:
    """What was extracted: the raw batch files (one, or one per chunk), rows, and the window."""

    paths: list[str]
    rows: int
    window: Window
    read_from: str
    #: When a one-off input's split ended (ISO 8601, UTC): where the whole run's scoring rate is
    #: measured from (:func:`pipelines.runner.log_score_run_progress`); None for a window.
    split_at: str | None = None

    def to_dict(self) -> dict:
        return {
            "paths": self.paths, "rows": self.rows, "window": self.window.to_dict(), "read_from": self.read_from,
            "split_at": self.split_at,
        }

    @classmethod
    def from_dict(cls, data: dict) -> Extracted:
        return cls(list(data["paths"]), int(data["rows"]), Window.from_dict(data["window"]), data["read_from"], data.get("split_at"))


def extract(job: JobConfig, window: Window, *, run_id: str, purpose: str = "", history_rows: int = 0) -> Extracted:
    """Read ``window`` (plus ``history_rows`` periods before it) and keep it in the run's workspace.

    The window is first floored to the job's epoch-aligned ``frequency`` grid (see
    :func:`grid_window`), so that every bucket of a series is scored by exactly one run.
    Raises :class:`EmptyWindowError` (a :class:`SourceError`) when the window holds no rows (the
    data may not have landed yet), :class:`SourceDataError` when it mixes timestamps with and
    without a time zone (a retry reads the same), and :class:`DataValidationError` when a job
    column disappeared or changed its kind since the previous run of the same source.
    """
    window = grid_window(job, window)
    read_start = window.start - job.frequency * history_rows
    # One warning of dates that could be day first, judged over all the reader parsed (whole files,
    # not only the window's rows) and the rows kept: the reader warned once per file, and this again.
    doubt = DayFirstDoubt()
    with doubt.collecting():
        # Named once, here: kinds, validation, the raw batch and series keys all see the same text.
        frame = binary_as_text(make_source(job).read(read_start, window.end))
    try:
        parsed = (
            parse_timestamps(frame[job.timestamp], job.timestamp_format, refuse_day_first=True, doubt=doubt)
            if job.timestamp in frame.columns
            else pd.Series(pd.NaT, index=frame.index, dtype="datetime64[ns, UTC]")
        )
    except DayFirstDates as exc:
        raise source_error(
            job, job.source.describe(), read_start, window.end,
            f"column {job.timestamp!r}, row {exc.position + 1} of the rows read: {exc}", f"{exc.todo}, then re-run the window.",
            kind=SourceDataError,
        ) from exc
    except ValueError as exc:
        # Sources that filter in the database (SQL, BigQuery) hand the timestamps over as stored.
        raise source_error(
            job,
            job.source.describe(),
            read_start,
            window.end,
            f"column {job.timestamp!r} mixes timestamps with and without a time zone ({exc})",
            f"{_ONE_ZONE}, then re-run the window.",
            kind=SourceDataError,
        ) from exc
    doubt.warn()
    unformatted = _unformatted(job, frame[job.timestamp], parsed) if job.timestamp in frame.columns else None
    if unformatted:
        raise source_error(
            job, job.source.describe(), read_start, window.end, unformatted, f"{_FORMAT_TODO}, then re-run the window.",
            kind=SourceDataError,
        )
    inside = window_mask(parsed, pd.Timestamp(read_start), pd.Timestamp(window.end))
    if not inside.all():
        # A query whose bounds compare wrongly (e.g. SQLite text in another format than the bound
        # parameters) must not leak rows of the next interval into this one.
        log.warning(
            "job %s: %s returned %d rows outside [%s, %s); they are dropped. Check how the query "
            "compares the window bounds with the stored timestamps.",
            job.name, job.source.describe(), int((~inside).sum()), read_start.isoformat(), window.end.isoformat(),
        )
        frame, parsed = frame[inside].reset_index(drop=True), parsed[inside].reset_index(drop=True)
    # Unparseable timestamps count as in the window: validation must see and report them.
    in_window = parsed.isna() | (parsed >= window.start)
    if not in_window.any():
        raise EmptyWindowError(
            f"job {job.name!r}: {job.source.describe()} has no rows in window {window} "
            f"({len(frame)} rows before it were read as history): the data may not have landed yet; "
            "re-run when it has, or check the query/path. Nothing was written."
        )
    kinds = schema_kinds(frame, job, parsed)
    check_schema(job, window, kinds, set(frame.columns))
    _refuse_numbered_times(job, frame, parsed, read_start, window.end)  # after drift, which says what changed
    path = Workspace(job.name, run_id, purpose).raw_batch
    storage.atomic_write(path, _to_parquet_bytes(_canonical_raw(frame, job.dimensions)))
    record_schema(job, window, kinds, run_id=run_id)
    log.info("job %s: extracted %d rows (%d in window %s) from %s", job.name, len(frame), int(in_window.sum()), window, job.source.describe())
    return Extracted(paths=[path], rows=len(frame), window=window, read_from=job.source.describe())


#: What to do about timestamps that do not follow the job's timestamp_format.
_FORMAT_TODO = "Write every timestamp as timestamp_format says, or set timestamp_format to how they are written"


def _unformatted(job: JobConfig, raw: pd.Series, parsed: pd.Series, offset: int = 0) -> str | None:
    """What is wrong when values of ``raw`` (``offset`` rows come before it) do not follow the job's
    ``timestamp_format`` (``parsed`` is NaT where they are written); None when all do.

    Refused here, not left to validation: validation parses without the format, and read some of
    them otherwise (2024-01-13 beside 13/01/2024), so they passed and were then dropped as NaT."""
    if job.timestamp_format is None or pd.api.types.is_datetime64_any_dtype(raw.dtype):
        return None
    bad = (parsed.isna() & raw.notna()).to_numpy()
    if not bad.any():
        return None
    rows = np.flatnonzero(bad)
    shown = ", ".join(f"row {offset + row + 1}: {str(raw.iloc[row])!r}" for row in rows[:3])
    return (
        f"column {job.timestamp!r} has {len(rows)} value(s) that do not follow timestamp_format {job.timestamp_format!r} "
        f"({shown}{', ...' if len(rows) > 3 else ''})"
    )


#: How to turn epoch seconds into timestamps where the rows are read, per source kind.
_FROM_EPOCH = {
    "sql": "in the query, e.g. to_timestamp(ts) AS ts (PostgreSQL), FROM_UNIXTIME(ts) AS ts (MySQL/MariaDB), "
    "datetime(ts, 'unixepoch') AS ts (SQLite), divided by 1000 first for milliseconds",
    "bigquery": "in the query, e.g. TIMESTAMP_SECONDS(ts) AS ts (TIMESTAMP_MILLIS for milliseconds)",
    "python": "in the callable, e.g. pd.to_datetime(frame['ts'], unit='s', utc=True) (unit='ms' for milliseconds)",
    "file": "in the file, as text such as 2024-01-01T00:00:00Z",
}
#: The same for numbers stored as text, which some functions take only once cast to a number.
_FROM_EPOCH_TEXT = {
    "sql": "in the query, e.g. to_timestamp(CAST(ts AS bigint)) AS ts (PostgreSQL), FROM_UNIXTIME(CAST(ts AS UNSIGNED)) "
    "AS ts (MySQL/MariaDB), datetime(CAST(ts AS INTEGER), 'unixepoch') AS ts (SQLite), divided by 1000 first for "
    "milliseconds; compare the converted time with :start and :end, as text does not sort as time",
    "bigquery": "in the query, e.g. TIMESTAMP_SECONDS(CAST(ts AS INT64)) AS ts (TIMESTAMP_MILLIS for milliseconds)",
    "python": "in the callable, e.g. pd.to_datetime(pd.to_numeric(frame['ts']), unit='s', utc=True) (unit='ms' for milliseconds)",
    "file": "in the file, as text such as 2024-01-01T00:00:00Z",
}
#: A number written as text: what an epoch time stored in a text column looks like.
_NUMBER_TEXT = r"^\s*[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?\s*$"


def _refuse_numbered_times(job: JobConfig, frame: pd.DataFrame, parsed: pd.Series, start: datetime, end: datetime) -> None:
    """Raise :class:`SourceDataError` when the timestamp column holds numbers (epoch times): of a
    numeric type, or as text of which none parses as a timestamp (``parsed``).

    Numbers are not parsed (seconds or milliseconds would be a guess): every row failed validation
    as "not dateutil parseable", whose advice to fix the source data named no way to do it.
    """
    found = _epoch_numbers(frame[job.timestamp], parsed) if job.timestamp in frame.columns else None
    if found is None:
        return
    what, as_text = found
    advice = _FROM_EPOCH_TEXT if as_text else _FROM_EPOCH
    raise source_error(
        job,
        job.source.describe(),
        start,
        end,
        f"column {job.timestamp!r} holds {what}, not timestamps; whether they count seconds or milliseconds since 1970 "
        "would be a guess",
        f"Convert them to UTC timestamps {advice.get(job.source.kind, 'in the source')}, then re-run the window.",
        kind=SourceDataError,
    )


def _epoch_numbers(column: pd.Series, parsed: pd.Series) -> tuple[str, bool] | None:
    """What ``column`` holds ("numbers (e.g. 1704067200)") and whether as text, when it holds numbers
    rather than timestamps (``parsed`` from it); else None."""
    if pd.api.types.is_bool_dtype(column.dtype) or (pd.api.types.is_numeric_dtype(column.dtype) and parsed.notna().any()):
        return None  # numbers parse only as the job's timestamp_format says (20240301 for %Y%m%d)
    values = column.dropna()
    if values.empty:
        return None
    if not pd.api.types.is_numeric_dtype(column.dtype):
        # A TEXT column of epoch seconds got no hint: every row failed validation. Text of which
        # some values parse is left to validation, which names the rows; 20240101 is a date, and parses.
        if parsed.notna().any() or not (column.dtype == object or isinstance(column.dtype, pd.StringDtype)):
            return None
        sample = values.head(_KIND_SAMPLE)
        as_text = sample.map(lambda value: isinstance(value, str))
        numbers = sample.map(lambda value: isinstance(value, int | float | np.number) and not isinstance(value, bool | np.bool_))
        if not (numbers | (as_text & sample.astype("string").str.match(_NUMBER_TEXT).fillna(False))).all():
            return None
    first = values.iloc[0]
    if isinstance(first, str):
        return f"numbers stored as text (e.g. {first!r})", True
    return f"numbers (e.g. {first})", False


def grid_window(job: JobConfig, window: Window) -> Window:
    """``window`` with both ends floored to the job's epoch-aligned ``frequency`` grid.

    Resampling labels each bucket by its start; a window cutting a bucket in two would score it
    in neither run or in both. Flooring keeps the windows of contiguous intervals contiguous,
    so each bucket is scored exactly once (an hourly job scheduled at :15 scores the previous
    whole hour).
    """
    start, end = floor_to_grid(window.start, job.frequency), floor_to_grid(window.end, job.frequency)
    if (start, end) == (window.start, window.end):
        return window
    if end <= start:
        raise ConfigError(
            f"job {job.name!r}: window {window} holds no whole period of the job's frequency "
            f"({job.frequency}), counted from 1970-01-01T00:00Z; choose a window covering at least one "
            "period, or a schedule whose intervals are at least that long"
        )
    snapped = Window(start, end)
    log.info("job %s: window %s floored to the %s grid: %s", job.name, window, job.frequency, snapped)
    return snapped


#: Non-null values of a text column looked at to decide its kind: enough to tell a number or a
#: date column from free text, cheap on a large batch.
_KIND_SAMPLE = 1000


def schema_kinds(frame: pd.DataFrame, job: JobConfig, parsed: pd.Series | None = None) -> dict[str, str]:
    """The kind (datetime, number, text, bool) of each job column of ``frame`` that has values.

    Text columns are judged by what most of their values are (CSV and SQLite hand over dates and
    sometimes numbers as text): a few bad values are a matter for validation, which names them;
    a column that changed as a whole is schema drift.
    """
    kinds: dict[str, str] = {}
    for name in job.columns:
        if name not in frame.columns:
            continue
        if name == job.timestamp and parsed is not None and parsed.notna().mean() > 0.5:
            kinds[name] = "datetime"  # parsed already, by the rules extraction reads it with
            continue
        kind = _column_kind(frame[name])
        if kind is not None:
            kinds[name] = kind
    return kinds


def _column_kind(column: pd.Series) -> str | None:
    dtype = column.dtype
    if pd.api.types.is_bool_dtype(dtype):
        return "bool"
    if pd.api.types.is_datetime64_any_dtype(dtype):
        return "datetime"
    if pd.api.types.is_numeric_dtype(dtype):
        return "number"
    values = column.dropna().head(_KIND_SAMPLE)
    if values.empty:
        return None  # nothing to judge by: the previous kind stays on record
    if values.map(lambda v: isinstance(v, bool | np.bool_)).all():
        return "bool"
    if pd.to_numeric(values, errors="coerce").notna().mean() > 0.5:
        return "number"
    text = values.astype("string")
    if text.str.lower().isin(["true", "false"]).all():
        return "bool"
    if pd.to_datetime(text, format="mixed", errors="coerce", utc=True).notna().mean() > 0.5:
        return "datetime"
    return "text"


def _previous_schema(job: JobConfig) -> dict | None:
    path = schema_record_path(job)
    if not storage.exists(path):
        return None
    return json.loads(storage.read_bytes(path))


def check_schema(job: JobConfig, window: Window, kinds: dict[str, str], present: set[str]) -> None:
    """Raise :class:`DataValidationError` when a job column that the previous run of this source
    had is gone (``present``: the columns read now), or holds another kind of value now.

    Runs before validation, whose messages say what is wrong now but not what changed.
    """
    previous = _previous_schema(job)
    if previous is None:
        return
    before = previous["columns"]
    changes = []
    for name in job.columns:
        if name not in before:
            continue
        if name not in present:
            changes.append(f"column {name!r} was {before[name]} and is missing now (renamed or dropped?)")
        elif name in kinds and kinds[name] != before[name]:
            changes.append(f"column {name!r} was {before[name]} and is {kinds[name]} now")
    if not changes:
        return
    raise DataValidationError(
        f"job {job.name!r}: schema drift in {job.source.describe()} for window {window}, compared with the "
        f"previous run of this source (run {previous['run_id']!r}, window {previous['window']}): "
        + "; ".join(changes)
        + ". Nothing was written and the serving models are unchanged. Fix the source (or the job's columns); "
        f"if the change is intended, delete {schema_record_path(job)} to accept the new schema "
        "(and retrain when a feature changed), then re-run the window.",
        report={"schema_drift": changes, "previous": previous, "current": kinds},
    )


def record_schema(job: JobConfig, window: Window, kinds: dict[str, str], *, run_id: str) -> None:
    """Remember the kinds of this run's columns for the next run's :func:`check_schema`.

    A column without values this time keeps the kind it had before.
    """
    previous = _previous_schema(job)
    columns = {**(previous["columns"] if previous else {}), **kinds}
    record = {
        "job": job.name,
        "source": job.source.describe(),
        "run_id": run_id,
        "window": str(window),
        "recorded_at": utcnow().isoformat(),
        "columns": columns,
    }
    storage.atomic_write(schema_record_path(job), json.dumps(record, indent=2).encode())


def extract_chunks(job: JobConfig, *, run_id: str, input_path: str, chunk_rows: int) -> Extracted:
    """Split a file of any size into raw chunks of ``chunk_rows`` rows (one-off scoring).

    Memory stays bounded by one chunk; the returned window spans the file's timestamps.
    Rows of a series must come in time order across the file: each chunk is scored with the
    end of the previous chunk as history. A series whose rows in a chunk do not all come after
    its rows in earlier chunks (a duplicate or an earlier timestamp) stops the run here, before
    any chunk is scored.

    A split that fails (bad rows in a late chunk, a read error, the task killed) removes the
    chunks it wrote before raising: nothing reads them, and on the DAG path they stayed, a copy of
    most of the input, until the work folder was swept as abandoned days later.
    """
    workspace = Workspace(job.name, run_id, "score")
    try:
        return _split(job, workspace, input_path=input_path, chunk_rows=chunk_rows)
    except BaseException:
        _remove_chunks(job, workspace)
        raise


def _remove_chunks(job: JobConfig, workspace: Workspace) -> None:
    """Remove the raw chunks and manifest of a split that failed, and the run's folder if that
    leaves it empty; a failure to remove is logged, never raised over the split's own error.

    Work folders are always local (under :func:`~pipelines.workspace.home`), as cleanup's are.
    """
    folder = Path(workspace.chunk_manifest).parent
    try:
        shutil.rmtree(folder)
    except FileNotFoundError:
        pass  # failed before its first chunk was written
    except OSError as exc:
        log.warning("job %s: could not remove the chunks of a failed split, %s: %s", job.name, folder, exc)
        return
    with contextlib.suppress(OSError):  # not empty: another attempt's scored chunks, left to cleanup
        workspace.root.rmdir()


def _split(job: JobConfig, workspace: Workspace, *, input_path: str, chunk_rows: int) -> Extracted:
    """:func:`extract_chunks`, leaving what it wrote behind when it fails."""
    # A one-off file is most often an export like the job's own files: it is read with their text
    # options, so a job reading ;-separated files with decimal commas scores such a file too (read
    # with pandas' defaults it was one column, and the error said to set the delimiter it had set).
    text = {name: getattr(job.source, name) for name in ("encoding", "delimiter", "decimal", "thousands")} if isinstance(job.source, FileSource) else {}
    one_off = job.model_copy(update={"source": FileSource(kind="file", path=input_path, **text)})
    first, last, rows, paths, manifest = None, None, 0, [], []
    zone: TimestampZone | None = None  # of the file's first timestamp: every later chunk must agree
    # Each series' latest row so far. Validation sees one chunk at a time, so it cannot see a
    # duplicate split across chunks; and since chunks must follow each other in time per series,
    # the latest timestamp is all a later chunk is compared with: memory grows with the number of
    # series, not of rows.
    latest: dict[object, _Latest] = {}
    # The path came from the command line (--input) or the run's conf (input), not the job file;
    # a one-off input's format is its suffix's, and it is never unpickled nor read with the job's
    # storage options.
    options: dict[str, str | None] = {
        "path": "input (predict's --input, or the run's `input`)", "format": None, "allow_pickle": None, "storage_options": None,
    }
    if not text:
        # A job reading SQL or BigQuery has no text options to set ("Set source.delimiter" named a
        # field its source refuses): the advice is to convert the file.
        options.update(dict.fromkeys(("encoding", "delimiter", "decimal", "thousands")))
    reader = FileReader(one_off, path_hint="Check the input path (predict's --input, or the run's `input`).", options=options)
    doubt = DayFirstDoubt()  # of the whole file: one warning, at its end (see DayFirstDoubt)
    started = time.monotonic()
    for index, chunk in enumerate(reader.iter_chunks(chunk_rows)):
        chunk = binary_as_text(chunk)  # as extract() names them, so the manifest's keys are the batches'
        manifest.append(_series_counts(chunk, job))
        if job.timestamp in chunk.columns:
            try:
                parsed = parse_timestamps(chunk[job.timestamp], job.timestamp_format, refuse_day_first=True, doubt=doubt)
            except DayFirstDates as exc:
                raise SourceDataError(
                    f"job {job.name!r}: input file {input_path!r}, row {rows + exc.position + 1}: column {job.timestamp!r}: "
                    f"{exc}. {exc.todo}, then re-run."
                ) from exc
            except ValueError as exc:
                raise SourceDataError(
                    f"job {job.name!r}: input file {input_path!r}, rows {rows + 1} to {rows + len(chunk)}: column "
                    f"{job.timestamp!r} mixes timestamps with and without a time zone ({exc}). {_ONE_ZONE}, then re-run."
                ) from exc
            unformatted = _unformatted(job, chunk[job.timestamp], parsed, offset=rows)
            if unformatted:
                raise SourceDataError(f"job {job.name!r}: input file {input_path!r}: {unformatted}. {_FORMAT_TODO}, then re-run.")
            numbers = _epoch_numbers(chunk[job.timestamp], parsed)
            if numbers is not None:
                # Every row failed validation as "not dateutil parseable", in a window made up from 1970.
                raise SourceDataError(
                    f"job {job.name!r}: input file {input_path!r}, rows {rows + 1} to {rows + len(chunk)}: column "
                    f"{job.timestamp!r} holds {numbers[0]}, not timestamps; whether they count seconds or milliseconds "
                    f"since 1970 would be a guess. Convert them to UTC timestamps {_FROM_EPOCH['file']}, then re-run. "
                    "Nothing was scored or written."
                )
            here = first_zone(chunk[job.timestamp], parsed, chunk=index, offset=rows, form=job.timestamp_format)
            # Each chunk is parsed alone, so naive chunks would be taken as UTC beside aware ones:
            # the guess the check above refuses within a chunk. Stopped here, before any chunk is
            # scored, so no output is begun.
            if zone is None:
                zone = here
            elif here is not None and here.aware != zone.aware:
                raise SourceDataError(
                    f"job {job.name!r}: input file {input_path!r}: column {job.timestamp!r} mixes timestamps with and "
                    f"without a time zone across chunks of {chunk_rows} rows: {zone.describe()}, {here.describe()}; "
                    f"taking the ones without as UTC would be a guess. {_ONE_ZONE}, then re-run. Nothing was scored or written."
                )
            _check_follows(job, input_path, chunk, parsed, latest, chunk=index, offset=rows, chunk_rows=chunk_rows)
            parsed = parsed.dropna()
            if len(parsed):
                first = parsed.min() if first is None else min(first, parsed.min())
                last = parsed.max() if last is None else max(last, parsed.max())
        path = workspace.raw_chunk(index)
        storage.atomic_write(path, _to_parquet_bytes(_canonical_raw(chunk, job.dimensions)))
        paths.append(path)
        rows += len(chunk)
        # The file's size in rows is unknown until its end: rows so far and the rate say how it goes.
        rate = rows / max(time.monotonic() - started, 1e-6)
        log.info(
            "job %s: chunk %d: %d rows (%s so far, %s rows/s) from %s",
            job.name, index + 1, len(chunk), f"{rows:,}", f"{rate:,.0f}", input_path,  # counted from 1, as scoring does
        )
    storage.atomic_write(workspace.chunk_manifest, json.dumps(manifest).encode())
    if rows < max(job.validation.min_rows, 1):
        raise SourceDataError(
            f"job {job.name!r}: input file {input_path!r} holds {rows} rows; the job needs at least "
            f"{max(job.validation.min_rows, 1)} (validation.min_rows): score a longer input (or lower the job's "
            "validation.min_rows), then re-run. Nothing was scored or written."
        )
    doubt.warn()
    first = first if first is not None else pd.Timestamp("1970-01-01", tz="UTC")
    last = last if last is not None else first
    window = Window(first.to_pydatetime(), (last + job.frequency).to_pydatetime())
    split_at = datetime.now(UTC).isoformat()
    return Extracted(paths=paths, rows=rows, window=window, read_from=f"input file {input_path!r}", split_at=split_at)


#: A series' latest row in a one-off input: its time (UTC, naive), its row (counted from 1 in the
#: file, header excluded), its chunk (counted from 0) and its timestamp as written.
_Latest = tuple[np.datetime64, int, int, object]


def _describe(row: int, chunk: int, value: object) -> str:
    return f"row {row} (chunk {chunk + 1}: {str(value)!r})"


def _check_follows(
    job: JobConfig,
    input_path: str,
    frame: pd.DataFrame,
    parsed: pd.Series,
    latest: dict[object, _Latest],
    *,
    chunk: int,
    offset: int,
    chunk_rows: int,
) -> None:
    """Raise :class:`SourceDataError` when a series' first row in ``frame`` (chunk ``chunk``) is
    not after its ``latest`` row in earlier chunks, then move ``latest`` on to this chunk's last rows.

    Scoring a chunk with the end of the series in earlier chunks as history would otherwise fail
    chunks later, once the rows before were scored, in the detector's history check, which blames
    the model and names neither file nor row. Unparseable timestamps and missing dimension
    columns or values are left to validation to report. Vectorised: a file may hold 100,000 series.
    """
    if job.dimensions and not set(job.dimensions) <= set(frame.columns):
        return
    checked = parsed.notna()
    for name in job.dimensions:
        checked &= frame[name].notna()
    where = checked.to_numpy().nonzero()[0]  # positions in the chunk of ``times``
    if not len(where):
        return
    # Naive UTC datetime64 in the parsed unit: to_numpy() of aware values would box each one.
    times = pd.Series(parsed.iloc[where].dt.tz_localize(None).to_numpy())
    if job.dimensions:
        keys = [frame[d].astype("string").to_numpy()[where] for d in job.dimensions]
        groups = times.groupby(keys, dropna=False, sort=False)
    else:
        groups = times.groupby(np.zeros(len(times), dtype=np.int8), sort=False)
    firsts, lasts = groups.idxmin(), groups.idxmax().to_numpy()  # positions in ``times``; the first of equals
    names = firsts.index.tolist()  # dimension values (tuples with several dimensions)
    firsts = firsts.to_numpy()
    before = [latest.get(name) for name in names]
    previous = np.array([b[0] if b is not None else np.datetime64("NaT") for b in before])
    bad = (times.to_numpy()[firsts] <= previous).nonzero()[0]  # NaT: no rows before, never bad
    raw = frame[job.timestamp]
    if len(bad):
        at = bad[where[firsts[bad]].argmin()]  # the offending row that comes first in the file
        name, position, (then, *earlier) = names[at], int(where[firsts[at]]), before[at]
        key = series_key(job.dimensions, name if isinstance(name, tuple) else (name,))
        time = parsed.iloc[position]
        what = (
            f"repeats the instant of {_describe(*earlier)}, a duplicate across chunks of {chunk_rows} rows"
            if time.tz_localize(None) == then
            else f"comes before {_describe(*earlier)} in an earlier chunk of {chunk_rows} rows"
        )
        row = offset + position + 1
        raise SourceDataError(
            f"job {job.name!r}: input file {input_path!r}, series {key}: {_describe(row, chunk, raw.iloc[position])} "
            f"has timestamp {time.isoformat()}, which {what}. Each chunk is scored with the end of the series in "
            "earlier chunks as history, so rows of a series must come in time order through the file, one per "
            "timestamp: sort the file by time (or by series, then time) and keep one row per timestamp and series, "
            "then re-run. Nothing was scored or written.",
            report={"series": key, "row": row, "timestamp": time.isoformat(), "earlier_row": earlier[0]},
        )
    positions = where[lasts]
    rows = (offset + positions + 1).tolist()
    latest.update(zip(names, zip(times.to_numpy()[lasts], rows, [chunk] * len(names), raw.iloc[positions].tolist(), strict=True)))


def _series_counts(chunk: pd.DataFrame, job: JobConfig) -> dict[str, int]:
    """Rows per series in a raw chunk, so scoring a later chunk reads only the chunks its
    series' history is in (a missing dimension column is left to validation to report)."""
    if not job.dimensions:
        return {series_key([], []): len(chunk)}
    if not set(job.dimensions) <= set(chunk.columns):
        return {}
    counts = chunk.groupby([chunk[d].astype("string") for d in job.dimensions], dropna=False).size()
    return {
        series_key(job.dimensions, key if isinstance(key, tuple) else (key,)): int(n) for key, n in counts.items()
    }


def _canonical_raw(frame: pd.DataFrame, dimensions: Sequence[str] = ()) -> pd.DataFrame:
    """Make raw columns storable in Parquet without changing what validation will see.

    Object columns whose values are all numbers (e.g. SQL DECIMAL), not bools, become float64; any
    other object column becomes strings, so an unparseable timestamp or a text feature stays visible.
    A dimension's numbers become strings too: as floats, DECIMAL ids above 2**53 merged (two devices
    reported as duplicates of an id neither has) and 7 was named 7.0.
    """
    # Shallow: only object columns are replaced (copy-on-write keeps ``frame`` as it was); a deep copy
    # held a second copy of every timestamp and number of a large window while it was written.
    out = frame.copy(deep=False)
    for name in out.columns:
        column = out[name]
        if column.dtype != object:
            continue
        values = column.dropna()
        # A bool is an int to Python: stored as 1.0 it passed validation, which names true and
        # false among numbers (they are no measurements) only when it sees them as written.
        if name not in dimensions and len(values) and all(
            (isinstance(v, (int, float, np.number)) and not isinstance(v, bool)) or _is_decimal(v) for v in values
        ):
            out[name] = column.astype("float64")
        else:
            out[name] = column.map(lambda v: v if v is None or (isinstance(v, float) and np.isnan(v)) else str(v)).astype("string")
    return out


def _is_decimal(value: object) -> bool:
    from decimal import Decimal

    return isinstance(value, Decimal)


def _to_parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def read_parquet(path: str) -> pd.DataFrame:
    return pd.read_parquet(io.BytesIO(storage.read_bytes(path)))


def prepare(frame: pd.DataFrame, job: JobConfig) -> pd.DataFrame:
    """Typed rows of a validated batch: UTC timestamps, float features, string dimensions."""
    out = pd.DataFrame(
        {
            job.timestamp: parse_timestamps(frame[job.timestamp], job.timestamp_format),
            **{dim: frame[dim].astype("string") for dim in job.dimensions},
            **{feature: pd.to_numeric(frame[feature]).astype("float64") for feature in job.features},
        }
    )
    return out.sort_values([*job.dimensions, job.timestamp], kind="stable").reset_index(drop=True)


def series_groups(prepared: pd.DataFrame, job: JobConfig) -> Iterator[tuple[str, dict[str, str], pd.DataFrame]]:
    """Each series of a prepared batch: its key, its dimension values, and its rows indexed by time."""
    groups = prepared.groupby(job.dimensions, sort=True) if job.dimensions else [((), prepared)]
    for values, group in groups:
        values = values if isinstance(values, tuple) else (values,)
        dims = dict(zip(job.dimensions, map(str, values), strict=True))
        yield series_key(job.dimensions, values), dims, group.set_index(job.timestamp)[job.features]


def checked_batch(
    job: JobConfig, window: Window, *, run_id: str, purpose: str, raw_path: str, part: str = "", rows: RowNumbers = WINDOW_ROWS
) -> pd.DataFrame:
    """The raw batch at ``raw_path``, validated, then typed by :func:`prepare`.

    On failure the batch is quarantined and :class:`~pipelines.errors.DataValidationError`
    stops the run before anything is trained or written. ``rows``: how the errors number the
    batch's rows (by default as rows of a window read).
    """
    frame = read_parquet(raw_path)
    workspace = Workspace(job.name, run_id, purpose)
    check_and_raise(
        frame,
        job,
        window=(window.start, window.end),
        suite_path=resolve_path(job.validation.suite) if job.validation.suite else None,
        report_path=validation_report_path(job, purpose, window, run_id + part),
        quarantine_dir=workspace.quarantine + part,
        storage_options=job.outputs.storage_options,
        rows=rows,
    )
    return prepare(frame, job)


def validate(job: JobConfig, window: Window, *, run_id: str, purpose: str, raw_path: str) -> list[str]:
    """Validate the raw batch, then write one typed batch per series, resampled to the job's
    frequency by its ``resample`` rule; returns the series keys.

    What resampling did to each series is logged, added to the validation report, and kept
    beside the series batch so that :func:`read_series` hands it to training and scoring.
    """
    prepared = checked_batch(job, window, run_id=run_id, purpose=purpose, raw_path=raw_path)
    workspace = Workspace(job.name, run_id, purpose)
    keys: list[str] = []
    stats: dict[str, dict[str, int]] = {}
    for key, _, batch in series_groups(prepared, job):
        batch, done = resample_series(batch, job.frequency, job.resample)
        _log_resampling(job, key, done)
        storage.atomic_write(workspace.series_batch(key), _to_parquet_bytes(batch.rename_axis(job.timestamp).reset_index()))
        storage.atomic_write(_stats_path(workspace, key), json.dumps(done.to_dict()).encode())
        keys.append(key)
        stats[key] = done.to_dict()
    _add_to_report(validation_report_path(job, purpose, window, run_id), job, stats)
    log.info("job %s: %d rows valid, %d series: %s", job.name, len(prepared), len(keys), ", ".join(keys))
    return keys


def _log_resampling(job: JobConfig, series: str, stats: ResampleStats) -> None:
    rule = job.resample
    how = f"aggregate {rule.aggregate}, fill {rule.fill}" + (f" (limit {rule.ffill_limit})" if rule.ffill_limit else "")
    level = logging.WARNING if stats.changed else logging.INFO
    log.log(level, "job %s, series %s: resampled to %s (%s): %s", job.name, series, job.frequency, how, stats.describe())


def _stats_path(workspace: Workspace, series: str) -> str:
    return workspace.series_batch(series).removesuffix(".parquet") + ".resampling.json"


def _add_to_report(path: str, job: JobConfig, stats: dict[str, dict[str, int]]) -> None:
    """Record the resampling counts in the run's validation report (written just before)."""
    options = job.outputs.storage_options
    report = json.loads(storage.read_bytes(path, options))
    report["resampling"] = {"rule": job.resample.model_dump(), "frequency": str(job.frequency), "series": stats}
    storage.atomic_write(path, json.dumps(report, indent=2, allow_nan=False).encode(), options)


def read_series(job: JobConfig, run_id: str, series: str, *, purpose: str) -> pd.DataFrame:
    """The typed batch of one series: a UTC DatetimeIndex and one float column per feature.

    ``attrs["resampling"]`` holds what resampling did to it (see :class:`ResampleStats`).
    """
    workspace = Workspace(job.name, run_id, purpose)
    frame = read_parquet(workspace.series_batch(series)).set_index(job.timestamp)[job.features]
    stats_path = _stats_path(workspace, series)
    if storage.exists(stats_path):
        frame.attrs["resampling"] = json.loads(storage.read_bytes(stats_path))
    return frame


__all__ = [
    "Extracted",
    "checked_batch",
    "extract",
    "extract_chunks",
    "grid_window",
    "prepare",
    "read_series",
    "series_groups",
    "validate",
]
