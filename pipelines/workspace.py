"""Where a run keeps its intermediate files, and the windows it works on.

Tasks pass paths, not data, between each other (Airflow's XCom holds only small values):
each run has a private folder keyed by job and run id, under ``$ANOMALY_PIPELINES_HOME/work``.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pipelines.config import JobConfig, base_dir, resolve_path
from pipelines.errors import ConfigError
from pipelines.series import series_slug


def home() -> Path:
    """Root of local state: work folders, quarantine, default outputs and models."""
    return Path(os.environ.get("ANOMALY_PIPELINES_HOME", base_dir() / "var")).resolve()


def _safe(text: str) -> str:
    """``text`` (a run id) as one file name, distinct for distinct texts.

    Airflow accepts run ids such as ``..`` (its default ``allowed_run_id_pattern`` allows dots):
    taken as is, ``work/<job>/..`` is the work folder of every job, which cleanup then deletes.
    A name that had to be changed (characters replaced, cut, or a leading dot) therefore ends
    with a digest of the whole text, so that two run ids never share a folder.
    """
    safe = re.sub(r"[^A-Za-z0-9_.=-]+", "_", text)
    if safe == text and len(safe) <= 120 and not safe.startswith("."):
        return safe
    digest = hashlib.sha256(text.encode()).hexdigest()[:12]
    return f"{safe.lstrip('.')[:107]}-{digest}"


#: The purposes whose runs have folders of their own (see :class:`Workspace`).
#: ``score`` is one-off scoring of a file (the ``<job>__score`` DAG, ``predict --input``): its own
#: folders, as a manual predict and a manual score run may be given one run id.
PURPOSES = ("train", "tune", "predict", "score")
#: Purposes named otherwise elsewhere: validation calls one-off scoring ``one_off`` (its reports
#: say so), and its chunks and quarantine are the score run's, which its cleanup clears.
_RUNS_AS = {"one_off": "score"}


@dataclass(frozen=True)
class Workspace:
    """Intermediate files of one run of one job, for one purpose (train, tune, predict or score).

    A run id is not unique across a job's DAGs: Airflow names a scheduled run after the time it
    runs (``scheduled__<data interval end>``), so the weekly train and the hourly predict due at
    the same instant got the same id, wrote the same ``raw.parquet``, and the first to finish
    removed the other's work folder (and a train's success removed the quarantine a failed
    predict of that id had left). Each purpose has its folder: ``work/<job>/<purpose>/<run>``.
    """

    job: str
    run_id: str
    #: ``train``, ``tune``, ``predict`` or ``score`` (``one_off`` is taken as ``score``); empty: directly
    #: under the job (code and tests that run one purpose only).
    purpose: str = ""

    def __post_init__(self) -> None:
        # The rule lives here, not at each caller: validation names its purpose one_off (its
        # report says so), and a caller passing that on made a one_off folder no cleanup clears.
        object.__setattr__(self, "purpose", _RUNS_AS.get(self.purpose, self.purpose))

    @property
    def root(self) -> Path:
        return home() / "work" / self.job / self.purpose / _safe(self.run_id)

    @property
    def raw_batch(self) -> str:
        return str(self.root / "raw.parquet")

    def series_batch(self, series: str) -> str:
        return str(self.root / "series" / f"{series_slug(series)}.parquet")

    def scored(self, series: str) -> str:
        return str(self.root / "scored" / f"{series_slug(series)}.parquet")

    def raw_chunk(self, index: int) -> str:
        return str(self.root / "chunks" / f"raw-{index:06d}.parquet")

    @property
    def chunk_manifest(self) -> str:
        """Which series each raw chunk holds (and how many rows), written by the split."""
        return str(self.root / "chunks" / "manifest.json")

    def scored_chunk(self, index: int) -> str:
        return str(self.root / "scored" / f"chunk-{index:06d}.parquet")

    @property
    def quarantine(self) -> str:
        return str(home() / "quarantine" / self.job / self.purpose / _safe(self.run_id))

    def chunk_part(self, index: int) -> str:
        """What follows :attr:`quarantine` (and the run id, in the validation report's name) for
        chunk ``index`` of a one-off input: a folder inside the run's quarantine folder.

        Beside it (``<run>-chunk<N>``), a chunk's folder was the folder of a run named so: run
        ``X-chunk3``'s rejected batch and run ``X``'s rejected chunk 3 shared a folder, and run
        ``X`` succeeding removed the other run's quarantine.
        """
        return f"/chunk{index}"

    def quarantines(self) -> list[Path]:
        """The run's quarantine folder, when there is one: it holds its batch's rejected rows and
        each one-off chunk's (:meth:`chunk_part`), and no other run's."""
        own = Path(self.quarantine)
        return [own] if own.is_dir() and not own.is_symlink() else []


def to_utc(value: datetime | str | None) -> datetime | None:
    """A UTC-aware datetime from an ISO string or datetime; naive values are taken as UTC."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ConfigError(f"{value!r} is not an ISO 8601 date-time (e.g. 2024-03-01T00:00:00Z)") from exc
    if type(value) is not datetime:
        # Airflow hands over pendulum DateTimes, whose arithmetic drops a standard-library tzinfo
        # (``start - timedelta`` came out naive): windows hold plain datetimes.
        value = datetime(
            value.year, value.month, value.day, value.hour, value.minute, value.second, value.microsecond,
            tzinfo=value.tzinfo, fold=value.fold,
        )
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


@dataclass(frozen=True)
class Window:
    """A half-open time window ``[start, end)`` in UTC."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ConfigError(f"window end {self.end.isoformat()} is not after its start {self.start.isoformat()}")

    def __str__(self) -> str:
        return f"[{self.start.isoformat()}, {self.end.isoformat()})"

    def to_dict(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}

    @classmethod
    def from_dict(cls, data: dict[str, str]) -> Window:
        """Inverse of :meth:`to_dict` (windows travel between tasks as ISO strings)."""
        return cls(to_utc(data["start"]), to_utc(data["end"]))

    def key(self) -> str:
        return f"{self.start:%Y%m%dT%H%M%S}_{self.end:%Y%m%dT%H%M%S}"


def _job_said(job: JobConfig | None) -> str:
    """The start of an error about ``job``'s window: every error names its job."""
    return f"job {job.name}: " if job is not None else ""


def _bound(job: JobConfig | None, name: str, value: datetime | str | None) -> datetime | None:
    """:func:`to_utc` of a window's ``name`` bound, its error naming the job and the bound."""
    try:
        return to_utc(value)
    except ConfigError as exc:
        raise ConfigError(f"{_job_said(job)}{name} {exc}") from exc


def _run_window(job: JobConfig | None, start: datetime, end: datetime) -> Window:
    """``Window(start, end)``, refused naming the job: :class:`Window`'s own check knows no job,
    and a run's window comes from people (a run's conf, the CLI's options)."""
    if end <= start:
        raise ConfigError(
            f"{_job_said(job)}window end {end.isoformat()} is not after its start {start.isoformat()}; give a start before the end"
        )
    return Window(start, end)


def prediction_window(
    interval_start: datetime | str | None,
    interval_end: datetime | str | None,
    *,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    job: JobConfig | None = None,
    now: datetime | None = None,
) -> Window:
    """The window predict scores: the data interval, unless a manual run overrides either bound.

    ``job``: the job it is for, named by the errors (every error names its job). A ``start`` after
    ``now`` (default: the current time) is refused: no data can be in the window yet.
    """
    chosen_start = _bound(job, "start", start) or _bound(job, "interval start", interval_start)
    chosen_end = _bound(job, "end", end) or _bound(job, "interval end", interval_end)
    if chosen_start is None and end:
        raise ConfigError(
            f"{_job_said(job)}end {str(end)!r} needs a start too: the run has no data interval to take one from. "
            f"Give start as well, e.g. start {chosen_end - timedelta(days=1):%Y-%m-%d}"
        )
    if chosen_start is None or chosen_end is None:
        raise ConfigError(f"{_job_said(job)}predict needs a window: a scheduled data interval, or both 'start' and 'end'")
    window = _run_window(job, chosen_start, chosen_end)
    if start:
        _refuse_future(job, window, "start", start, now)
    return window


def training_window(
    job: JobConfig,
    interval_end: datetime | str | None,
    *,
    start: datetime | str | None = None,
    end: datetime | str | None = None,
    now: datetime | None = None,
) -> Window:
    """Train reads ``training_window`` back from the interval end (or the overrides); a window
    that a given ``start`` or ``end`` puts after ``now`` (default: the current time) is refused."""
    chosen_end = _bound(job, "end", end) or _bound(job, "interval end", interval_end)
    if chosen_end is None:
        raise ConfigError(f"{_job_said(job)}the training window needs an end: a scheduled data interval, or 'end'")
    window = _run_window(job, _bound(job, "start", start) or chosen_end - job.training_window, chosen_end)
    if start:
        _refuse_future(job, window, "start", start, now)
    elif end:
        _refuse_future(job, window, "end", end, now)
    return window


def _refuse_future(job: JobConfig | None, window: Window, name: str, value: datetime | str, now: datetime | None) -> None:
    """Refuse a window, set by the ``name`` bound a person gave, that starts after ``now``.

    No data can be in it yet: reading it failed as "no rows, the data may not have landed yet",
    a source error that Airflow retried for minutes, and never named the bound that was wrong.
    """
    now = to_utc(now) or utcnow()
    if window.start < now:
        return
    raise ConfigError(
        f"{_job_said(job)}{name} {str(value)!r} puts the window {window} after now ({now:%Y-%m-%dT%H:%M}Z): no data "
        f"can be in it yet. Give {'a start' if name == 'start' else 'an end'} before now, "
        f"e.g. {name} {(now - timedelta(days=1)):%Y-%m-%d}"
    )


def last_period(job: JobConfig, due: datetime | str | None) -> Window:
    """The last whole period of the job's ``frequency`` before ``due`` (else now): the window of a
    predict run that has no data interval, no ``start`` and ``end``, and no predict schedule to
    infer one from."""
    from pipelines.resampling import floor_to_grid

    end = floor_to_grid(to_utc(due) or utcnow(), job.frequency)
    return Window(end - job.frequency, end)


def triggered_training_end(job: JobConfig, event_ends: list[str], due: datetime | None) -> datetime:
    """Where a train run without a data interval (asset-triggered or manual) ends its window.

    The latest ``end`` of the triggering asset events (the tune run's window, whose data its
    parameters were chosen on, or the predict window whose monitoring asked for a retrain),
    else when the run was due, else now; floored to the job's frequency grid.
    """
    from pipelines.resampling import floor_to_grid

    latest = max((to_utc(end) for end in event_ends), default=None)
    return floor_to_grid(latest or to_utc(due) or utcnow(), job.frequency)


def schema_record_path(job: JobConfig) -> str:
    """The column kinds of the last run that read ``job``'s source, for schema drift checks.

    Keyed by the source's settings: pointing a job at another source starts a new record rather
    than comparing two different sources.
    """
    digest = hashlib.sha256(job.source.model_dump_json().encode()).hexdigest()[:16]
    return str(home() / "work" / job.name / f"source-schema-{digest}.json")


def validation_report_path(job: JobConfig, purpose: str, window: Window, run_id: str) -> str:
    """Validation results are kept next to the outputs, one JSON per run."""
    root = resolve_path(job.outputs.parquet).rstrip("/")
    return f"{root}/_validation/job={job.name}/{purpose}_{window.key()}_{_safe(run_id)}.json"


def one_off_output(job: JobConfig, run_id: str) -> str:
    """Where a one-off scoring run without an ``output`` writes: beside, never into, the job's dataset."""
    root = resolve_path(job.outputs.parquet).rstrip("/")
    return f"{root}/_one_off/job={job.name}/{_safe(run_id)}.parquet"


def file_identity(path: str) -> str:
    """What tells two names of one file apart from two files: a URL as written, a local path with
    symbolic links and ``./``/``..`` resolved (an output that is the input must be caught however
    it is spelled)."""
    return path if "://" in path else os.path.realpath(path)


def check_output_file(path: str, what: str = "output") -> None:
    """Fail before any work when ``path`` names a folder or another format than Parquet: the output
    is one Parquet file, and finding out when it is moved into place came after scoring the whole
    input, as a traceback."""
    # An object store has no folders to collide with, but a URL ending in "/" names one all the
    # same: s3fs drops the slash and writes an object with the folder's name.
    if path.endswith(("/", os.sep)) or ("://" not in path and os.path.isdir(path)):
        suggestion = os.path.join(path, "scored.parquet")
        raise ConfigError(f"{what} {path!r} is a folder: give the path of the Parquet file to write, e.g. {suggestion!r}")
    from pipelines.sources.file import suffix_format  # pandas and pyarrow: not at this module's import

    # Parquet was written under any name: scores.csv was a Parquet file no CSV reader opens.
    written = suffix_format(path)
    if written not in (None, "parquet"):
        raise ConfigError(f"{what} {path!r} names a {written} file, but the scores are written as Parquet: give a .parquet name")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


__all__ = [
    "Window",
    "Workspace",
    "check_output_file",
    "home",
    "last_period",
    "one_off_output",
    "prediction_window",
    "schema_record_path",
    "to_utc",
    "training_window",
    "utcnow",
    "validation_report_path",
]
