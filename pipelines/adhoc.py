"""Train on one file and score another, without Airflow or a registry (``anomaly-pipelines detect``).

The files go through the same reader and validation as a job's; without a time column the row
number is the time axis (the scored file's rows continue the training file's), and the output
has ``timestamp`` empty and a ``row`` column instead: the row in the scored file, counting its
first data row as 1.
"""

from __future__ import annotations

import codecs
import io
import logging
from functools import partial
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from fsspec.core import url_to_fs
from pydantic import ValidationError

from pipelines import storage
from pipelines.config import FileSource, JobConfig, parse_job
from pipelines.detectors import make_detector
from pipelines.errors import ConfigError, DataValidationError, ModelError, PipelineError, UntimedDuration
from pipelines.extraction import prepare, series_groups
from pipelines.schema import conform
from pipelines.sources import FileReader
from pipelines.sources.base import DayFirstDates, TimestampZone, first_zone, parse_timestamps
from pipelines.sources.file import open_data, suffix_format
from pipelines.validation import RowNumbers, validate_batch
from pipelines.workspace import check_output_file

log = logging.getLogger(__name__)

ROW = "row"
#: The key of the returned frame's ``attrs`` naming the series not scored, and why.
UNSCORED = "unscored"
#: How many reasons an error of every series without a model spells out (the rest it names).
_REASONS_SHOWN = 10
_ROW_CLOCK = "__row_time__"  # validation needs a time column; rows stand in as seconds


#: The file source's fields that this command's options set (see FileReader's ``options``): the
#: reader's advice names these, not a job file's. Pickles cannot be allowed (unpickling runs
#: code), nor storage options given: fsspec takes credentials from the environment.
_OPTIONS = {
    "format": "--format", "encoding": "--encoding", "delimiter": "--delimiter", "decimal": "--decimal",
    "thousands": "--thousands", "allow_pickle": None, "storage_options": None,
}

#: What --format offers: a file source's formats but pickle, which needs allow_pickle.
FORMATS = ("csv", "jsonl", "json", "parquet")


def _read(job: JobConfig, path: str, option: str) -> tuple[pd.DataFrame, TimestampZone | None]:
    """The file's rows, validated and typed, and whether its timestamps have a time zone."""
    # The file options (--format, --encoding, --delimiter, --decimal, --thousands) are the job's, for both files.
    reader_job = job.model_copy(update={"source": job.source.model_copy(update={"path": path})})
    frame = FileReader(reader_job, options={**_OPTIONS, "path": option}).read(None, None)
    if frame.empty:
        # Validation would only report "expect_table_row_count_to_be_between, observed 0".
        raise DataValidationError(f"{path}: the {option} file holds no rows (only a header, or nothing): give a file with data")
    # Without --timestamp the clock is added after validation: the user never named it, so no
    # check or row of a report may name it (rows are named by their numbers).
    report = validate_batch(
        frame, job, missing_column_hint=partial(_missing_column_hint, job, path),
        rows=RowNumbers(first=1, of=f"the {option} file, counting its first data row as 1", batch=f"the {option} file {path}"),
        number_hint=_number_hint, missing_values_hint=_missing_values_hint, timed=job.timestamp != _ROW_CLOCK,
    )
    if not report.success:
        raise DataValidationError(f"{path}: {report.summary()}", report=report.to_dict())
    if job.timestamp == _ROW_CLOCK:
        # The first data row is 1 second, so that the output's `row` is the row as the errors count
        # it (and as people count a file's rows): the output numbered from 0, the errors from 1.
        frame[_ROW_CLOCK] = pd.to_datetime(np.arange(1, len(frame) + 1), unit="s", utc=True)
        return prepare(frame, job), None
    try:
        parsed = parse_timestamps(frame[job.timestamp], job.timestamp_format, refuse_day_first=True)
    except DayFirstDates as exc:
        raise DataValidationError(
            f"{path}: the {option} file's column {job.timestamp!r}, row {exc.position + 1} (counting its first data row "
            f"as 1): {exc}. Give --timestamp-format '%d/%m/%Y %H:%M' (or the form the dates are written in). Nothing was written."
        ) from exc
    except ValueError as exc:
        raise DataValidationError(
            f"{path}: the {option} file's column {job.timestamp!r} mixes timestamps with and without a time zone "
            f"({exc}). {_ONE_WAY} Nothing was written."
        ) from exc
    return prepare(frame, job), first_zone(frame[job.timestamp], parsed, form=job.timestamp_format)


_ONE_WAY = (
    "Write every timestamp of both files with its offset (e.g. 2024-01-01T00:00:00Z) or every one without "
    "(then taken as UTC), then re-run."
)


def _missing_values_hint(column: str) -> str:
    # The job's advice named validation.max_null_fraction, a setting of a job file this command has no option for.
    return "detect takes no missing value: fill the missing values in the file, or leave those rows out of it"


def _number_hint(settings: dict[str, str]) -> str:
    return "give " + " ".join(f"--{name} '{value}'" for name, value in settings.items())


def _file_source(
    path: str, *, format: str | None, encoding: str, delimiter: str, decimal: str, thousands: str | None
) -> FileSource:
    """The file source both files are read as; errors name the options, not a job file's fields."""
    if format is not None and format not in FORMATS:
        # The source's own error would offer pickle "with allow_pickle: true", which is no option here.
        raise ConfigError(
            f"--format must be one of {', '.join(FORMATS)}, got {format!r}"
            + ("; pickles are not read here (unpickling runs arbitrary code): convert the data to Parquet" if format == "pickle" else "")
        )
    if delimiter == decimal:  # the source's own error gives the fix in a job file's words
        raise ConfigError(
            f"--delimiter and --decimal are both {delimiter!r}: a number could not be told from two fields; files "
            "with decimal commas usually separate fields with ';' (--delimiter ';' --decimal ',')"
        )
    if thousands is not None and thousands == decimal:
        raise ConfigError(
            f"--thousands and --decimal are both {thousands!r}: a number could not be read; a file with 1,234.5 "
            "takes --thousands ',' (and --decimal '.'), one with 1.234,5 --thousands '.' --decimal ','"
        )
    try:
        return FileSource(
            kind="file", path=path, format=format, encoding=encoding, delimiter=delimiter, decimal=decimal, thousands=thousands
        )
    except ValidationError as exc:
        # Each error is one option's (the fields' own checks): "--delimiter: must be one character ..."
        problems = [f"--{error['loc'][0]}: {error['msg'].removeprefix('Value error, ')}" for error in exc.errors()]
        raise ConfigError("; ".join(problems)) from None


#: How a detector's "too few training rows" ends: advice for a job, not for two files.
_JOB_ADVICE = " Widen the training window or wait for more data."


def _check_columns(timestamp: str | None, features: list[str], dimensions: list[str]) -> None:
    """The job file's checks of these said "features: List should have at least 1 item after
    validation" and "columns used twice among timestamp, dimensions and features": a job file's
    fields, where the user typed options."""
    if not features:
        raise ConfigError("--features names no column: give the numeric columns to score, comma-separated (--features a,b)")
    named = [("--timestamp", timestamp)] if timestamp else []
    named += [("--dimensions", column) for column in dimensions] + [("--features", column) for column in features]
    options: dict[str, list[str]] = {}
    for option, column in named:
        options.setdefault(column, []).append(option)
    repeated = [
        f"{column!r} ({' and '.join(given) if len(set(given)) > 1 else given[0] + ' twice'})"
        for column, given in options.items() if len(given) > 1
    ]
    if repeated:
        raise ConfigError(
            f"columns named twice: {', '.join(repeated)}; a column is the time, a dimension or a feature: name each once"
        )


#: The job settings detect builds from its options, and the option that sets each: a job's check
#: said "model: unknown model kind" and "threshold: contamination must be in (0, 0.5]", naming
#: fields of a job file the user never wrote.
_SETTING_OPTIONS = {
    "model: invalid parameters": "--params: invalid parameters", "model": "--model", "threshold": "--contamination",
    "timestamp": "--timestamp", "dimensions": "--dimensions", "features": "--features",
}


def _parse_options(settings: dict[str, Any]) -> JobConfig:
    """The job of detect's options; its errors name the options, one per line."""
    try:
        return parse_job(settings, source="detect")
    except ConfigError as exc:
        problems = str(exc).split("\n")[1:]
        for setting, option in _SETTING_OPTIONS.items():
            problems = [f"  {option}{line[len(setting) + 2:]}" if line.startswith(f"  {setting}") else line for line in problems]
        raise ConfigError("invalid detect options:\n" + "\n".join(problems)) from None


def _zone(zone: TimestampZone) -> str:
    return f"{'with' if zone.aware else 'without'} a time zone (first at row {zone.row}: {zone.value!r})"


def _missing_column_hint(job: JobConfig, path: str, column: str) -> str:
    """A column the file lacks was typed on the command line, not in a job file: which option
    named it and, when the header can be read, which columns the file has."""
    found = _columns_of(path, job.source)
    option = "--timestamp" if column == job.timestamp else "--dimensions" if column in job.dimensions else "--features"
    listed = f" ({', '.join(found)})" if found else ""
    return f"the file has no such column: check {option} against its columns{listed}"


def _columns_of(path: str, source: FileSource) -> list[str] | None:
    """The column names of one csv, jsonl or parquet file (compressed too: ``m.csv.gz``), read
    from its header or schema with the options of ``source``; None for a folder, another
    format or an unreadable file (the hint then lists nothing)."""
    fmt = source.format or suffix_format(path)  # as the file reader takes it
    if fmt not in ("csv", "jsonl", "parquet"):
        return None
    try:
        fs, name = url_to_fs(path)
        with open_data(fs, name) as handle:
            if fmt == "csv":
                # A header read with another delimiter than the file reader's would list one
                # column named after the whole header.
                header = pd.read_csv(handle, nrows=0, encoding=_text_encoding(source.encoding), sep=source.delimiter)
                return [str(column) for column in header.columns]
            if fmt == "jsonl":
                first = pd.read_json(handle, lines=True, nrows=1, encoding=_text_encoding(source.encoding))
                return [str(column) for column in first.columns]
            return list(pq.read_schema(handle).names)
    except (OSError, ValueError, pa.ArrowException):
        return None


def _text_encoding(encoding: str) -> str:
    # As the file reader decodes: utf-8-sig also drops a spreadsheet's byte-order mark.
    return "utf-8-sig" if codecs.lookup(encoding).name == "utf-8" else encoding


def _series(
    frame: pd.DataFrame, job: JobConfig, offsets: dict[str, int]
) -> dict[str, tuple[dict[str, str], pd.DataFrame, np.ndarray | None]]:
    """Each series' dimension values, rows indexed by time or by position in the series
    (continuing ``offsets``), and without timestamps the rows' numbers in the file."""
    out = {}
    for key, dims, data in series_groups(frame, job):
        if job.timestamp == _ROW_CLOCK:
            rows = ((data.index - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(1, "s")).to_numpy()
            start = offsets.get(key, 0)
            out[key] = (dims, data.set_axis(pd.RangeIndex(start, start + len(data))), rows)
        else:
            out[key] = (dims, data, None)
    return out


def detect_files(
    train: str,
    input: str,
    *,
    timestamp: str | None,
    features: list[str],
    dimensions: list[str],
    model: str,
    params: dict[str, Any],
    contamination: float,
    output: str,
    format: str | None = None,
    encoding: str = "utf-8",
    delimiter: str = ",",
    decimal: str = ".",
    thousands: str | None = None,
    timestamp_format: str | None = None,
) -> pd.DataFrame:
    """Fit one detector per series on ``train``, score ``input``, write and return the labeled rows.

    ``format`` (one of :data:`FORMATS`; by default inferred from each file's suffix), ``encoding``,
    ``delimiter``, ``decimal`` and ``thousands`` are the options of both files, as a file source's (see
    :class:`~pipelines.config.FileSource`); ``timestamp_format`` is the job's (how the time column's
    text is written, e.g. ``%d/%m/%Y %H:%M``)."""
    check_output_file(output, "--output")
    source = _file_source(train, format=format, encoding=encoding, delimiter=delimiter, decimal=decimal, thousands=thousands)
    if timestamp is None and ROW in dimensions:
        # Without timestamps the output gains a `row` column of row numbers: a dimension of that
        # name overwrote it (its values written as row numbers, or a crash on text).
        raise ConfigError(
            f"--dimensions names {ROW!r}, the column the output numbers rows in when there is no --timestamp: "
            "rename that column in both files, or give the time column with --timestamp"
        )
    clashing = [f"--{option} names {_ROW_CLOCK!r}" for option, names in (("features", features), ("dimensions", dimensions))
                if _ROW_CLOCK in names]
    if timestamp is None and clashing:
        # The options check then said "columns used twice among timestamp, ...": no time was given.
        raise ConfigError(
            f"{' and '.join(clashing)}, the name detect gives the rows' numbers when there is no --timestamp: "
            "rename that column in both files, or give the time column with --timestamp"
        )
    _check_columns(timestamp, features, dimensions)
    job = _parse_options(
        {
            "name": "detect",
            "source": source.model_dump(),
            "timestamp": timestamp or _ROW_CLOCK,
            "timestamp_format": timestamp_format,
            "frequency": "1s",
            # No window is read: the files are. As long as any file's span, so no check of what a
            # scheduled training window holds (two seasons of rows) refuses a season the file holds.
            "training_window": "36500d",
            "dimensions": dimensions,
            "features": features,
            "model": {"kind": model, "params": params},
            "threshold": {"kind": "contamination", "value": contamination},
        },
    )
    train_rows, train_zone = _read(job, train, "--train")
    input_rows, input_zone = _read(job, input, "--input")
    if train_zone and input_zone and train_zone.aware != input_zone.aware:
        # Each file parsed alone would take its naive times as UTC beside the other's aware ones: a
        # model trained on one clock would score the other.
        raise DataValidationError(
            f"{input}: column {job.timestamp!r} has timestamps {_zone(input_zone)} in the --input file and "
            f"{_zone(train_zone)} in the --train file {train}; taking the ones without as UTC would be a guess. "
            f"{_ONE_WAY} Nothing was written."
        )
    trained = _series(train_rows, job, {})
    to_score = _series(input_rows, job, {key: len(data) for key, (_, data, _) in trained.items()})
    frames = []
    # Series of the --input file that have no model, and why: one new or short group among
    # thousands must not cost the others their scores (as a scheduled predict publishes the other
    # series and names the ones without a model).
    unscored: dict[str, PipelineError] = {}
    for done, (key, (dims, data, rows)) in enumerate(to_score.items(), start=1):
        if key not in trained:
            unscored[key] = DataValidationError(
                f"{input}: series {key} of the --input file has no rows in the --train file {train}, so no model: "
                "add its rows to the --train file and run detect again"
            )
            continue
        history = trained[key][1]
        detector = make_detector(model, params, threshold_kind="contamination", threshold_value=contamination)
        follows = data.index.min() > history.index.max()  # history only when the input continues it
        # Said before the work: fitting a series of a million rows takes most of a minute, which -v
        # showed as silence after the files' validation.
        log.info("detect: series %s (%d of %d): training on %d rows, then scoring %d", key, done, len(to_score), len(history), len(data))
        try:
            detector.fit(history)
        except UntimedDuration as exc:
            # The duration may be the model's default ('1d'), which the user never gave, and the
            # advice was a job file's ("rest: 150"): the fix is an option of this command.
            name, value = exc.parameter, exc.value
            raise ConfigError(
                f"--model {model}: parameter {name!r} is the duration {value!r}, but without --timestamp the rows have no "
                f"times: give it as a number of rows with --params (e.g. --params '{{\"{name}\": 24}}'), or give the time "
                "column with --timestamp. Nothing was written."
            ) from exc
        except ModelError as exc:
            # The detector names neither the file nor the series (which of several is short?), and
            # its advice is a scheduled job's, which has a window to widen: a file has none.
            reason = str(exc).removesuffix(_JOB_ADVICE).rstrip(". ")
            unscored[key] = ModelError(
                f"{train}: series {key} of the --train file cannot be trained on: {reason}. Give that series more "
                "rows in the --train file, or leave it out of the --input file"
            )
            unscored[key].__cause__ = exc
            continue
        scored = detector.detect(data, history=history if follows else None).to_frame()
        # The detector's own line names no series: with thousands, `-v` showed no progress.
        log.info("detect: series %s (%d of %d) scored: %d rows", key, done, len(to_score), len(data))
        if job.timestamp == _ROW_CLOCK:
            scored[ROW] = np.repeat(rows, len(features))
            scored["timestamp"] = pd.NaT
        frames.append(
            scored.assign(
                job="detect",
                series=key,
                model=model,
                model_version="adhoc",
                run_id="cli-detect",
                interval_start=pd.NaT,
                interval_end=pd.NaT,
                scored_at=pd.Timestamp.now(tz="UTC"),
                **dims,
            )
        )
    if not frames:
        # Nothing to write: an empty output with a success status would pass a script's `&&` as
        # if every point had been scored normal. With some series scored the output is written
        # and the run succeeds (the caller reports the rest), as a partial result is still usable.
        raise _nothing_scored(unscored, input)
    # Each step below copies the scored rows: what the earlier ones held is let go at once, or a
    # file of millions of rows needed the files, the parts, the joined and the typed copies together.
    total = len(to_score)
    del trained, to_score, train_rows, input_rows
    result = pd.concat(frames, ignore_index=True)
    frames.clear()
    labeled = conform(result, dimensions)
    if ROW in result:
        labeled[ROW] = result[ROW].astype("int64").to_numpy()
    del result
    log.info("detect: writing %d rows (series x timestamp x feature) to %s", len(labeled), output)
    buffer = io.BytesIO()
    labeled.to_parquet(buffer, index=False)
    storage.atomic_write(output, buffer.getvalue())
    if unscored:
        # Info, not a warning: the caller reports them (UNSCORED), and the command's stderr said it twice.
        log.info("detect: %d of %d series of %s not scored, no model: %s", len(unscored), total, input, ", ".join(unscored))
    # Why each series of the --input file that has no model was not scored (see UNSCORED).
    labeled.attrs[UNSCORED] = {key: str(exc) for key, exc in unscored.items()}
    return labeled


def _nothing_scored(unscored: dict[str, PipelineError], input: str) -> PipelineError:
    """The error of a run none of whose series has a model: that one series' own, or all of them."""
    errors = list(unscored.values())
    kinds = {type(exc) for exc in errors}
    kind = kinds.pop() if len(kinds) == 1 else ModelError
    if len(errors) == 1:
        error = kind(f"{errors[0]}. Nothing was written.")
    else:
        reasons = [str(exc).removeprefix(f"{input}: ") for exc in errors[:_REASONS_SHOWN]]
        if len(errors) > _REASONS_SHOWN:  # thousands of new groups made an error of thousands of lines
            reasons.append(f"and {len(errors) - _REASONS_SHOWN} more: {', '.join(list(unscored)[_REASONS_SHOWN:])}")
        error = kind(
            f"{input}: none of the {len(errors)} series of the --input file has a model, so nothing was scored or "
            "written: " + "; ".join(reasons)
        )
    error.__cause__ = errors[0].__cause__
    return error
