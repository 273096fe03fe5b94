"""What the Anomalies dashboard shows, read from the job's outputs, registry and validation reports.

Everything here is plain data (dicts and lists ready for JSON or a template); the routes in
:mod:`pipelines.web.dashboard` only parse parameters and render.

* Scores come from the job's Parquet dataset (``<outputs.parquet>/job=<job>/date=<day>/``). Only
  the day files of the requested range are read, each once: a read-through cache keyed by file
  time and size keeps them in memory with their per-series aggregates (:class:`_PartCache`), so
  a page over a year of hourly data aggregates in memory instead of opening 365 files (about 1 s
  a request). A job whose dataset is empty but that has an SQL table is read from the table.
* Charts are aggregated on the server: each (series, feature) is cut into at most ``buckets``
  time buckets and only the first, last, lowest and highest point of each bucket are sent (the
  M4 rule: the line drawn at one bucket per pixel looks the same as with every point), plus every
  anomalous point (thinned by the same rule when there are more than four a bucket), so a year of
  hourly data costs a few thousand points, never a marker less that a pixel could show.
* Models come from :class:`pipelines.registry.ModelRegistry`; validation results from the JSON
  files :func:`pipelines.validation.save_report` writes under ``<outputs.parquet>/_validation/``.
"""

from __future__ import annotations

import io
import json
import logging
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from pipelines import storage
from pipelines.config import JobConfig, resolve_path
from pipelines.errors import ConfigError, ModelError, PipelineError, SinkError
from pipelines.registry import ModelRegistry
from pipelines.sinks.parquet import ParquetSink
from pipelines.validation.report import CheckResult
from pipelines.web.schemas import _LOST_PLUS
from pipelines.workspace import to_utc

log = logging.getLogger(__name__)

#: Largest number of buckets a chart may ask for (a wide screen has about this many pixels).
MAX_BUCKETS = 2000
DEFAULT_BUCKETS = 600
#: Anomaly events listed at most on a page (the strongest first); the total is always given.
MAX_EVENTS = 500
#: Validation reports listed per job, newest first.
VALIDATION_LIMIT = 20
#: Tune runs shown per series on the models page (the API gives up to 100).
TUNING_RUNS = 5
#: Model versions shown per series on the models page, newest first, plus the champion when it is
#: older. Each is one metadata.json read (a GET on object stores), and a series retrained hourly
#: for a year has 8,760 versions: the page read every one. 20 is most of a day of hourly trainings
#: or about three weeks of daily ones, enough to see the latest decisions beside the champion.
MODEL_VERSIONS = 20

#: The DAGs ``dags/anomaly_jobs.py`` makes per job: ``<job>__<kind>``.
DAG_KINDS = ("train", "predict", "tune", "score")

#: What the ``only_anomalies`` query parameter may say (a form's checkbox sends ``true``; empty is false).
_YES = ("true", "1", "yes", "on")
_NO = ("false", "0", "no", "off", "")


@dataclass(frozen=True)
class Filters:
    """What a page shows: some series (none = all), a time range ``[start, end)``, a least score,
    some features (none = all), and whether only the series with an anomaly are shown.

    ``min_score`` selects anomalies (markers, counts, events); the lines always show every point.
    ``features`` selects the rows of those features (lines, counts, events and their signals);
    ``only_anomalies`` keeps the series with at least one anomaly (as ``min_score`` and
    ``features`` select them) in the range: :func:`shown_series`.
    """

    series: tuple[str, ...] = ()
    start: datetime | None = None
    end: datetime | None = None
    min_score: float = 0.0
    features: tuple[str, ...] = ()
    only_anomalies: bool = False

    @classmethod
    def parse(
        cls,
        series: Sequence[str] = (),
        start: str | None = None,
        end: str | None = None,
        min_score: float | str | None = None,
        features: Sequence[str] = (),
        only_anomalies: str | bool | None = None,
    ) -> Filters:
        """Filters from query parameters; :class:`ConfigError` names the bad parameter and what is allowed.

        The features are checked against a job by :meth:`for_job`.
        """
        try:
            low, high = to_utc(_plus_restored(start)), to_utc(_plus_restored(end))
        except ConfigError as exc:
            raise ConfigError(f"time range filter: {exc}") from exc
        if low is not None and high is not None and high <= low:
            raise ConfigError(
                f"time range filter: end {high.isoformat()} is not after start {low.isoformat()}; choose an end after the start"
            )
        # A form's empty "least score" field sends min_score= : no least score.
        text = min_score.strip() if isinstance(min_score, str) else min_score
        try:
            score = 0.0 if text is None or text == "" else float(text)
        except ValueError:
            raise ConfigError(f"min_score filter must be a number between 0 and 1, got {min_score!r}") from None
        if not 0.0 <= score <= 1.0 or math.isnan(score):
            raise ConfigError(f"min_score filter must be between 0 and 1 (scores are calibrated to [0, 1]), got {min_score}")
        return cls(
            tuple(dict.fromkeys(s for s in series if s)),
            low,
            high,
            score,
            tuple(dict.fromkeys(f for f in features if f)),
            _flag("only_anomalies", only_anomalies),
        )

    def for_job(self, job: JobConfig) -> Filters:
        """These filters, if every feature they name is one of ``job``'s; else :class:`ConfigError` naming the allowed ones."""
        unknown = [f for f in self.features if f not in job.features]
        if unknown:
            raise ConfigError(
                f"feature filter: {', '.join(repr(f) for f in unknown)} "
                f"{'is not a feature' if len(unknown) == 1 else 'are not features'} of job {job.name!r}; "
                f"choose among {', '.join(job.features)} (or none for all)"
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return {
            "series": list(self.series),
            "start": _iso(self.start),
            "end": _iso(self.end),
            "min_score": self.min_score,
            "features": list(self.features),
            "only_anomalies": self.only_anomalies,
        }


def _plus_restored(text: str | None) -> str | None:
    """``text`` with the '+' of its offset back where a query string read it as a space: a time
    pasted into the page's URL as written (``start=2024-03-03T14:00:00+02:00``) was refused as
    "not an ISO 8601 date-time". Nothing else reads a space there: the API says so instead (its
    callers are scripts, who should encode it), a person's address bar is answered."""
    if text and (lost := _LOST_PLUS.fullmatch(text.strip())):
        return f"{text.strip()[: lost.start(1) - 1]}+{lost.group(1)}"
    return text


def _flag(name: str, value: str | bool | None) -> bool:
    if value is None or isinstance(value, bool):
        return bool(value)
    text = str(value).strip().lower()
    if text in _YES or text in _NO:
        return text in _YES
    raise ConfigError(f"{name} filter must be true or false (or 1/0, yes/no, on/off), got {value!r}")


def _iso(moment: datetime | pd.Timestamp | None) -> str | None:
    if moment is None or (isinstance(moment, float) and math.isnan(moment)) or pd.isna(moment):
        return None
    return pd.Timestamp(moment).isoformat()


def _number(value: Any) -> float | None:
    """A JSON-safe float: missing and infinite values are ``None``."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _metric(value: Any) -> bool | int | float | str | None:
    """A model metric as JSON and the page show it: a flag stays a flag (``compared_out_of_sample``
    read 1 or 0 when every metric was made a float), a count an integer (``compared_rows``), a
    number a finite float (else None), anything else its JSON text: metadata written by another
    version of the library must not make the models page an error."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return _number(value)
    return json.dumps(value, default=str)


def _numbers(values: np.ndarray) -> list[float | None]:
    values = np.asarray(values, dtype="float64")
    out: list[float | None] = values.tolist()
    if not np.isfinite(values).all():
        for i in np.flatnonzero(~np.isfinite(values)):
            out[i] = None
    return out


# -- reading the outputs ------------------------------------------------------------------------

#: Columns kept in memory for each day file (the rest of the output schema is not shown).
_CACHED_COLUMNS = [
    "series", "timestamp", "feature", "value", "expected", "lower", "upper", "score", "feature_score",
    "is_anomaly", "run_id", "scored_at", "interval_start", "interval_end",
]  # fmt: skip
_LINE_COLUMNS = ["series", "timestamp", "feature", "value", "expected", "lower", "upper", "score", "is_anomaly"]
_ANOMALY_COLUMNS = ["series", "timestamp", "feature", "value", "expected", "score", "feature_score", "run_id"]
_DAY = pd.Timedelta(days=1)
_NEVER = pd.Timestamp.min.tz_localize("UTC")
_FOREVER = pd.Timestamp.max.tz_localize("UTC")


@dataclass(frozen=True)
class _Part:
    """The rows of one day file (or of one SQL read), indexed for the dashboard's questions.

    ``lines`` is sorted by series then time and ``slices`` says where each series is, so a chart
    slices instead of filtering; ``totals`` (per series and feature) and ``runs`` (per run id) are
    aggregated once when the part is loaded; ``anomalies`` holds only the anomalous rows.
    """

    start: pd.Timestamp
    end: pd.Timestamp
    lines: pa.Table
    slices: dict[str, tuple[int, int]]
    anomalies: pa.Table
    totals: pa.Table
    runs: pa.Table

    @classmethod
    def build(cls, table: pa.Table, start: pd.Timestamp, end: pd.Timestamp) -> _Part:
        table = table.select(_CACHED_COLUMNS)
        # The Parquet sink writes day files in this order already: checking costs ~1 ms a day,
        # sorting again ~25 ms (half of reading a cold day of 500 series).
        if not _in_series_time_order(table):
            table = table.sort_by([("series", "ascending"), ("timestamp", "ascending")])
        series = table["series"].to_numpy(zero_copy_only=False)
        bounds = np.flatnonzero(np.r_[True, series[1:] != series[:-1], True]) if len(series) else np.array([0])
        slices = {str(series[b]): (int(b), int(e - b)) for b, e in zip(bounds[:-1], bounds[1:], strict=True)}
        lines = table.select(_LINE_COLUMNS)
        anomalies = table.filter(table["is_anomaly"]).select(_ANOMALY_COLUMNS)
        return cls(start, end, lines, slices, anomalies, _totals(lines), _runs(table, anomalies))

    @property
    def nbytes(self) -> int:
        return self.lines.nbytes + self.anomalies.nbytes + self.totals.nbytes + self.runs.nbytes

    def within(self, filters: Filters) -> bool:
        """Whether every row of the part is inside the filters' time range."""
        return (filters.start is None or filters.start <= self.start) and (filters.end is None or self.end <= filters.end)

    def series_lines(self, series: str, filters: Filters) -> pa.Table:
        """Rows of one series inside the time range, in buffers of their own."""
        offset, length = self.slices.get(series, (0, 0))
        rows = self.lines.slice(offset, length)
        # A copy (a series is a small share of a day): a zero-copy slice would keep the whole
        # day's buffers alive after the cache dropped the part, so a chart over a year would
        # hold every day of every series in memory at once.
        return rows.take(np.arange(length)) if self.within(filters) else _in_range(rows, filters)


def _in_series_time_order(table: pa.Table) -> bool:
    """Whether ``table`` is sorted by series, then time (nulls anywhere: not known to be)."""
    n = table.num_rows
    if n < 2:
        return True
    series, times = table["series"], table["timestamp"]
    before, after = series.slice(0, n - 1), series.slice(1)
    later = pc.greater_equal(times.slice(1), times.slice(0, n - 1))
    ordered = pc.or_(pc.greater(after, before), pc.and_(pc.equal(after, before), later))
    return pc.all(ordered, skip_nulls=False).as_py() is True


def _in_range(table: pa.Table, filters: Filters) -> pa.Table:
    mask = None
    if filters.start is not None:
        mask = pc.greater_equal(table["timestamp"], pa.scalar(filters.start, pa.timestamp("us", tz="UTC")))
    if filters.end is not None:
        below = pc.less(table["timestamp"], pa.scalar(filters.end, pa.timestamp("us", tz="UTC")))
        mask = below if mask is None else pc.and_(mask, below)
    return table if mask is None else table.filter(mask)


def _totals(lines: pa.Table) -> pa.Table:
    """Per (series, feature): points, first and last time, top score: sums and extremes, so parts combine."""
    return lines.group_by(["series", "feature"]).aggregate(
        [("timestamp", "count"), ("timestamp", "min"), ("timestamp", "max"), ("score", "max")]
    )


def _runs(table: pa.Table, anomalies: pa.Table) -> pa.Table:
    """Per run id: rows, distinct (series, time) points, anomalous points, its window and when it was scored."""
    runs = table.group_by("run_id").aggregate(
        [("series", "count"), ("interval_start", "min"), ("interval_end", "max"), ("scored_at", "max")]
    )
    points = _count_points(table)
    flagged = _count_points(anomalies)
    ids = runs["run_id"].to_pylist()
    return pa.table(
        {
            "run_id": runs["run_id"],
            "rows": runs["series_count"],
            "points": pa.array([points.get(i, 0) for i in ids], pa.int64()),
            "anomalies": pa.array([flagged.get(i, 0) for i in ids], pa.int64()),
            "interval_start": runs["interval_start_min"],
            "interval_end": runs["interval_end_max"],
            "scored_at": runs["scored_at_max"],
        }
    )


def _count_points(table: pa.Table) -> dict[str, int]:
    """Distinct (series, time) per run id: one point has a row per feature."""
    keys = table.select(["run_id", "series", "timestamp"]).group_by(["run_id", "series", "timestamp"]).aggregate([])
    counted = keys.group_by("run_id").aggregate([("series", "count")])
    return dict(zip(counted["run_id"].to_pylist(), counted["series_count"].to_pylist(), strict=True))


class _PartCache:
    """Day files already read, keyed by (url, modification time, size), least recently used dropped first.

    A day file is rewritten whole by a predict run, so its time and size change and the stale
    entry is simply never asked for again. The budget is ``$ANOMALY_PIPELINES_DASHBOARD_CACHE_MB``
    (default 512); a year of hourly data of 100 series with two features takes about 130 MB.
    """

    def __init__(self) -> None:
        self._parts: OrderedDict[tuple[str, float, int], _Part] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    @staticmethod
    def budget() -> int:
        return int(float(os.environ.get("ANOMALY_PIPELINES_DASHBOARD_CACHE_MB", "512")) * 2**20)

    def get(self, key: tuple[str, float, int], load: Callable[[], _Part]) -> _Part:
        with self._lock:
            part = self._parts.get(key)
            if part is not None:
                self._parts.move_to_end(key)
                return part
        part = load()
        with self._lock:
            if key not in self._parts:
                self._parts[key] = part
                self._bytes += part.nbytes
            budget = self.budget()
            while self._bytes > budget and len(self._parts) > 1:
                _, dropped = self._parts.popitem(last=False)
                self._bytes -= dropped.nbytes
        return part

    def clear(self) -> None:
        with self._lock:
            self._parts.clear()
            self._bytes = 0


_CACHE = _PartCache()


class JobOutputs:
    """The labeled anomalies of one job: its Parquet dataset, or its SQL table when the dataset is empty."""

    def __init__(self, job: JobConfig):
        self.job = job
        self.root = storage.join(resolve_path(job.outputs.parquet), f"job={job.name}")
        self._sink = ParquetSink(resolve_path(job.outputs.parquet), job.outputs.storage_options)

    def day_files(self, start: datetime | None = None, end: datetime | None = None) -> list[tuple[pd.Timestamp, str, float, int]]:
        """``(day, url, modification time, size)`` of the job's day files with rows in ``[start, end)``, by day."""
        low = None if start is None else f"date={pd.Timestamp(start).tz_convert('UTC') - pd.Timedelta(days=1):%Y-%m-%d}"
        high = None if end is None else f"date={pd.Timestamp(end).tz_convert('UTC'):%Y-%m-%d}"

        def wanted(folder: str) -> bool:
            # date=YYYY-MM-DD folder names sort like the days they name.
            return folder.startswith("date=") and (low is None or folder > low) and (high is None or folder <= high)

        # A write killed between its day files (or moving them now) is read as ParquetSink.read
        # reads it: its staged files in place of the days it replaces, so no day is older than another.
        replaced = self._sink.replacements(self.job.name)
        listed = {
            relative: (storage.join(self.root, relative), modified, size)
            for relative, modified, size in _list_files(self.root, self.job.outputs.storage_options, wanted)
        }
        for relative, staged in replaced.items():
            if wanted(relative.partition("/")[0]):
                # A staged file is written once under a name of its own: its URL keys the cache alone.
                listed[relative] = None if staged is None else (staged, 0.0, 0)
        found = []
        for relative, file in listed.items():
            folder, _, file_name = relative.partition("/")
            # Dot files are temporary files of writes in progress.
            if file is None or not file_name or "/" in file_name or file_name.startswith((".", "_")):
                continue
            try:
                day = pd.Timestamp(folder.removeprefix("date="), tz="UTC")
            except ValueError:
                log.warning("job %s: ignoring %s/%s in the outputs: not a date=YYYY-MM-DD folder", self.job.name, self.root, relative)
                continue
            if (start is not None and day + _DAY <= start) or (end is not None and end <= day):
                continue
            found.append((day, *file))
        return sorted(found)

    def _load(self, url: str, day: pd.Timestamp) -> _Part:
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(io.BytesIO(storage.read_bytes(url, self.job.outputs.storage_options)), columns=_CACHED_COLUMNS)
        except (OSError, pa.ArrowInvalid, KeyError) as exc:
            raise SinkError(
                f"job {self.job.name!r}: cannot read the output file {url} (day {day:%Y-%m-%d}): {exc}; "
                "re-run the predict DAG for that day to rewrite it"
            ) from exc
        return _Part.build(table, day, day + pd.Timedelta(days=1))

    def parts(self, filters: Filters) -> Iterator[_Part]:
        """The parts holding the rows of the filters' time range, oldest first, read one at a time.

        A generator, not a list: callers keep only each part's aggregates, so a range of more days
        than the cache holds (a year of 5-minute rows of 500 series is gigabytes) never has more
        than the cache and one day in memory.
        """
        files = self.day_files(filters.start, filters.end)
        if not files and self.job.outputs.table is not None and not self.day_files():
            yield from self._table_parts(filters)
            return
        for day, url, modified, size in files:
            yield _CACHE.get((url, modified, size), lambda url=url, day=day: self._load(url, day))

    def _table_parts(self, filters: Filters) -> list[_Part]:
        # The SQL table is read per request, for the filters' window only: it has no day files to
        # cache. Every job writes its Parquet dataset and only some a table, so the table is the fallback.
        import sqlalchemy as sa

        from pipelines.db import engine_for, file_database
        from pipelines.sinks import SqlSink

        table = self.job.outputs.table
        assert table is not None  # checked by the caller; narrows the type
        engine = engine_for(table.connection)
        database = file_database(engine.url)
        if database is not None and not database.exists():
            # Connecting to look for the table created an empty SQLite or DuckDB file (and its
            # folder) where the job's first publish will write: nothing is published there yet.
            return []
        try:
            # The table is created by the job's first publish: until then there is nothing to show.
            if not sa.inspect(engine).has_table(table.name, schema=table.db_schema):
                return []
        except sa.exc.SQLAlchemyError as exc:
            raise SinkError(
                f"job {self.job.name!r}: cannot reach the database of table {table.name!r} "
                f"({table.connection.describe()}): {getattr(exc, 'orig', None) or exc}; check the connection"
            ) from exc
        frame = SqlSink(engine, table.name, table.db_schema).read(job=self.job.name, start=filters.start, end=filters.end)
        if frame.empty:
            return []
        arrow = pa.Table.from_pandas(frame[_CACHED_COLUMNS], preserve_index=False)
        return [_Part.build(arrow, pd.Timestamp(filters.start or _NEVER), pd.Timestamp(filters.end or _FOREVER))]


# An unreachable store is the library's StorageError (503, naming the URL and what to check), as
# for every other read: botocore's bare EndpointConnectionError made the validation page a 500.
@storage.as_storage_errors
def _list_files(
    url: str, storage_options: dict[str, Any], folders: Callable[[str], bool] = lambda _: True
) -> list[tuple[str, float, int]]:
    """``(path relative to url, modification time, size)`` of the files in the sub-folders of ``url``
    that ``folders`` accepts (by name) and directly in ``url``; none if ``url`` is missing."""
    fs, path = storage.filesystem(url, storage_options)
    from fsspec.implementations.local import LocalFileSystem

    if isinstance(fs, LocalFileSystem):
        # fsspec's local find() costs ~150 µs a file (a year of day files: 55 ms a request), and
        # would stat days the request does not need; os.scandir reads only the wanted folders.
        found: list[tuple[str, float, int]] = []
        try:
            top = list(os.scandir(path))
        except FileNotFoundError:
            return []
        for entry in top:
            if entry.is_file():
                stat = entry.stat()
                found.append((entry.name, stat.st_mtime, stat.st_size))
            elif entry.is_dir() and folders(entry.name):
                try:
                    inner = list(os.scandir(entry.path))
                except FileNotFoundError:  # removed meanwhile
                    continue
                for item in inner:
                    if item.is_file():
                        stat = item.stat()
                        found.append((f"{entry.name}/{item.name}", stat.st_mtime, stat.st_size))
        return found
    fs.invalidate_cache(path)
    if not fs.exists(path):
        return []
    prefix = path.rstrip("/") + "/"
    found = []
    for name, info in fs.find(path, detail=True).items():
        relative = name[len(prefix) :] if name.startswith(prefix) else None
        if relative is None or ("/" in relative and not folders(relative.split("/", 1)[0])):
            continue
        found.append((relative, _modified(info), int(info.get("size") or 0)))
    return found


def _modified(info: dict[str, Any]) -> float:
    """Modification time (epoch seconds) from an fsspec ``info`` of any file system."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if value is None:
            continue
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, datetime):
            return value.timestamp()
        try:
            return pd.Timestamp(value).timestamp()
        except (TypeError, ValueError):
            continue
    return 0.0


def _concat(tables: list[pa.Table], empty: pa.Table) -> pa.Table:
    tables = [t for t in tables if t.num_rows]
    return pa.concat_tables(tables) if tables else empty


def _empty_part() -> _Part:
    from pipelines.schema import arrow_schema

    return _Part.build(arrow_schema([]).empty_table(), _NEVER, _FOREVER)


_EMPTY = _empty_part()
_EMPTY_LINES, _EMPTY_ANOMALIES, _EMPTY_TOTALS, _EMPTY_RUNS = _EMPTY.lines, _EMPTY.anomalies, _EMPTY.totals, _EMPTY.runs


# -- downsampling ---------------------------------------------------------------------------------


def downsample(timestamps: np.ndarray, values: np.ndarray, keep: np.ndarray, buckets: int) -> np.ndarray:
    """Indices of the points to draw: per time bucket the first, last, lowest and highest, plus every ``keep``.

    ``timestamps`` are sorted integers. With at most ``4 * buckets`` points, all are kept. With more
    than ``4 * buckets`` points to keep, those are thinned by the same rule within each bucket: a
    model that flagged a third of a million-point series sent 300,000 markers (23 MB, 8 s) that
    one bucket per pixel draws as the same marks.
    Written here rather than taken from a library: the maintained downsamplers (e.g. ``tsdownsample``)
    cannot be told to keep the anomalous points, which is the one thing the dashboard must not lose.
    """
    n = len(timestamps)
    if n <= 4 * buckets:
        return np.arange(n)
    span = int(timestamps[-1]) - int(timestamps[0]) + 1
    bucket = ((timestamps - timestamps[0]).astype("float64") * buckets / span).astype("int64")
    kept = np.flatnonzero(keep)
    if len(kept) > 4 * buckets:
        kept = kept[_extremes(bucket[kept], values[kept])]
    return np.union1d(_extremes(bucket, values), kept)


def _extremes(bucket: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Positions of the first, last, lowest and highest value of each run of equal ``bucket`` (sorted).

    Each run's extreme by ``reduceat``, then its first position holding it: two ``lexsort`` calls
    took 2.8 s of a million-point chart.
    """
    new = np.r_[True, bucket[1:] != bucket[:-1]]
    starts = np.flatnonzero(new)
    group = np.cumsum(new) - 1
    finite = np.isfinite(values)
    chosen = [starts, np.r_[starts[1:], len(bucket)] - 1]
    # Missing values never win a bucket's minimum or maximum (they are drawn as gaps anyway); a
    # bucket of missing values only gives its first and last.
    for key in (np.where(finite, values, np.inf), np.where(finite, -values, np.inf)):
        hits = np.flatnonzero(key == np.minimum.reduceat(key, starts)[group])
        chosen.append(hits[np.r_[True, group[hits][1:] != group[hits][:-1]]])
    return np.unique(np.concatenate(chosen))


# -- pages' data ----------------------------------------------------------------------------------


def job_dag_kind(dag_id: str, jobs: dict[str, JobConfig]) -> tuple[JobConfig, str] | None:
    """``(job, "train" | "predict" | "tune" | "score")`` for a DAG made by ``dags/anomaly_jobs.py``, else ``None``."""
    name, _, kind = dag_id.rpartition("__")
    if kind in DAG_KINDS and name in jobs:
        return jobs[name], kind
    return None


def series_summary(job: JobConfig, filters: Filters) -> list[dict[str, Any]]:
    """Per series: points scored, anomalous points (score at least ``min_score``), top score, time span,
    over the filters' features; with ``only_anomalies``, the series with at least one anomalous point."""
    filters = filters.for_job(job)
    totals, flagged = [], []
    for part in JobOutputs(job).parts(filters):
        inside = part.within(filters)
        totals.append(part.totals if inside else _totals(_in_range(part.lines, filters)))
        flagged.append(part.anomalies if inside else _in_range(part.anomalies, filters))
    combined = _concat(totals, _EMPTY_TOTALS)
    if filters.series:
        combined = combined.filter(pc.is_in(combined["series"], pa.array(filters.series, pa.string())))
    if filters.features:
        combined = combined.filter(pc.is_in(combined["feature"], pa.array(filters.features, pa.string())))
    if combined.num_rows == 0:
        return []
    per_feature = combined.group_by(["series", "feature"]).aggregate(
        [("timestamp_count", "sum"), ("timestamp_min", "min"), ("timestamp_max", "max"), ("score_max", "max")]
    )
    per_series = per_feature.group_by("series").aggregate(
        [("timestamp_count_sum", "max"), ("timestamp_min_min", "min"), ("timestamp_max_max", "max"), ("score_max_max", "max")]
    )
    anomalous = _selected_anomalies(_concat(flagged, _EMPTY_ANOMALIES), filters)
    events = anomalous.group_by(["series", "timestamp"]).aggregate([("score", "max")])
    by_series = events.group_by("series").aggregate([("timestamp", "count"), ("score_max", "max")])
    counts = {
        s: (n, top)
        for s, n, top in zip(
            by_series["series"].to_pylist(), by_series["timestamp_count"].to_pylist(), by_series["score_max_max"].to_pylist(), strict=True
        )
    }
    rows = []
    for series, points, first, last, top in zip(
        per_series["series"].to_pylist(),
        per_series["timestamp_count_sum_max"].to_pylist(),
        per_series["timestamp_min_min_min"].to_pylist(),
        per_series["timestamp_max_max_max"].to_pylist(),
        per_series["score_max_max_max"].to_pylist(),
        strict=True,
    ):
        anomalies, top_anomaly = counts.get(series, (0, None))
        rows.append(
            {
                "series": series,
                "points": int(points),
                "anomalies": int(anomalies),
                "anomaly_rate": anomalies / points if points else 0.0,
                "max_score": _number(top),
                "max_anomaly_score": _number(top_anomaly),
                "first": _iso(first),
                "last": _iso(last),
            }
        )
    # Series with the most anomalies first: those are the ones to look at.
    return shown_series(sorted(rows, key=lambda r: (-r["anomalies"], -(r["max_score"] or 0.0), r["series"])), filters)


def shown_series(rows: list[dict[str, Any]], filters: Filters) -> list[dict[str, Any]]:
    """The rows of :func:`series_summary` that ``filters`` show: with ``only_anomalies``, those with an anomaly."""
    return [row for row in rows if row["anomalies"]] if filters.only_anomalies else rows


def _selected_anomalies(anomalies: pa.Table, filters: Filters) -> pa.Table:
    mask = pc.greater_equal(anomalies["score"], filters.min_score)
    if filters.series:
        mask = pc.and_(mask, pc.is_in(anomalies["series"], pa.array(filters.series, pa.string())))
    if filters.features:
        mask = pc.and_(mask, pc.is_in(anomalies["feature"], pa.array(filters.features, pa.string())))
    return anomalies.filter(mask)


def chart(job: JobConfig, series: str, filters: Filters, buckets: int = DEFAULT_BUCKETS) -> dict[str, Any]:
    """One series' chart data, per feature aligned arrays for uPlot: time (epoch seconds), value,
    expected, lower, upper, and ``anomaly`` (the value where the point is an anomaly with a score of
    at least ``min_score``, else null), downsampled to ``buckets`` (anomalies always kept); only the
    filters' features, when they name some. ``only_anomalies`` is not applied: a chart shows the
    series asked for (:func:`shown_series` chooses which series a page charts)."""
    if not 1 <= buckets <= MAX_BUCKETS:
        raise ConfigError(f"buckets must be between 1 and {MAX_BUCKETS}, got {buckets}")
    only = replace(filters.for_job(job), series=(series,))
    table = _concat([part.series_lines(series, only) for part in JobOutputs(job).parts(only)], _EMPTY_LINES)
    if filters.features:
        table = table.filter(pc.is_in(table["feature"], pa.array(filters.features, pa.string())))
    features = []
    if table.num_rows:
        frame = table.drop_columns(["series"]).to_pandas()
        # From Arrow: a set of the frame's column iterated its million rows one by one (2.5 s).
        present = set(pc.unique(table["feature"]).to_pylist())
        for feature in [f for f in job.features if f in present] + sorted(present - set(job.features)):
            rows = frame[frame["feature"] == feature].sort_values("timestamp", kind="stable")
            times = rows["timestamp"].to_numpy(dtype="datetime64[us]").astype("int64")
            values = rows["value"].to_numpy(dtype="float64")
            anomalous = rows["is_anomaly"].to_numpy(dtype=bool) & (rows["score"].to_numpy(dtype="float64") >= filters.min_score)
            index = downsample(times, values, anomalous, buckets)
            picked = rows.iloc[index]
            features.append(
                {
                    "feature": feature,
                    "points": len(rows),
                    "returned": len(index),
                    "anomalies": int(anomalous.sum()),
                    "t": (times[index] / 1e6).tolist(),
                    "value": _numbers(values[index]),
                    "expected": _numbers(picked["expected"].to_numpy()),
                    "lower": _numbers(picked["lower"].to_numpy()),
                    "upper": _numbers(picked["upper"].to_numpy()),
                    "score": _numbers(picked["score"].to_numpy()),
                    "anomaly": _numbers(np.where(anomalous[index], values[index], np.nan)),
                }
            )
    return {
        "job": job.name,
        "series": series,
        "filters": only.to_dict(),
        "buckets": buckets,
        "points": sum(f["points"] for f in features),
        "features": features,
    }


def anomaly_events(job: JobConfig, filters: Filters, limit: int = MAX_EVENTS) -> dict[str, Any]:
    """Anomalous points (series and time) with a score of at least ``min_score``, strongest first.

    Each event lists its signals by ``feature_score``, the share each feature had in the decision:
    for a multivariate model (one decision over all features) that says which signals contributed.
    With ``features``, only the anomalous rows of those features count, and only they are listed.
    """
    filters = filters.for_job(job)
    parts = JobOutputs(job).parts(filters)
    table = _selected_anomalies(
        _concat([p.anomalies if p.within(filters) else _in_range(p.anomalies, filters) for p in parts], _EMPTY_ANOMALIES), filters
    )
    if table.num_rows == 0:
        return {"job": job.name, "filters": filters.to_dict(), "total": 0, "events": []}
    frame = table.to_pandas()
    scores = frame.groupby(["series", "timestamp"], sort=True)["score"].max()
    strongest = scores.sort_values(ascending=False, kind="stable").head(limit)
    # The head keeps every level value of the whole index: iterating it made Python objects of all
    # 300,000 anomalous times of a series (1.9 s) to list 100.
    strongest.index = strongest.index.remove_unused_levels()
    wanted = set(strongest.index)
    # The rows of the listed events only, before going through them one by one in Python: a series
    # with 300,000 anomalous rows took 7 s to list its 100 strongest. (Series and times apart: a
    # MultiIndex.isin made Python objects of every time, 1.2 s.)
    near = frame["timestamp"].isin(strongest.index.get_level_values("timestamp")) & frame["series"].isin(
        strongest.index.get_level_values("series")
    )
    rows = frame[near].sort_values("feature_score", ascending=False, kind="stable")
    # Plain lists: a pandas group per event costs ~0.5 ms, hundreds of events a page.
    signals: dict[tuple[str, pd.Timestamp], list[dict[str, Any]]] = {}
    for series, timestamp, feature, share, value, expected in zip(
        rows["series"].tolist(),
        rows["timestamp"].tolist(),
        rows["feature"].tolist(),
        rows["feature_score"].tolist(),
        rows["value"].tolist(),
        rows["expected"].tolist(),
        strict=True,
    ):
        if (series, timestamp) in wanted:
            signals.setdefault((series, timestamp), []).append(
                {"feature": feature, "feature_score": _number(share), "value": _number(value), "expected": _number(expected)}
            )
    events = [
        {"series": series, "timestamp": _iso(timestamp), "score": _number(score), "signals": signals[(series, timestamp)]}
        for (series, timestamp), score in strongest.items()
    ]
    return {"job": job.name, "filters": filters.to_dict(), "total": len(scores), "events": events}


def _registry(job: JobConfig) -> ModelRegistry:
    return ModelRegistry(resolve_path(job.registry), job.outputs.storage_options)


def model_series(job: JobConfig) -> list[str]:
    """Keys of the series of ``job`` that have a model, sorted."""
    return _registry(job).series(job.name)


def models(job: JobConfig, series: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Per series (``series``, else every series with a model): its newest :data:`MODEL_VERSIONS`
    complete model versions (newest first) with their metrics, then the champion when it is older
    (``older`` True), the champion marked; ``version_count``, how many complete versions there are
    in all, and ``newest``, how many of the newest were listed; and its latest tune runs (newest
    first, :func:`pipelines.tuning.tuning_runs`), promoted or not: a run that kept the champion
    registers no version. ``error`` says why the champion of
    a series cannot be told (an unreadable ``champion.json``, or a champion whose ``metadata.json``
    cannot be read; the other series are still listed), else None.

    What serves is what the champion pointer names: the champion is ``promoted`` whatever its
    stored decision says. A version registered to be promoted whose run stopped or failed before
    recording the outcome of the pointer's write is ``pending`` (its promotion not confirmed)."""
    from pipelines.training import version_summary
    from pipelines.tuning import tuning_runs  # tuning pulls in the detectors: only when the page is asked for

    registry = _registry(job)
    out = []
    for series in registry.series(job.name) if series is None else series:
        error = None
        try:
            champion_version = registry.champion_version(job.name, series)
        except ModelError as exc:  # one damaged pointer does not hide the other series
            log.warning("dashboard: job %s, series %s: %s", job.name, series, exc)
            champion_version, error = None, str(exc)
        # One listing gives the count and the newest names (ModelRegistry.versions(newest=) would
        # list again, and says no count): a listing page holds 1,000 keys, a metadata read one version.
        names = registry.version_names(job.name, series)
        newest = names[len(names) - MODEL_VERSIONS :]
        shown = newest[::-1]
        if champion_version is not None and champion_version in names and champion_version not in newest:
            shown.append(champion_version)  # older than every version shown: last
        versions = []
        for name in shown:
            try:
                version = registry.version(job.name, series, name)
            except ModelError as exc:  # damaged, or removed since listed: the others are still shown
                log.warning("dashboard: job %s, series %s: version %s left out: %s", job.name, series, name, exc)
                continue
            summary = version_summary(version)
            decision = summary.pop("decision") or {}
            champion = version.version == champion_version
            versions.append(
                {
                    **summary,
                    "champion": champion,
                    "older": name not in newest,
                    "metrics": {k: _metric(v) for k, v in summary["metrics"].items()},
                    "promoted": True if champion else decision.get("promoted"),
                    "pending": bool(decision.get("pending")) and not champion,
                    "reason": decision.get("reason"),
                }
            )
        if champion_version is not None and not any(v["champion"] for v in versions):
            # The pointer names a version whose metadata cannot be read (left out above, or not listed).
            error = (
                f"the champion {champion_version} is not among the readable versions (its metadata.json is "
                f"missing or damaged): run {job.name}__train to register and promote a new model"
            )
        tuning = [run for entry in tuning_runs(job, series, TUNING_RUNS) for run in entry["runs"]]
        out.append(
            {
                "series": series,
                "champion": champion_version,
                "versions": versions,
                "version_count": len(names),
                "newest": len(newest),
                "tuning": tuning,
                "error": error,
            }
        )
    return out


def champions(job: JobConfig) -> dict[str, str | None]:
    """The serving version of each series that has a model (None: none, or its pointer is unreadable)."""
    registry = _registry(job)
    out: dict[str, str | None] = {}
    for series in registry.series(job.name):
        try:
            # The pointer only (one read per series): the overview shows no metadata.
            out[series] = registry.champion_version(job.name, series)
        except ModelError as exc:  # one damaged pointer does not hide the job's row
            log.warning("dashboard: job %s, series %s: %s", job.name, series, exc)
            out[series] = None
    return out


def validation_results(job: JobConfig, limit: int = VALIDATION_LIMIT) -> list[dict[str, Any]]:
    """The newest validation reports of ``job``, each with its failed checks explained in one line."""
    root = storage.join(resolve_path(job.outputs.parquet), "_validation", f"job={job.name}")
    files = sorted(
        ((name, modified) for name, modified, _ in _list_files(root, job.outputs.storage_options) if name.endswith(".json")),
        key=lambda item: (item[1], item[0]),
        reverse=True,
    )[:limit]
    results = []
    for name, modified in files:
        file_name = name.rsplit("/", 1)[-1]
        try:
            report = json.loads(storage.read_bytes(storage.join(root, name), job.outputs.storage_options))
        except (OSError, ValueError) as exc:
            log.warning("job %s: skipping unreadable validation report %s: %s", job.name, name, exc)
            continue
        checks = [CheckResult(**{k: v for k, v in check.items() if k in CheckResult.__dataclass_fields__}) for check in report.get("checks", [])]
        failed = [check for check in checks if not check.success]
        window = report.get("window") or [None, None]
        results.append(
            {
                "file": file_name,
                "purpose": file_name.split("_", 1)[0],
                "saved_at": _iso(pd.Timestamp(modified, unit="s", tz="UTC")) if modified else None,
                "success": bool(report.get("success")),
                "rows": report.get("rows"),
                "window": {"start": window[0], "end": window[1]},
                "checks": len(checks),
                "failed": [{"expectation": c.expectation, "column": c.column, "explanation": c.describe()} for c in failed],
            }
        )
    return results


def _run_rows(parts: Iterable[_Part], run_id: str | None = None) -> pd.DataFrame:
    """Per run id over ``parts``: rows, points, anomalous points, window, scored time (sums and extremes)."""
    runs = _concat([p.runs for p in parts], _EMPTY_RUNS)
    if run_id is not None:
        runs = runs.filter(pc.equal(runs["run_id"], run_id))
    combined = runs.group_by("run_id").aggregate(
        [
            ("rows", "sum"),
            ("points", "sum"),
            ("anomalies", "sum"),
            ("interval_start", "min"),
            ("interval_end", "max"),
            ("scored_at", "max"),
        ]
    )
    return combined.to_pandas().rename(columns=lambda c: c.rsplit("_", 1)[0] if c != "run_id" else c)


def _run_dict(row: pd.Series) -> dict[str, Any]:
    points = int(row["points"])
    return {
        "run_id": row["run_id"],
        "scored_at": _iso(row["scored_at"]),
        "window": {"start": _iso(row["interval_start"]), "end": _iso(row["interval_end"])},
        "rows": int(row["rows"]),
        "points": points,
        "anomalies": int(row["anomalies"]),
        "anomaly_rate": int(row["anomalies"]) / points if points else 0.0,
    }


def last_run(job: JobConfig) -> dict[str, Any] | None:
    """The run that last wrote the outputs: its id, window, rows and anomalous points.

    The day file written last holds that run's rows (a run rewrites every day it touches), so it
    names the run; the run's own days then give its counts.
    """
    outputs = JobOutputs(job)
    files = outputs.day_files()
    if files:
        day = max(files, key=lambda f: (f[2], f[0]))[0]
        newest = _run_rows(outputs.parts(Filters(start=day, end=day + pd.Timedelta(days=1))))
    else:
        newest = _run_rows(outputs.parts(Filters()))
    if newest.empty:
        return None
    latest = newest.sort_values("scored_at").iloc[-1]
    window = Filters(start=latest["interval_start"], end=latest["interval_end"])
    run = _run_rows(outputs.parts(window), latest["run_id"])
    return _run_dict(run.iloc[0])


def run_summary(job: JobConfig, run_id: str) -> dict[str, Any] | None:
    """The window and counts of one run in the outputs (``None``: it wrote nothing there)."""
    found = _run_rows(JobOutputs(job).parts(Filters()), run_id)
    return None if found.empty else _run_dict(found.iloc[0])


def airflow_last_runs(dag_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """The newest DAG run of each of ``dag_ids`` from Airflow's metadata database.

    Empty when Airflow's database cannot be reached (the app running outside Airflow): the
    dashboard then shows what the outputs say, without the run state.
    """
    if not dag_ids:
        return {}
    try:
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session
        from sqlalchemy import select

        found: dict[str, dict[str, Any]] = {}
        with create_session() as session:
            for dag_id in dag_ids:
                run = session.scalars(
                    select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.run_after.desc()).limit(1)
                ).first()
                if run is not None:
                    found[dag_id] = {
                        "run_id": run.run_id,
                        "state": str(run.state).rsplit(".", 1)[-1] if run.state is not None else None,
                        "run_after": _iso(run.run_after),
                        "end_date": _iso(run.end_date),
                    }
        return found
    except Exception as exc:  # noqa: BLE001 - any failure only hides the run state, never the page
        log.debug("Airflow's DAG runs are not available to the dashboard: %s", exc)
        return {}


def overview(jobs: Iterable[JobConfig]) -> list[dict[str, Any]]:
    """One row per job: its last run, the state of its last predict DAG run, the models serving, the last validation."""
    jobs = list(jobs)
    states = airflow_last_runs([f"{job.name}__predict" for job in jobs])
    rows = []
    for job in jobs:
        try:
            run = last_run(job)
            serving = champions(job)
            validations = validation_results(job, limit=1)
        except PipelineError as exc:
            # One job's unreadable outputs must not hide the others.
            log.warning("dashboard: job %s cannot be summarized: %s", job.name, exc)
            rows.append(
                {
                    "job": job.name,
                    "description": job.description,
                    "model": job.model.kind,
                    "features": list(job.features),
                    "error": str(exc),
                }
            )
            continue
        latest = sorted((v for v in serving.values() if v), reverse=True)
        rows.append(
            {
                "job": job.name,
                "description": job.description,
                "model": job.model.kind,
                "features": list(job.features),
                "last_run": run,
                "airflow": states.get(f"{job.name}__predict"),
                "series_with_models": len(serving),
                "champions": sum(1 for v in serving.values() if v),
                "newest_champion": latest[0] if latest else None,
                "last_validation": validations[0] if validations else None,
                "error": None,
            }
        )
    return rows


__all__ = [
    "DEFAULT_BUCKETS",
    "MAX_BUCKETS",
    "Filters",
    "JobOutputs",
    "airflow_last_runs",
    "anomaly_events",
    "champions",
    "chart",
    "downsample",
    "job_dag_kind",
    "last_run",
    "models",
    "overview",
    "run_summary",
    "series_summary",
    "shown_series",
    "validation_results",
]
