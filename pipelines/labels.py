"""People's verdicts on anomaly events: a labels table of true anomalies and false alarms.

A label says that the rows of one series (optionally one feature) from ``start`` to ``end``
(both inclusive, UTC) were a real anomaly (``verdict=True``) or a false alarm (``False``). Labels
come from the API (``POST /api/v1/jobs/{job}/labels``), the CLI (``anomaly-pipelines label``) or
a file of known anomalies (:func:`import_labels`). Tuning scores candidates against them, training
leaves confirmed anomalies out of what a model learns, and alerts skip an event that repeats one a
person called a false alarm (:meth:`LabelStore.known_false_alarm`). All three resolve overlapping
labels by one rule, :func:`label_verdicts`.

Storage is one SQL table (any SQLAlchemy 2 database, ``labels`` in the job file; a SQLite file
in ``var/`` by default), keyed by ``(job, series, feature, start, end)``. Timestamps are stored as
naive UTC ``DateTime``, as in :mod:`pipelines.sinks.sql` (SQLite has no time zones), and come
back UTC-aware. "No feature" is stored as ``''`` rather than NULL because SQL unique constraints
treat NULLs as distinct, which would let the same whole-series label be stored twice.

A whole-series label also keeps one value range per feature (``value_ranges``, JSON text), since
the features' values have different units: one min/max over ``requests`` and ``latency_ms`` rows
would let a dismissed ``requests`` spike silence a real ``latency_ms`` one. Tables created before
that column existed get it added by the first write; their older whole-series rows hold one range
only, read as described in :meth:`LabelStore.known_false_alarm`.
"""

from __future__ import annotations

import bisect
import contextlib
import difflib
import json
import logging
import math
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import numpy as np
import pandas as pd
import sqlalchemy as sa

from pipelines.config import JobConfig, get_job, resolve_path
from pipelines.db import binary_collation, deadlocked, engine_for, file_database, precise_datetime
from pipelines.errors import ConfigError, SinkError
from pipelines.series import ALL_SERIES, series_key
from pipelines.sources.base import SUPPORTED_YEARS

if TYPE_CHECKING:
    from pipelines.events import AnomalyEvent

log = logging.getLogger(__name__)

#: Column sizes: the unique key must fit MySQL's 3,072-byte index limit in utf8mb4.
_JOB_CHARS, _SERIES_CHARS, _FEATURE_CHARS, _AUTHOR_CHARS = 64, 500, 128, 255
#: Columns of a labels file: required, then optional.
FILE_COLUMNS = ("series", "start", "end", "verdict")
OPTIONAL_FILE_COLUMNS = ("feature", "note", "value_min", "value_max", "author")
_TRUE, _FALSE = {"true", "1", "yes", "y", "t"}, {"false", "0", "no", "n", "f"}
#: The column of a whole-series label's per-feature value ranges.
_RANGES = "value_ranges"
#: Runs of a label write that collided with another writer's (see :meth:`LabelStore.write`).
_WRITE_ATTEMPTS, _RETRY_BACKOFF_SECONDS = 5, 0.1
#: Most series keys an "unknown series" error lists; beyond, it names the nearest to the one given.
_SERIES_NAMED = 10
#: Columns of the unique key of a label.
_KEY = ("job", "series", "feature", "start_time", "end_time")
#: Tables (engine, name) seen with every column, so that a new store reads them without looking again.
_READY_TABLES: set[tuple[sa.Engine, str]] = set()
#: Days of published output an import keeps read (see :class:`_PublishedDays`).
_DAYS_KEPT = 31
#: Columns of the published output that :func:`event_value_ranges` reads.
_RANGE_COLUMNS = ["timestamp", "series", "feature", "value", "is_anomaly"]


class LabelError(ConfigError):
    """A label that cannot be stored as given (bad window, series, feature, values or file row)."""


@dataclass(frozen=True)
class Label:
    """One verdict on an event of one series (and feature, when ``feature`` is set)."""

    job: str
    series: str
    feature: str | None
    start: datetime  # UTC, inclusive
    end: datetime  # UTC, inclusive: the last anomalous timestamp of the event
    verdict: bool  # True: a real anomaly; False: a false alarm
    value_min: float | None  # range of the actual values of the event's rows
    value_max: float | None
    note: str
    author: str
    created_at: datetime
    # Whole-series labels: the range of each feature's values (value_min/value_max span them all);
    # None on a feature's label, and on whole-series labels stored before these were kept.
    value_ranges: dict[str, tuple[float, float]] | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: times as ISO 8601 UTC text."""
        out = asdict(self)
        for name in ("start", "end", "created_at"):
            out[name] = out[name].isoformat()
        if self.value_ranges is not None:
            out["value_ranges"] = {feature: list(bounds) for feature, bounds in self.value_ranges.items()}
        return out


def _definition(name: str, collation: str = "utf8mb4_bin") -> sa.Table:
    metadata = sa.MetaData()
    return sa.Table(
        name,
        metadata,
        sa.Column("job", sa.String(_JOB_CHARS), nullable=False),
        sa.Column("series", sa.String(_SERIES_CHARS), nullable=False),
        sa.Column("feature", sa.String(_FEATURE_CHARS), nullable=False),
        sa.Column("start_time", precise_datetime(), nullable=False),
        sa.Column("end_time", precise_datetime(), nullable=False),
        sa.Column("verdict", sa.Boolean, nullable=False),
        sa.Column("value_min", sa.Double, nullable=True),
        sa.Column("value_max", sa.Double, nullable=True),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("author", sa.String(_AUTHOR_CHARS), nullable=False),
        sa.Column("created_at", precise_datetime(), nullable=False),
        sa.Column(_RANGES, sa.Text, nullable=True),  # added last: older tables get it by ALTER TABLE
        # The database itself refuses a second row for one event, whatever writes to the table.
        sa.UniqueConstraint("job", "series", "feature", "start_time", "end_time", name=f"uq_{name[:50]}_event"),
        # utf8mb4 on MySQL/MariaDB: their databases often default to latin1 (MariaDB's own default
        # before 11.6), where a label on series city=東京 or a note in Greek failed to be stored.
        mysql_charset="utf8mb4",
        # A binary collation: their default ones ignore case and accents, so "region=EU" was the
        # key of "region=eu" and "city=Koln" of "city=Köln": labelling one series deleted another's
        # label, and a false alarm on one silenced the alerts of the other. The server's NO PAD one
        # where it has it (see :meth:`LabelStore._prepare`).
        mysql_collate=collation,
    )


def _naive(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(tzinfo=None)


def _aware(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC)


def _where(job: str, series: str | None = None, feature: str | None = None) -> str:
    text = f"job {job!r}"
    if series is not None:
        text += f", series {series!r}"
    if feature:
        text += f", feature {feature!r}"
    return text


def as_utc(value: datetime | str, what: str, where: str) -> datetime:
    """``value`` as a UTC-aware datetime; a naive time is refused, since its zone would be a guess."""
    if isinstance(value, str):
        try:
            text = value.strip()
            # RFC 3339 allows a lowercase "z", which fromisoformat refuses (the API's times took it).
            value = datetime.fromisoformat(text[:-1] + "+00:00" if text[-1:] in ("Z", "z") else text)
        except ValueError:
            raise LabelError(f"{where}: {what} {value!r} is not an ISO 8601 date-time (e.g. 2024-03-03T14:00:00Z)") from None
    if not isinstance(value, datetime):
        raise LabelError(f"{where}: {what} must be a date-time, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise LabelError(
            f"{where}: {what} {value.isoformat()} has no time zone; give it with its offset, e.g. "
            f"{value.isoformat()}Z for UTC"
        )
    try:
        moment = value.astimezone(UTC)
    except OverflowError:
        moment = None
    first, last = SUPPORTED_YEARS  # outputs are read through pandas
    if moment is None or not first <= moment.year <= last:
        raise LabelError(f"{where}: {what} {value.isoformat()} is out of range; use a date between {first} and {last}")
    return datetime(
        moment.year, moment.month, moment.day, moment.hour, moment.minute, moment.second, moment.microsecond, tzinfo=UTC
    )


def _text(value: Any, what: str, where: str, *, limit: int | None = None) -> str:
    if not isinstance(value, str):
        raise LabelError(f"{where}: {what} must be text, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise LabelError(f"{where}: {what} is not valid Unicode text (it holds a lone surrogate)") from None
    if "\x00" in value:
        raise LabelError(f"{where}: {what} must not hold NUL characters")
    if limit is not None and len(value) > limit:
        raise LabelError(f"{where}: {what} is longer than {limit} characters")
    return value


def _number(value: Any, what: str, where: str) -> float | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, bool):
        raise LabelError(f"{where}: {what} must be a number, got {value!r}")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise LabelError(f"{where}: {what} must be a number, got {value!r}") from None
    if not math.isfinite(number):
        raise LabelError(f"{where}: {what} must be a finite number, got {value!r}")
    return number


def parse_verdict(value: Any, where: str = "label") -> bool:
    """``True`` for a real anomaly, ``False`` for a false alarm, from a bool or text (true/false, yes/no, 1/0)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):  # a JSON file's 1/0, as documented for files
        return value == 1
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise LabelError(f"{where}: verdict must be true (a real anomaly) or false (a false alarm), got {value!r}")


def check_series(job: JobConfig, series: str, where: str) -> None:
    """Refuse a series key that cannot be one of ``job``'s: ``all`` without dimensions, else
    ``dim=value,...`` naming exactly the job's dimensions in order, written as
    :func:`pipelines.series.series_key` writes them."""
    if not job.dimensions:
        if series != ALL_SERIES:
            raise LabelError(f"{where}: unknown series; job {job.name!r} has no dimensions, so its only series is 'all'")
        return
    # Names and values are compared decoded and the key re-encoded: a dimension named "disk%" is
    # "disk%25" in every key, and a value given raw ("host=a=b", "load=100%") is not the key its
    # rows are stored under (a label on it would never judge them).
    parts = [part.partition("=") for part in series.split(",")]
    names, values = [unquote(name) for name, _, _ in parts], [unquote(value) for _, _, value in parts]
    if names != list(job.dimensions) or not all(values) or series_key(job.dimensions, values) != series:
        example = series_key(job.dimensions, ["<value>"] * len(job.dimensions))
        raise LabelError(
            f"{where}: unknown series; series of job {job.name!r} are named {example}, "
            "with ',', '=' and '%' inside a value written %2C, %3D and %25"
        )


def _models_series(job: JobConfig) -> list[str]:
    """Keys of the series of ``job`` that have trained models (a listing of its registry)."""
    from pipelines.registry import ModelRegistry

    return ModelRegistry(resolve_path(job.registry), job.outputs.storage_options).series(job.name)


def _check_known_series(job: JobConfig, series: str, where: str, known: Sequence[str] | None = None) -> None:
    """Once the job has trained models, a series without any is refused as a likely typo.
    ``known``: the series with models, when the caller listed them already."""
    known = _models_series(job) if known is None else known
    if known and series not in known:
        listed = ", ".join(known)
        if len(known) > _SERIES_NAMED:
            # A job may have thousands of series: naming them all made a 300 kB error for one typo.
            near = difflib.get_close_matches(series, known, n=3) or known[:3]
            listed = f"{len(known)} series, e.g. {', '.join(near)} (`anomaly-pipelines models {job.name}` lists them)"
        raise LabelError(f"{where}: unknown series; job {job.name!r} has models for {listed}")


def _output_rows(job: JobConfig, start: datetime | None, end: datetime | None) -> pd.DataFrame:
    """The job's published rows with timestamps in ``[start, end)``."""
    from pipelines.sinks.parquet import ParquetSink

    return ParquetSink(resolve_path(job.outputs.parquet), job.outputs.storage_options).read(job=job.name, start=start, end=end)


class _PublishedDays:
    """The published rows of a job, read a UTC day at a time and kept for the next labels.

    An import of a file without value ranges read the output (a listing of the job's folder and
    each day file) once per row, about 16 ms each. The most recently used days are kept, so
    that a file spanning years does not hold all of them in memory.
    """

    def __init__(self, job: JobConfig, keep: int = _DAYS_KEPT):
        self.job, self.keep = job, keep
        self._days: OrderedDict[pd.Timestamp, pd.DataFrame] = OrderedDict()

    def __call__(self, start: datetime, end: datetime) -> pd.DataFrame:
        """The rows with timestamps in ``[start, end)``."""
        first = utc_stamp(start).floor("D")
        days = list(pd.date_range(first, max(first, (utc_stamp(end) - pd.Timedelta(microseconds=1)).floor("D")), freq="D"))
        missing = [day for day in days if day not in self._days]
        if missing:  # one read for the label's days not kept (its span: never more than it needs)
            # Only what a value range is taken from: a day of all columns is many times larger.
            rows = _output_rows(self.job, missing[0], missing[-1] + pd.Timedelta(days=1))[_RANGE_COLUMNS]
            by_day = {day: frame for day, frame in rows.groupby(rows["timestamp"].dt.floor("D"))}
            for day in missing:
                self._days[day] = by_day.get(day, rows.iloc[:0])
        for day in days:
            self._days.move_to_end(day)
        rows = pd.concat([self._days[day] for day in days], ignore_index=True) if len(days) > 1 else self._days[days[0]]
        while len(self._days) > max(self.keep, len(days)):
            self._days.popitem(last=False)
        return rows[(rows["timestamp"] >= utc_stamp(start)) & (rows["timestamp"] < utc_stamp(end))]


def event_value_ranges(
    job: JobConfig,
    series: str,
    feature: str | None,
    start: datetime,
    end: datetime,
    where: str | None = None,
    *,
    published: Callable[[datetime, datetime], pd.DataFrame] | None = None,
) -> dict[str, tuple[float, float]]:
    """Range of the actual values of an event's rows in the published output, per feature.

    The event's rows are the anomalous rows of the series (and feature) in ``[start, end]``;
    when none is flagged (a person labels an anomaly the model missed), all its rows there. A
    feature without rows among them has no range. ``where`` names the label's source in errors
    (a file's row) before its job, series and feature. ``published`` reads the job's rows in
    ``[start, end)`` (for many labels, one that keeps what it read); else the output is read.
    """
    read = published or (lambda low, high: _output_rows(job, low, high))
    rows = read(start, end + timedelta(microseconds=1))  # end is inclusive
    rows = rows[rows["series"] == series]
    if feature is not None:
        rows = rows[rows["feature"] == feature]
    if rows["is_anomaly"].any():
        rows = rows[rows["is_anomaly"]]
    rows = rows.dropna(subset=["value"])
    # An infinite value (scored as an anomaly) would make the range unbounded: a false alarm on
    # an event holding one silenced every later spike of any size above its least value.
    finite = rows[np.isfinite(rows["value"].astype(float))]
    if finite.empty and not rows.empty:
        raise LabelError(
            f"{where + ': ' if where else ''}{_where(job.name, series, feature)}: the event's values in "
            f"[{start.isoformat()}, {end.isoformat()}] are all infinite, which gives no value range; "
            "give value_min and value_max"
        )
    rows = finite
    if rows.empty:
        raise LabelError(
            f"{where + ': ' if where else ''}{_where(job.name, series, feature)}: "
            f"no published output rows in [{start.isoformat()}, {end.isoformat()}] "
            "to take the value range from; run predict for that window first, or give value_min and value_max"
        )
    values = rows.groupby("feature", observed=True)["value"]
    return {str(name): (float(low), float(high)) for name, low, high in zip(values.min().index, values.min(), values.max())}


class LabelStore:
    """The labels table: ``add`` replaces a verdict atomically, reads filter by job, series and window.

    ``jobs`` are the configurations the store may need (to check series and features and to
    read published outputs); another job named in a call is loaded from the job files.
    """

    def __init__(self, engine: sa.Engine, table: str = "anomaly_labels", jobs: Mapping[str, JobConfig] | None = None):
        self.engine = engine
        self.name = table
        self.table = _definition(table)
        self._jobs = dict(jobs or {})
        self._ready = False  # the table exists with every column (a read may find it so)
        self._prepared = False  # and this store made it ready for writes (see _prepare)

    def _config(self, job: str) -> JobConfig:
        if job not in self._jobs:
            self._jobs[job] = get_job(job)
        return self._jobs[job]

    def _prepare(self) -> None:
        if self._prepared:
            return
        collation = None
        try:
            table = self.table
            if self.engine.dialect.name in ("mysql", "mariadb"):
                # utf8mb4_bin pads the shorter text with spaces before comparing (PAD SPACE), so the
                # unique key took "region=EU " for "region=EU": labelling one series deleted the
                # other's label. The output table's NO PAD collation, where the server has one.
                with self.engine.connect() as conn:
                    collation = binary_collation(conn)
                table = _definition(self.name, collation)
            table.create(self.engine, checkfirst=True)
        except sa.exc.SQLAlchemyError as exc:
            # Another process may have created it between the check and the CREATE.
            try:
                created = sa.inspect(self.engine).has_table(self.name)
            except sa.exc.SQLAlchemyError:
                created = False
            if not created:
                raise self._failure("create the labels table", exc) from exc
        self._add_ranges_column()
        if collation is not None:
            self._convert_collation(collation)
        self._ready = self._prepared = True
        _READY_TABLES.add((self.engine, self.name))

    def _ranges_column_exists(self) -> bool:
        return _RANGES in {column["name"] for column in sa.inspect(self.engine).get_columns(self.name)}

    def _add_ranges_column(self) -> None:
        """Give a table made before per-feature ranges were kept their column (nullable: old rows keep NULL)."""
        try:
            if self._ranges_column_exists():
                return
            with self.engine.begin() as conn:
                conn.execute(sa.text(f"ALTER TABLE {self.engine.dialect.identifier_preparer.quote(self.name)} ADD COLUMN {_RANGES} TEXT"))
        except sa.exc.SQLAlchemyError as exc:
            # Another writer may have added it between the check and the ALTER.
            try:
                added = self._ranges_column_exists()
            except sa.exc.SQLAlchemyError:
                added = False
            if not added:
                raise self._failure(f"add column {_RANGES} to the labels table", exc) from exc

    def _convert_collation(self, collation: str) -> None:
        """Convert a MySQL/MariaDB table made with another collation (utf8mb4_bin, which pads, or a
        case-insensitive one) to ``collation``, before its first write here.

        Unlike the output table's (which only gets a warning), this one is converted: its unique
        key decides which label a write replaces, so until then a write deleted the labels of other
        series. A labels table is small, and a finer collation cannot make two of its keys equal.
        """
        try:
            with self.engine.connect() as conn:
                found = conn.execute(
                    sa.text(
                        "SELECT DISTINCT collation_name FROM information_schema.columns WHERE table_schema = DATABASE() "
                        "AND table_name = :table AND collation_name IS NOT NULL"
                    ),
                    {"table": self.name},
                ).scalars().all()
        except sa.exc.SQLAlchemyError as exc:
            raise self._failure("read the collation of", exc) from exc
        if set(found) <= {collation}:
            return
        table = self.engine.dialect.identifier_preparer.quote(self.name)
        command = f"ALTER TABLE {table} CONVERT TO CHARACTER SET utf8mb4 COLLATE {collation}"
        try:
            with self.engine.begin() as conn:
                conn.exec_driver_sql(command)
        except sa.exc.SQLAlchemyError as exc:
            raise SinkError(
                f"the labels table {self.name!r} compares text with collation {', '.join(sorted(found))}, under which series "
                f"keys differing only in trailing spaces, case or accents are one, and converting it failed: "
                f"{getattr(exc, 'orig', None) or exc}; run once, as a user who may alter it: {command}"
            ) from exc
        log.warning("converted the labels table %s from collation %s to %s", self.name, ", ".join(sorted(found)), collation)

    def _failure(self, action: str, exc: Exception) -> SinkError:
        return SinkError(
            f"could not {action} {self.name!r} ({self.engine.url.render_as_string(hide_password=True)}): "
            f"{getattr(exc, 'orig', None) or exc}; check that the database is reachable and writable (labels.connection)"
        )

    def _validated(
        self,
        job: str,
        given: Mapping[str, Any],
        where: str | None = None,
        known: Sequence[str] | None = None,
        published: Callable[[datetime, datetime], pd.DataFrame] | None = None,
    ) -> Label:
        """The label ``add`` would store from ``given`` (its keyword names), after every check;
        nothing is written. ``where`` names the source in errors (a file and row); ``known`` the
        series with models, listed once for many labels; ``published`` reads the job's output
        (see :func:`event_value_ranges`)."""
        series, start, end, verdict = given["series"], given["start"], given["end"], given["verdict"]
        feature = given.get("feature")
        row = where  # a file's row, or None
        config = self._config(job)
        series = _text(series, "series", where or _where(job), limit=_SERIES_CHARS)
        where = where or _where(job, series, feature if isinstance(feature, str) else None)
        if feature is not None:
            feature = _text(feature, "feature", where) or None
        if feature is not None and feature not in config.features:
            raise LabelError(f"{where}: unknown feature; job {job!r} watches {', '.join(config.features)}")
        check_series(config, series, where)
        _check_known_series(config, series, where, known)
        start_at, end_at = as_utc(start, "start", where), as_utc(end, "end", where)
        if end_at < start_at:
            raise LabelError(
                f"{where}: end {end_at.isoformat()} is before start {start_at.isoformat()}; "
                "end is the last anomalous timestamp of the event (inclusive)"
            )
        if not isinstance(verdict, bool):
            raise LabelError(f"{where}: verdict must be true (a real anomaly) or false (a false alarm), got {verdict!r}")
        low, high = _number(given.get("value_min"), "value_min", where), _number(given.get("value_max"), "value_max", where)
        if (low is None) != (high is None):
            raise LabelError(f"{where}: give both value_min and value_max, or neither (then the published output gives them)")
        ranges: dict[str, tuple[float, float]] | None
        if low is None or high is None:
            ranges = event_value_ranges(config, series, feature, start_at, end_at, row, published=published)
            low, high = min(lo for lo, _ in ranges.values()), max(hi for _, hi in ranges.values())
        elif low > high:
            raise LabelError(f"{where}: value_min {low} is larger than value_max {high}")
        else:
            # A range given for the whole series is the person's word for each of its features.
            ranges = {name: (low, high) for name in config.features}
        return Label(
            job=job,
            series=series,
            feature=feature,
            start=start_at,
            end=end_at,
            verdict=verdict,
            value_min=low,
            value_max=high,
            note=_text(given.get("note") or "", "note", where),
            author=_text(given.get("author") or "", "author", where, limit=_AUTHOR_CHARS),
            created_at=datetime.now(UTC),
            value_ranges=ranges if feature is None else None,
        )

    def add(
        self,
        job: str,
        series: str,
        start: datetime | str,
        end: datetime | str,
        verdict: bool,
        *,
        feature: str | None = None,
        value_min: float | None = None,
        value_max: float | None = None,
        note: str = "",
        author: str = "",
    ) -> Label:
        """Store a verdict; the same (job, series, feature, start, end) replaces the earlier one."""
        details = {"feature": feature, "value_min": value_min, "value_max": value_max, "note": note, "author": author}
        label = self._validated(job, {"series": series, "start": start, "end": end, "verdict": verdict, **details})
        self.write([label])
        log.info(
            "labelled %s [%s, %s] as %s (by %r)",
            _where(job, label.series, label.feature),
            label.start.isoformat(),
            label.end.isoformat(),
            "a true anomaly" if label.verdict else "a false alarm",
            label.author,
        )
        return label

    def write(self, labels: Iterable[Label]) -> int:
        """Replace the rows of these labels' keys by them, all in one transaction.

        Delete-then-insert rather than a dialect's upsert (``ON CONFLICT``, ``ON DUPLICATE KEY``):
        it is the same statement on every database, like the output table's window replace.
        Two writers at once can still collide between the delete and the insert: on the same key
        the unique constraint refuses the second insert (never a duplicate); on MySQL/MariaDB even
        two different events of one series can deadlock, as each DELETE also locks the gap where
        the other inserts, and InnoDB rolls one transaction back. Either way the refused
        transaction is run again, which stores its labels (replacing the first writer's row on the
        same key): a person's verdict is not lost because someone else labelled at that moment.
        """
        labels = list(labels)
        # One statement per kind, run for all rows (executemany): a statement per label took
        # 15 s to import 20,000 labels into SQLite. The last label of a key given twice wins.
        rows = list({tuple(row[name] for name in _KEY): row for row in map(self._row, labels)}.values())
        c = self.table.c
        delete = sa.delete(self.table).where(*(c[name] == sa.bindparam(f"key_{name}") for name in _KEY))
        keys = [{f"key_{name}": row[name] for name in _KEY} for row in rows]
        self._prepare()
        for attempt in range(1, _WRITE_ATTEMPTS + 1):
            try:
                with self._transaction() as conn:
                    if rows:
                        conn.execute(delete, keys)
                        conn.execute(sa.insert(self.table), rows)
                return len(labels)
            except sa.exc.SQLAlchemyError as exc:
                if attempt == _WRITE_ATTEMPTS or not (isinstance(exc, sa.exc.IntegrityError) or deadlocked(exc)):
                    raise self._failure("write labels to", exc) from exc
                log.info("a concurrent writer of labels got in the way (attempt %d of %d); writing again", attempt, _WRITE_ATTEMPTS)
                # Random, so that two writers that collided do not meet again.
                time.sleep(random.uniform(0, _RETRY_BACKOFF_SECONDS * attempt))
        return 0  # pragma: no cover - the loop returns or raises

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sa.Connection]:
        """A write transaction, at READ COMMITTED on PostgreSQL whatever the session's default.

        Under REPEATABLE READ or SERIALIZABLE (a server's, role's or URL's
        default_transaction_isolation), a writer whose DELETE waited for another writer of the
        same label failed with "could not serialize access due to concurrent delete" once that
        one committed, and that person's verdict was lost. Under READ COMMITTED its DELETE skips
        the row deleted meanwhile and its INSERT meets the new one in the unique key, an
        IntegrityError that :meth:`write` runs again (as on MySQL/MariaDB and SQLite, whatever
        their isolation).
        """
        with self.engine.connect() as conn:
            if conn.dialect.name == "postgresql":
                conn.execution_options(isolation_level="READ COMMITTED")
            with conn.begin():
                yield conn

    def remove(
        self, job: str, series: str, start: datetime | str, end: datetime | str, *, feature: str | None = None
    ) -> Label | None:
        """Withdraw the verdict on one event (the key :meth:`add` stored it under); the removed
        label, or None when there was none. A verdict given by mistake must be retractable:
        flipping it to the opposite verdict still leaves a verdict that counts (a false alarm
        silences alerts, a true anomaly is what tuning scores against)."""
        where = _where(job, series, feature)
        series = _text(series, "series", where)
        if feature is not None:
            feature = _text(feature, "feature", where) or None
        start_at, end_at = as_utc(start, "start", where), as_utc(end, "end", where)
        c = self.table.c
        key = [c.job == job, c.series == series, c.feature == (feature or ""), c.start_time == _naive(start_at), c.end_time == _naive(end_at)]
        [found] = [label for label in self._select(sa.select(self.table).where(*key), "read labels from")
                   if _exactly(label, job, series, [feature or ""])] or [None]
        if found is None:
            return None
        self._prepare()  # a table of another collation is converted first: its DELETE would take other series' labels too
        try:
            with self._transaction() as conn:
                conn.execute(sa.delete(self.table).where(*key))
        except sa.exc.SQLAlchemyError as exc:
            raise self._failure("remove a label from", exc) from exc
        log.info("withdrew the verdict on %s [%s, %s]", where, start_at.isoformat(), end_at.isoformat())
        return found

    @staticmethod
    def _row(label: Label) -> dict[str, Any]:
        return {
            "job": label.job,
            "series": label.series,
            "feature": label.feature or "",
            "start_time": _naive(label.start),
            "end_time": _naive(label.end),
            "verdict": label.verdict,
            "value_min": label.value_min,
            "value_max": label.value_max,
            "note": label.note,
            "author": label.author,
            "created_at": _naive(label.created_at),
            _RANGES: None if label.value_ranges is None else json.dumps({k: list(v) for k, v in label.value_ranges.items()}),
        }

    @staticmethod
    def _label(row: sa.Row[Any]) -> Label:
        text = getattr(row, _RANGES, None)
        ranges = None if text is None else {str(k): (float(v[0]), float(v[1])) for k, v in json.loads(text).items()}
        return Label(
            job=row.job,
            series=row.series,
            feature=row.feature or None,
            start=_aware(row.start_time),
            end=_aware(row.end_time),
            verdict=bool(row.verdict),
            value_min=row.value_min,
            value_max=row.value_max,
            note=row.note,
            author=row.author,
            created_at=_aware(row.created_at),
            value_ranges=ranges,
        )

    def _select(self, query: sa.Select[Any], action: str) -> list[Label]:
        # Training and scoring read each series through a store of their own: looking the table
        # up again for each (two catalogue queries) took longer than reading its labels.
        seen = not self._ready and (self.engine, self.name) in _READY_TABLES
        self._ready = self._ready or seen
        try:
            # Reading never creates the table (a reader may have no right to): no table, no labels.
            if not self._ready:
                # Connecting to SQLite makes its file: a read before any label was written left
                # an empty database behind (and failed where the folder is read-only).
                database = file_database(self.engine.url)
                if database is not None and not database.exists():
                    return []
                if not sa.inspect(self.engine).has_table(self.name):
                    return []
                # A table made before value_ranges existed is read without it (a write adds it).
                self._ready = self._ranges_column_exists()
                if not self._ready:
                    query = query.with_only_columns(*(c for c in self.table.c if c.name != _RANGES))
                else:
                    _READY_TABLES.add((self.engine, self.name))
            with self.engine.connect() as conn:
                return [self._label(row) for row in conn.execute(query)]
        except sa.exc.SQLAlchemyError as exc:
            if seen:  # the table may have been dropped since another store saw it: look it up again
                _READY_TABLES.discard((self.engine, self.name))
                self._ready = False
                return self._select(query, action)
            raise self._failure(action, exc) from exc

    def labels(
        self,
        job: str,
        series: str | None = None,
        start: datetime | str | None = None,
        end: datetime | str | None = None,
    ) -> list[Label]:
        """Labels of ``job`` (and ``series``) overlapping ``[start, end]`` (unbounded where None),
        ordered by series, start and feature; times UTC-aware."""
        where = _where(job, series)
        c = self.table.c
        query = sa.select(self.table).where(c.job == _text(job, "job", where))
        if series is not None:
            query = query.where(c.series == _text(series, "series", where))
        if start is not None:
            query = query.where(c.end_time >= _naive(as_utc(start, "start", where)))
        if end is not None:
            query = query.where(c.start_time <= _naive(as_utc(end, "end", where)))
        found = self._select(query.order_by(c.series, c.start_time, c.feature, c.end_time), "read labels from")
        return [label for label in found if _exactly(label, job, series)]

    def known_false_alarm(
        self,
        job: str,
        series: str,
        feature: str | None,
        value_min: float,
        value_max: float,
        *,
        span: tuple[datetime, datetime] | None = None,
        flagged: Iterable[str] = (),
    ) -> Label | None:
        """The latest False label of this series whose value range contains ``[value_min, value_max]``
        and whose verdict still stands: an event a person already called normal, repeated.

        A label naming a feature only matches events of that feature. A whole-series label matches
        an event of a feature against that feature's range in the labelled event (a feature with no
        flagged rows there has none, and is not matched); the label is returned with value_min and
        value_max set to that range. Without ``feature``, the span of all features is used. A
        whole-series label stored before per-feature ranges were kept holds one range over all
        features, in mixed units: it is read as its feature's range when the job has a single
        feature, and matches no feature's event otherwise (re-mark the event to store its ranges):
        a doubtful match must not silence an alert.

        Overlapping labels are read by the rule of training and tuning (:func:`label_verdicts`: the
        most specific label, then the latest). A False label stands only while no label overruling
        it says True at any moment of its span, for ``feature`` (for any feature, without one): its
        range then holds values a person called a real anomaly (an event first dismissed, then
        re-scored and confirmed; a whole-series false alarm whose feature was confirmed). ``span``
        is the event's own first and last anomalous timestamps and ``flagged`` its flagged features:
        a True verdict on one of them (or ``feature``) at any moment of ``span`` means a person
        confirmed this very event, and nothing silences it.
        """
        where = _where(job, series, feature)
        if any(isinstance(value, float) and math.isinf(value) for value in (value_min, value_max)):
            return None  # labels hold finite ranges: none contains an infinite value
        low, high = _number(value_min, "value_min", where), _number(value_max, "value_max", where)
        if low is None or high is None:
            return None
        c = self.table.c
        features = [""] if not feature else ["", feature]
        query = (
            sa.select(self.table)
            .where(c.job == job, c.series == series, c.verdict == sa.false(), c.feature.in_(features))
            # The span holds every feature's range: a label outside it cannot match.
            .where(c.value_min <= low, c.value_max >= high)
            .order_by(c.created_at.desc())
        )
        candidates = [label for label in self._select(query, "read labels from") if _exactly(label, job, series, features)]
        if not candidates:
            return None
        # Every label that may overrule a candidate or judge the event itself (one more query, only
        # when there is a candidate: most events match none).
        moments = [moment for label in candidates for moment in (label.start, label.end)] + list(span or ())
        overlapping = self.labels(job, series, min(moments), max(moments))
        # Without a feature every feature counts; "" stands for those no label names (whole-series verdicts only).
        judged = [feature] if feature else sorted({label.feature for label in overlapping if label.feature}) + [""]
        if span is not None and _confirmed_between(overlapping, *span, sorted({*judged, *flagged})):
            return None
        for label in candidates:
            if _confirmed_between(overlapping, label.start, label.end, judged):
                continue
            if label.feature is not None or not feature:
                return label
            if label.value_ranges is None:  # an older whole-series label: one range over all features
                if list(self._config(job).features) == [feature]:
                    return label
                continue
            bounds = label.value_ranges.get(feature)
            if bounds is not None and bounds[0] <= low and high <= bounds[1]:
                return replace(label, value_min=bounds[0], value_max=bounds[1])
        return None


def _exactly(label: Label, job: str, series: str | None, features: Sequence[str] | None = None) -> bool:
    """Whether ``label`` is of ``job`` and ``series`` (and one of ``features``, ``""`` for none)
    character for character: a MySQL/MariaDB table not yet converted (see
    :meth:`LabelStore._convert_collation`) returns "region=EU" for "region=EU " too."""
    return label.job == job and series in (None, label.series) and (features is None or (label.feature or "") in features)


def label_store(job: JobConfig) -> LabelStore:
    """The labels table of ``job`` (its ``labels`` settings)."""
    return LabelStore(engine_for(job.labels.connection), job.labels.table, {job.name: job})


def _file_records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """``(where, record)`` per row of a CSV or JSON labels file, ``where`` naming file and row."""
    suffix = path.suffix.lower()
    try:
        # utf-8-sig: spreadsheets write "CSV UTF-8" with a byte order mark, which would stick to the first column's name.
        text = path.read_bytes().decode("utf-8-sig")  # whole, so a decoding error's position is the file's
    except UnicodeDecodeError as exc:
        line = exc.object[: exc.start].count(b"\n") + 1
        raise LabelError(
            f"{path}: line {line} is not UTF-8 text (byte {exc.object[exc.start]:#04x}); save the labels file as UTF-8 "
            "(in a spreadsheet: CSV UTF-8)"
        ) from exc
    except OSError as exc:
        raise LabelError(f"{path}: cannot read the labels file: {exc}") from exc
    if suffix == ".csv":
        import csv
        import io

        reader = csv.DictReader(io.StringIO(text))
        header = [name.strip() for name in reader.fieldnames or []]
        unnamed = [str(number) for number, name in enumerate(header, start=1) if not name]
        if unnamed and len(unnamed) < len(header):  # an empty file is told its missing columns below
            # Said apart: "unknown column(s) " with an empty name read as a bug, not as a trailing comma.
            raise LabelError(
                f"{path}: column(s) {', '.join(unnamed)} of the header have no name (a trailing comma makes one); "
                "name them or remove them from every line"
            )
        _check_columns(path, header)
        repeated = sorted({name for name in header if header.count(name) > 1})
        if repeated:  # DictReader would keep the last one's values silently
            raise LabelError(f"{path}: column(s) {', '.join(repeated)} given more than once in the header; keep one of each")
        records = []
        for number, row in enumerate(reader, start=1):
            if None in row:
                raise LabelError(f"{path}: row {number} (line {reader.line_num}): more values than the header has columns")
            if None in row.values():  # DictReader's filler for the columns a short row lacks
                raise LabelError(
                    f"{path}: row {number} (line {reader.line_num}): fewer values than the header has columns "
                    f"({', '.join(header)}); leave an optional value empty, but keep its comma"
                )
            records.append((f"{path}: row {number} (line {reader.line_num})", {k.strip(): v for k, v in row.items()}))
        return records
    if suffix in (".json", ".jsonl"):
        rows: list[tuple[str, Any]]
        if suffix == ".json":
            try:
                items = json.loads(text)
            except json.JSONDecodeError as exc:
                raise LabelError(f"{path}: not valid JSON: {exc}") from exc
            if isinstance(items, dict) and isinstance(items.get("labels"), list):
                items = items["labels"]
            if not isinstance(items, list):
                raise LabelError(f"{path}: a JSON labels file holds a list of objects (or {{\"labels\": [...]}})")
            # With its line: "row 237" of an exported, pretty-printed file left people counting objects.
            numbered = enumerate(zip(items, _json_item_lines(text), strict=True), start=1)
            rows = [(f"row {number} (line {line})", item) for number, (item, line) in numbered]
        else:
            # Each line is parsed alone: the decoder's own "line 1" named the wrong line of the file.
            lines = [(line_number, line) for line_number, line in enumerate(text.splitlines(), start=1) if line.strip()]
            rows = []
            for number, (line_number, line) in enumerate(lines, start=1):
                try:
                    rows.append((f"row {number} (line {line_number})", json.loads(line)))
                except json.JSONDecodeError as exc:
                    raise LabelError(
                        f"{path}: row {number} (line {line_number}) is not valid JSON: {exc.msg} at column {exc.colno}; "
                        "a .jsonl file holds one label object per line"
                    ) from exc
        records = []
        for row, item in rows:
            if not isinstance(item, dict):
                raise LabelError(f"{path}: {row}: each label is an object, got {type(item).__name__}")
            _check_columns(path, list(item), f" {row}:")
            records.append((f"{path}: {row}", item))
        return records
    raise LabelError(f"{path}: unknown labels file type {suffix or '(none)'!r}; use .csv, .json or .jsonl")


def _json_item_lines(text: str) -> list[int]:
    """The line each label object of a valid JSON labels file starts on: the items of its top-level
    list, or of the list under its (last) "labels" key."""
    decoder = json.JSONDecoder()
    newlines = [position for position, char in enumerate(text) if char == "\n"]

    def blank(position: int) -> int:
        while position < len(text) and text[position] in " \t\r\n":
            position += 1
        return position

    def items(position: int) -> list[int]:  # position: at the list's "["
        lines: list[int] = []
        position = blank(position + 1)
        while text[position] != "]":
            lines.append(bisect.bisect_left(newlines, position) + 1)
            position = blank(decoder.raw_decode(text, position)[1])
            position = blank(position + 1) if text[position] == "," else position
        return lines

    position = blank(0)
    if text[position] == "[":
        return items(position)
    found = 0
    position = blank(position + 1)
    while text[position] != "}":
        key, position = decoder.raw_decode(text, position)
        position = blank(blank(position) + 1)  # past the ":"
        if key == "labels":
            found = position
        position = blank(decoder.raw_decode(text, position)[1])
        position = blank(position + 1) if text[position] == "," else position
    return items(found)


def _check_columns(path: Path, columns: list[str], row: str = "") -> None:
    missing = [c for c in FILE_COLUMNS if c not in columns]
    unknown = [c for c in columns if c not in FILE_COLUMNS + OPTIONAL_FILE_COLUMNS]
    if missing or unknown:
        problems = []
        if missing:
            problems.append(f"missing column(s) {', '.join(missing)}")
        if unknown:
            problems.append(f"unknown column(s) {', '.join(unknown)}")
        raise LabelError(
            f"{path}:{row} {'; '.join(problems)}; a labels file has columns {', '.join(FILE_COLUMNS)} "
            f"and optionally {', '.join(OPTIONAL_FILE_COLUMNS)}"
        )


def import_labels(job: JobConfig, path: str | Path, *, author: str = "", store: LabelStore | None = None) -> list[Label]:
    """Store every label of a CSV or JSON file of known anomalies, all or none.

    Every row is checked before anything is written; then all are written in one transaction,
    so a bad row leaves the table as it was. Re-importing a file replaces its labels by the same
    ones (keys are (job, series, feature, start, end)); a key given twice in one file is an error.
    A label whose verdict is the one stored keeps the time it was first written: overlapping
    labels are decided by the latest written, and an unchanged file imported again is no later word.
    """
    path = Path(path)
    store = store or label_store(job)
    labels: list[Label] = []
    seen: dict[tuple[Any, ...], str] = {}
    records = _file_records(path)
    # Listed once: per row, a registry of thousands of series (one recursive listing of an
    # object store each time) made importing a file take minutes.
    known = _models_series(job) if records else []
    published = _PublishedDays(job)  # read once for all rows without value ranges, not once per row
    for where, record in records:
        feature = record.get("feature")
        given = {
            **record,
            "verdict": parse_verdict(record["verdict"], where),
            "feature": feature if feature not in ("", None) else None,
            "author": record.get("author") or author or f"import:{path.name}",
        }
        label = store._validated(job.name, given, where, known, published)
        key = (label.series, label.feature, label.start, label.end)
        if key in seen:
            raise LabelError(f"{where}: the same event as {seen[key].removeprefix(f'{path}: ')}; give each event once")
        seen[key] = where
        labels.append(label)
    if labels:
        # Else re-importing the same file made its old verdicts overrule every label given since
        # (a false alarm a person later confirmed silenced the alerts again).
        span = min(label.start for label in labels), max(label.end for label in labels)
        stored = {(label.series, label.feature, label.start, label.end): label for label in store.labels(job.name, None, *span)}
        labels = [_unchanged_since(label, stored.get((label.series, label.feature, label.start, label.end))) for label in labels]
    store.write(labels)
    log.info("imported %d labels of job %s from %s", len(labels), job.name, path)
    return labels


def _unchanged_since(label: Label, stored: Label | None) -> Label:
    """``label`` written when ``stored`` (its key's row) was, when it gives the same verdict."""
    if stored is None or stored.verdict != label.verdict:
        return label
    return replace(label, created_at=stored.created_at)


def label_of(event: AnomalyEvent, labels: Iterable[Label]) -> Label | None:
    """The label that shows the verdict on ``event`` (``labels`` as :meth:`LabelStore.labels` returns them).

    Labels are read by the rule alerts read them with (:func:`label_verdicts`), over the features
    alerts check (the event's top feature and those with anomalous rows) at every moment of its
    span. The event is a true anomaly when some label decides True on one of them somewhere: alerts
    then always send it, a person confirmed this very event. Else it is a false alarm when some
    label decides False there. Of the labels deciding that verdict, the one shown is the label of
    the top feature at the peak, what the event is about; else the latest written. So a
    whole-series false alarm overruled by a later true verdict on the event's feature shows the
    latter, as alerts send the event; a label that decides nothing of the event (overruled all over
    it, or of a feature not flagged in it) is not shown.
    """
    overlapping = [
        label
        for label in labels
        if label.series == event.series and label.start <= event.end and label.end >= event.start
    ]
    if not overlapping:
        return None
    # The features known_false_alarm is asked about (the alerts' top feature first), so the label
    # shown never says "false alarm" of an event alerts send as confirmed.
    features = list(dict.fromkeys([event.top_feature, *event.value_ranges]))
    peak = utc_stamp(event.peak_timestamp)
    index = _moments(overlapping, event.start, event.end).union(pd.DatetimeIndex([peak]))
    ordered, owner = _deciding(index, features, overlapping)
    at_peak = int(owner[index.get_loc(peak), 0])
    for verdict in (True, False):  # one true verdict confirms the event, whatever else was said of it
        deciding = {int(number) for number in np.unique(owner) if number >= 0 and ordered[number].verdict == verdict}
        if not deciding:
            continue
        if at_peak in deciding:
            return ordered[at_peak]
        return ordered[max(deciding, key=lambda number: (ordered[number].created_at, number))]
    return None


def utc_stamp(moment: Any) -> pd.Timestamp:
    """``moment`` as a UTC timestamp."""
    # The rows' times are UTC; a naive index (a file without offsets) is read as UTC, as labels are.
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def label_rows(index: pd.DatetimeIndex, label: Label) -> np.ndarray:
    """Positions of the rows of ``index`` from ``label.start`` to ``label.end`` (both inclusive)."""
    stamps = index.tz_convert("UTC") if index.tz is not None else index.tz_localize("UTC")
    return np.flatnonzero((stamps >= utc_stamp(label.start)) & (stamps <= utc_stamp(label.end)))


@dataclass(frozen=True)
class Verdicts:
    """What people said of each row and feature: ``values`` is 1.0 (a true anomaly), 0.0 (a
    false alarm) or NaN (no label), rows x features; ``overruled`` counts the labels overlapping
    the rows that decide none of them (other labels win everywhere they lie)."""

    values: np.ndarray
    overruled: int = 0

    @property
    def confirmed(self) -> np.ndarray:
        return self.values == 1.0


def label_verdicts(index: pd.Index, features: Sequence[Any], labels: Iterable[Label]) -> Verdicts:
    """The verdict that holds on each row and feature of ``index`` (:class:`Verdicts`).

    Labels may overlap: an event re-scored and re-labelled with another span keeps its first
    label, and a feature may be judged apart from its whole series. Each row and feature takes
    the verdict of the most specific label over it (a feature's label over a whole-series one),
    and of those the most recently written (``created_at``): the later word on the same values.
    A label of a feature the job no longer watches decides nothing. Training, tuning and alerts
    (:meth:`LabelStore.known_false_alarm`) all read labels through this, so they never disagree on
    what a label means.
    """
    if not isinstance(index, pd.DatetimeIndex):
        return Verdicts(np.full((len(index), len(features)), np.nan))
    ordered, owner = _deciding(index, features, labels)
    verdicts = np.array([float(label.verdict) for label in ordered] + [np.nan])
    values = verdicts[owner]  # owner -1 (no label) picks the NaN at the end
    deciding = {int(number) for number in np.unique(owner) if number >= 0}
    return Verdicts(values, sum(1 for number, label in enumerate(ordered) if number not in deciding))


def _deciding(index: pd.DatetimeIndex, features: Sequence[Any], labels: Iterable[Label]) -> tuple[list[Label], np.ndarray]:
    """The rule of :func:`label_verdicts`, saying which label decides: ``labels`` in the order they
    apply, and per row and feature of ``index`` the position of the deciding one there (-1: none)."""
    columns = {str(feature): number for number, feature in enumerate(features)}
    owner = np.full((len(index), len(features)), -1)
    ordered = sorted(labels, key=lambda label: (label.feature is not None, label.created_at))
    for number, label in enumerate(ordered):
        if label.feature is not None and label.feature not in columns:
            continue
        rows = label_rows(index, label)
        owner[(rows, slice(None)) if label.feature is None else (rows, columns[label.feature])] = number
    return ordered, owner


def deciding_labels(labels: Sequence[Label], start: datetime, end: datetime, features: Sequence[str]) -> list[Label]:
    """The labels of ``labels`` that decide the verdict (:func:`label_verdicts`) at some moment of
    ``[start, end]`` on one of ``features``, in the order the rule applies them."""
    ordered, owner = _deciding(_moments(labels, start, end), features, labels)
    return [ordered[number] for number in sorted({number for number in owner.ravel().tolist() if number >= 0})]


def _confirmed_between(labels: Sequence[Label], start: datetime, end: datetime, features: Sequence[str]) -> bool:
    """Whether :func:`label_verdicts` gives a True verdict on one of ``features`` at some moment of
    ``[start, end]``. Verdicts change only at the labels' starts and ends, so the rule is applied at
    those inside the span, at its edges and between each two: every moment, without the rows."""
    return bool(label_verdicts(_moments(labels, start, end), features, labels).confirmed.any())


def _moments(labels: Sequence[Label], start: datetime, end: datetime) -> pd.DatetimeIndex:
    """Moments of ``[start, end]`` that see every verdict ``labels`` give on it: those of their
    starts and ends inside it, its edges, and one between each two (verdicts change only there)."""
    edges = {utc_stamp(start), utc_stamp(end)}
    edges |= {utc_stamp(moment) for label in labels for moment in (label.start, label.end) if start <= moment <= end}
    ordered = sorted(edges)
    return pd.DatetimeIndex(sorted(ordered + [low + (high - low) / 2 for low, high in zip(ordered, ordered[1:], strict=False)]))
