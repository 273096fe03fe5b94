"""Whole train, tune and predict runs in one process: what the CLI does without Airflow.

Each function chains the same step functions that the Airflow tasks call one by one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd

from pipelines import storage
from pipelines.config import DEFAULT_CHUNK_ROWS, MAX_CHUNK_ROWS, JobConfig, resolve_path
from pipelines.durations import rough_duration_text
from pipelines.errors import ConfigError, ModelError, PipelineError, SourceConfigError
from pipelines.extraction import extract, extract_chunks, read_series, validate
from pipelines.scoring import (
    PublishResult,
    check_serving,
    chunk_file_rows,
    chunk_input_rows,
    publish_file,
    publish_scored,
    score_chunk,
    score_series,
)
from pipelines.training import registry_for, train_series
from pipelines.tuning import tune_series
from pipelines.workspace import (
    PURPOSES,
    Window,
    Workspace,
    check_output_file,
    file_identity,
    home,
    one_off_output,
    validation_report_path,
)

log = logging.getLogger(__name__)


def history_rows(job: JobConfig, before: datetime | None = None) -> int:
    """Rows before a prediction window starting at ``before`` that the serving models need
    (their largest lookback).

    A model that uses only the history after its training rows (metadata
    ``history_after_training``: ``context`` continues its memory from them) needs at most the
    periods from its last training row to ``before``: its lookback (10,000 rows) is a cap, and
    reading it whole made every scheduled run read up to 10,000 rows per series for the few
    hundred it uses.
    """
    registry = registry_for(job)
    lookbacks = []
    for series in registry.series(job.name):
        champion = registry.champion(job.name, series)
        if champion is None:
            continue
        rows = int(champion.metadata.get("lookback", 0))
        data_end = champion.metadata.get("data_end")
        if before is not None and data_end and champion.metadata.get("history_after_training"):
            since = math.ceil((before - pd.Timestamp(data_end)) / job.frequency)
            rows = min(rows, max(since, 0))
        lookbacks.append(rows)
    return max(lookbacks, default=0)


def _prepared_series(
    job: JobConfig, window: Window | None, run_id: str, purpose: str, **extract_args: Any
) -> tuple[Window, list[str]]:
    extracted = extract(job, window, run_id=run_id, purpose=purpose, **extract_args)
    series = validate(job, extracted.window, run_id=run_id, purpose=purpose, raw_path=extracted.paths[0])
    return extracted.window, series


def _fit_each(
    job: JobConfig, series: list[str], fit: Callable[[str], dict[str, Any]], purpose: str
) -> list[dict[str, Any]]:
    """``fit`` every series, then raise if any failed, naming each failed series and the others.

    One series' bad data (a new region with too few rows) must not stop the others being
    trained, as in Airflow, where each series is its own mapped task: the run still fails, after
    every other series got its model. Other errors (storage, bugs) stop the run at once.
    """
    results: list[dict[str, Any]] = []
    failed: dict[str, PipelineError] = {}
    for key in series:
        try:
            results.append(fit(key))
        except PipelineError as exc:
            log.error("job %s, series %s: %s failed (the other series go on): %s", job.name, key, purpose, exc)
            failed[key] = exc
    if not failed:
        return results
    first = next(iter(failed.values()))
    messages = list(dict.fromkeys(str(exc).rstrip(".") for exc in failed.values()))
    if not results and len(messages) == 1:  # one series, or an error of the whole job: as it was raised
        raise first
    kinds = {type(exc) for exc in failed.values()}
    error = kinds.pop() if len(kinds) == 1 else ModelError
    past = {"train": "trained", "tune": "tuned"}[purpose]
    combined = _rebuilt(
        error,
        f"job {job.name}: {purpose} failed for {len(failed)} of {len(series)} series ({', '.join(failed)}): "
        f"{'; '.join(messages)}. The other series were {past}: {', '.join(r['series'] for r in results) or 'none'}",
    )
    # What the other series got (their versions, promoted or not): a caller that reports results
    # (the CLI's JSON) still has them, though the run as a whole failed.
    combined.completed = results  # type: ignore[attr-defined]
    raise combined from first


def _rebuilt(kind: type[PipelineError], message: str) -> PipelineError:
    """An error of ``kind`` saying ``message``, whatever its constructor takes.

    The type is kept (Airflow's tasks fail at once on some types and retry others), but not every
    error is built from a message: ``MissingDependencyError(package, extra, purpose)`` writes its
    own, and calling it with the combined message alone failed as a TypeError that hid every
    series' error. Such an error is made without its constructor, carrying the message as is.
    """
    try:
        return kind(message)
    except TypeError:
        return kind.__new__(kind, message)


@contextlib.contextmanager
def _cleaned_up(job: JobConfig, run_id: str, purpose: str) -> Iterator[list[str]]:
    """:func:`cleanup` after the run, telling it whether the run succeeded and the series it tried
    (the list yielded, which the run fills): only theirs can have gained model versions."""
    tried: list[str] = []
    try:
        yield tried
    except BaseException:
        cleanup(job, run_id, purpose=purpose, succeeded=False, series=tried)
        raise
    cleanup(job, run_id, purpose=purpose, series=tried)


def run_train(job: JobConfig, window: Window, *, run_id: str) -> list[dict[str, Any]]:
    with _cleaned_up(job, run_id, "train") as tried:
        window, series = _prepared_series(job, window, run_id, "train")
        tried.extend(series)
        return _fit_each(
            job,
            series,
            lambda s: train_series(job, s, read_series(job, run_id, s, purpose="train"), window, run_id=run_id).to_dict(),
            "train",
        )


def run_tune(job: JobConfig, window: Window, *, run_id: str) -> list[dict[str, Any]]:
    with _cleaned_up(job, run_id, "tune") as tried:
        window, series = _prepared_series(job, window, run_id, "tune")
        tried.extend(series)
        return _fit_each(
            job, series, lambda s: tune_series(job, s, read_series(job, run_id, s, purpose="tune"), window, run_id=run_id), "tune"
        )


def run_predict(job: JobConfig, window: Window, *, run_id: str) -> PublishResult:
    """Score ``window`` with the champions and publish it to the job's outputs."""
    with _cleaned_up(job, run_id, "predict"):
        extracted = extract(job, window, run_id=run_id, purpose="predict", history_rows=history_rows(job, window.start))
        # Before the first training: "train first", not a validation failure of a short window
        # whose history is not read without models (with a good batch quarantined). The predict
        # DAG checks it in its extract task.
        check_serving(job)
        window = extracted.window
        series = validate(job, window, run_id=run_id, purpose="predict", raw_path=extracted.paths[0])
        scored = [score_series(job, s, read_series(job, run_id, s, purpose="predict"), window, run_id=run_id) for s in series]
        return publish_scored(job, window, [result.to_dict() for result in scored])


def run_score_file(
    job: JobConfig,
    input_path: str,
    *,
    run_id: str,
    output: str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> PublishResult:
    """One-off scoring: the whole of ``input_path``, chunk by chunk, into one Parquet file.

    ``output`` defaults to :func:`~pipelines.workspace.one_off_output`; the job's own dataset and
    table are never touched.
    """
    check_one_off(job, input_path=input_path, output=output, chunk_rows=chunk_rows)
    with _cleaned_up(job, run_id, "score"):
        extracted = extract_chunks(job, run_id=run_id, input_path=input_path, chunk_rows=chunk_rows)
        progress = _Progress(job, extracted.rows, len(extracted.paths))
        chunks = []
        for index, path in enumerate(extracted.paths):
            chunks.append(
                score_chunk(job, extracted.window, run_id=run_id, index=index, chunk_paths=extracted.paths, read_from=extracted.read_from)
            )
            # Input rows, not scored ones (resampled, series without a model left out): progress is
            # through the input.
            progress.scored(index, chunk_file_rows(path))
        unscored = {key: why for chunk in chunks for key, why in chunk.get("unscored", {}).items()}
        parts = [chunk["path"] for chunk in chunks]
        output = output or one_off_output(job, run_id)
        # Writing a large output takes a while of its own (a fifth of a 2,000,000-row run), which
        # followed the last chunk's line in silence.
        log.info("job %s: writing the scored chunks into %s", job.name, output)
        return publish_file(job, extracted.window, parts, output, unscored=unscored)


#: Progress lines of a one-off run's scoring at most (besides the last): one a chunk of a few
#: chunks; of thousands of small chunks, a line each would bury everything else.
PROGRESS_LINES = 20


class _Progress:
    """Logs how far scoring the chunks of a one-off input is: rows done of all, rate and time left.

    Each chunk said only "chunk 3 of 40 scored: 250000 rows", leaving whoever watched a run of
    millions of rows to work out how much longer it would take.
    """

    def __init__(self, job: JobConfig, rows: int, chunks: int) -> None:
        self.job, self.rows, self.chunks = job, rows, chunks
        self.every = max(1, math.ceil(chunks / PROGRESS_LINES))
        self.done = 0
        self.started = time.monotonic()
        self.warm: tuple[float, int] | None = None  # when the first chunk was done, and its rows

    def scored(self, index: int, rows: int) -> None:
        now = time.monotonic()
        self.done += rows
        # The rate from the first chunk's end on: the first also pays for starting validation (a
        # few seconds), and counted in it told three times the time actually left.
        since, before = self.warm or (self.started, 0)
        self.warm = self.warm or (now, self.done)
        if (index + 1) % self.every and index + 1 < self.chunks:
            return
        rate = (self.done - before) / max(now - since, 1e-6)
        left = "done" if index + 1 == self.chunks else f"about {rough_duration_text((self.rows - self.done) / rate if rate else 0.0)} left"
        log.info(
            "job %s: scored %d of %d chunks, %s of %s rows (%.0f%%) in %s, %s rows/s; %s",
            self.job.name, index + 1, self.chunks, f"{self.done:,}", f"{self.rows:,}",
            100 * self.done / max(self.rows, 1), rough_duration_text(now - self.started), f"{rate:,.0f}", left,
        )


def log_score_run_progress(
    job: JobConfig, *, run_id: str, chunk_paths: list[str], total_rows: int, split_at: str | None
) -> str | None:
    """Logs (and returns) how far the whole one-off run is, from the scored chunks in its workspace.

    On Airflow each chunk is its own mapped task, and its log said only "chunk 3 of 40 scored":
    how long the run still needs was left to whoever added up the tasks. ``total_rows`` are the
    input's rows, as the split counted them. The rate is the input rows of the chunks done so far
    over the wall-clock time since the split ended (``split_at``), so chunks scored side by side
    count as they should. A chunk with no series that has a model writes no file and stays "not
    done": the time left then errs long. None when nothing can be measured yet, or when the
    workspace cannot be read: the chunk is scored, and a progress line must not fail its task.
    """
    if split_at is None:
        return None
    workspace = Workspace(job.name, run_id, "score")
    try:
        names = set(storage.find(str(Path(workspace.scored_chunk(0)).parent)))
        done = [i for i in range(len(chunk_paths)) if Path(workspace.scored_chunk(i)).name in names]
        if not done:
            return None
        manifest = json.loads(storage.read_bytes(workspace.chunk_manifest))
        rows = chunk_input_rows([chunk_paths[i] for i in done], [manifest[i] for i in done])
    except (OSError, ValueError) as exc:  # ValueError: a manifest that is not JSON
        log.warning("job %s: cannot tell how far run %s is (%s); its chunks score on", job.name, run_id, exc)
        return None
    elapsed = max((datetime.now(timezone.utc) - datetime.fromisoformat(split_at)).total_seconds(), 1e-6)
    rate = rows / elapsed
    left = "all scored" if len(done) == len(chunk_paths) else f"about {rough_duration_text((total_rows - rows) / rate if rate else 0.0)} left"
    line = (
        f"job {job.name}: the run has scored {len(done)} of {len(chunk_paths)} chunks, {rows:,} of {total_rows:,} input rows "
        f"({100 * rows / max(total_rows, 1):.0f}%) in {rough_duration_text(elapsed)} since the split, {rate:,.0f} rows/s; {left}"
    )
    log.info("%s", line)
    return line


def check_one_off(
    job: JobConfig,
    *,
    input_path: str | None,
    output: str | None,
    chunk_rows: int,
    start: str | None = None,
    end: str | None = None,
) -> None:
    """Refuse a one-off scoring request that cannot be right, before anything is read or scored.

    An ``output`` without ``input`` would score the window into the job's own outputs, and a
    window beside ``input`` would be ignored: neither is what was asked for. An ``output`` that
    is the input file (or one its glob matches) would replace the data with its scores, and one
    in the job's Parquet dataset would be read as its published scores.
    """
    if not input_path:
        if output:
            raise ConfigError(
                f"job {job.name}: output {output!r} goes with input (one-off scoring); a window is scored into the "
                "job's own outputs. Give input too, or leave output out"
            )
        return
    if start or end:
        raise ConfigError(f"job {job.name}: input {input_path!r} is scored whole: leave out start and end")
    if not 1 <= chunk_rows <= MAX_CHUNK_ROWS:
        raise ConfigError(
            f"job {job.name}: chunk_rows must be a positive number of rows up to {MAX_CHUNK_ROWS:,} (a task reads "
            f"its chunk whole), got {chunk_rows:,}"
        )
    # A job's source may not have landed yet, so reading it fails as a source error, which Airflow
    # retries; a misspelt input of a one-off run does not appear on a retry, and the predict DAG
    # spent its two retries (minutes) on it. A local file is checked here, as a configuration error.
    read_from = resolve_path(input_path)
    if "://" not in read_from and not any(char in read_from for char in "*?[") and not os.path.exists(read_from):
        raise SourceConfigError(
            f"job {job.name}: input {input_path!r} ({read_from}): no such file or folder. "
            "Check the input path (predict's --input, or the run's `input`)"
        )
    if output:
        # The CLI refused this itself, but the predict DAG's run conf came here unchecked: the
        # scored Parquet file replaced the very input it came from. The input resolves as the
        # reader resolves it (against the project root); the output is written as given.
        read, written = file_identity(read_from), file_identity(output)
        if written == read or PurePosixPath(written).match(read):
            raise ConfigError(
                f"job {job.name}: output {output!r} is the input file ({input_path!r}): writing the scores "
                "there would replace the data they come from; give another output path, or leave it out"
            )
        # A file in the job's Parquet dataset is read as the job's scores (or replaces a partition
        # of them): a one-off file there duplicated every published row it covered. Parquet
        # readers skip names starting with "_" or ".", as the default _one_off/ folder is.
        root = file_identity(resolve_path(job.outputs.parquet)).rstrip("/")
        inside = written.removeprefix(root + "/") if written.startswith(root + "/") else None
        if inside is not None and not any(part.startswith(("_", ".")) for part in inside.split("/")):
            raise ConfigError(
                f"job {job.name}: output {output!r} is inside the Parquet dataset of the job's outputs ({root}), "
                "where it would be read as published scores; write it elsewhere, or leave output out "
                f"(it then goes to {root}/_one_off/)"
            )
        # Last: "is the input file" tells more than "names a csv file" of the same path.
        check_output_file(output, f"job {job.name}: output")


#: How long the work folder of a run that never finished is kept: a failed Airflow run can be
#: cleared and re-run from its failed task within it (the task's inputs are there); after it, the
#: folder is swept, as failed one-off runs each left a chunked copy of their input behind for ever.
ABANDONED_AFTER = timedelta(days=7)


def cleanup(
    job: JobConfig,
    run_id: str,
    *,
    purpose: str = "",
    now: datetime | None = None,
    succeeded: bool = True,
    series: Iterable[str] | None = None,
) -> list[str]:
    """Remove a run's intermediate files (never its outputs or models), and those of the job's
    runs that have been untouched for :data:`ABANDONED_AFTER` (failed runs clean up nothing);
    returns the run folders swept.

    A run that ``succeeded`` also removes its quarantine folders: they hold what a failed attempt
    of the same run (an Airflow retry, a cleared task: one run id) rejected, and the attempt that
    succeeded validated the interval again, so the batch kept there was left as a failure of an
    interval that is done, sending people to fix data that was fixed. A failed run keeps them.
    Other runs' quarantines of the window it validated are marked, not removed
    (:func:`mark_superseded`); marked ones are removed later (:func:`sweep_quarantines`).
    """
    workspace = Workspace(job.name, run_id, purpose)
    here = workspace.root
    shutil.rmtree(here, ignore_errors=True)
    if succeeded:
        cleared = workspace.quarantines()
        for folder in cleared:
            shutil.rmtree(folder, ignore_errors=True)
        if cleared:
            log.info(
                "job %s, run %s: removed the quarantine a failed attempt of this run left, as this one succeeded: %s",
                job.name, run_id, [str(folder) for folder in cleared],
            )
        mark_superseded(job, run_id, purpose=purpose)
    cutoff = (now or datetime.now(timezone.utc)).timestamp() - ABANDONED_AFTER.total_seconds()
    swept = []
    folders = sorted(here.parent.iterdir()) if here.parent.is_dir() else []
    job_folder = Workspace(job.name, run_id).root.parent
    if purpose and job_folder.is_dir():
        # Run folders of the layout before purposes (work/<job>/<run>) are swept as their runs'.
        folders += sorted(folder for folder in job_folder.iterdir() if folder.name not in PURPOSES)
    for folder in folders:
        if folder.is_dir() and not folder.is_symlink() and _last_touched(folder) < cutoff:
            shutil.rmtree(folder, ignore_errors=True)
            swept.append(folder.name)
    if swept:
        log.info("job %s: removed the work folders of %d runs untouched for %s: %s", job.name, len(swept), ABANDONED_AFTER, swept)
    sweep_quarantines(job, purpose=purpose, now=now)
    if purpose in ("train", "tune"):
        prune_models(job, now=now, series=series)  # series: those the run tried; None: every series of the job
    return swept


def prune_models(job: JobConfig, *, now: datetime | None = None, series: Iterable[str] | None = None) -> None:
    """Remove the job's old model versions and tuning records (:meth:`ModelRegistry.prune_job`),
    after a train or tune run, failed ones too: every run registers a version, promoted or not, so
    a series trained hourly kept 8,760 a year, and one series failing every run must not stop the
    others' being removed.

    ``series``: the series the run trained or tried, the only ones that can have gained versions
    (pruning every series of a job of 10,000 on S3 cost some 30,000 requests a run); None prunes
    every series of the job, for callers that cannot tell.
    """
    try:
        registry_for(job).prune_job(job.name, job.registry_keep, now=now, series=series)
    except Exception as exc:  # a store that cannot be read now must not fail a run that is done
        log.warning("job %s: old model versions not removed: %s", job.name, exc)


#: How long a quarantine folder nobody needs to fix a run is kept untouched: one a later run
#: marked superseded (:data:`SUPERSEDED`), or one of the layout before purposes, which no run of
#: this version clears or marks. Longer than :data:`ABANDONED_AFTER`: a rejected batch is
#: evidence people inspect (a source that sent bad rows once), not a task's input. Other
#: quarantines are kept until their run succeeds.
QUARANTINE_KEPT = timedelta(days=30)


def sweep_quarantines(job: JobConfig, *, purpose: str = "", now: datetime | None = None) -> list[str]:
    """Remove ``job``'s quarantine folders that are superseded, or of the layout before purposes
    (``quarantine/<job>/<run>``), and untouched for :data:`QUARANTINE_KEPT`; returns them.

    Without it ``quarantine/`` grew for ever: a superseded folder went only by hand, and an
    old-layout one was neither cleared by its run's retry nor marked by a re-run, both of which
    look in the purpose's folder. Old-layout folders are swept, as work folders are, only by a
    run with a purpose: without one, ``quarantine/<job>/<run>`` is the current layout. Untouched,
    not marked long ago: a superseded run cleared and rejected again has a fresh batch there,
    which its error names.
    """
    cutoff = (now or datetime.now(timezone.utc)).timestamp() - QUARANTINE_KEPT.total_seconds()
    job_folder = home() / "quarantine" / job.name
    removed = []
    for parent in [job_folder, *(job_folder / name for name in PURPOSES)]:
        if not parent.is_dir() or parent.is_symlink():
            continue
        for folder in sorted(parent.iterdir()):
            if not folder.is_dir() or folder.is_symlink() or (parent == job_folder and folder.name in PURPOSES):
                continue
            old_layout = bool(purpose) and parent == job_folder
            try:
                due = ((folder / SUPERSEDED).exists() or old_layout) and _last_touched(folder) < cutoff
            except OSError:  # swept meanwhile by a run of another purpose finishing too: not this run's failure
                continue
            if due:
                shutil.rmtree(folder, ignore_errors=True)
                removed.append(str(folder))
    if removed:
        log.info(
            "job %s: removed %d quarantine folders superseded by a later run (or of the layout before purposes) and "
            "untouched for %s: %s", job.name, len(removed), QUARANTINE_KEPT, removed,
        )
    return removed


#: Written into another run's quarantine folder when a run validated the same window successfully.
SUPERSEDED = "superseded.json"


def mark_superseded(job: JobConfig, run_id: str, *, purpose: str = "", now: datetime | None = None) -> list[str]:
    """Mark the quarantine of each other run of ``job`` whose rejected window ``run_id`` validated
    successfully (a manual re-run of a failed scheduled interval) as superseded; returns them.

    Decision: marked with ``superseded.json`` (which run, when, and its validation report), not
    removed as a run's own quarantine is. Another run id is another run: what it rejected may be
    what someone is inspecting, or the evidence of a source that sent bad rows once, and a re-run
    that passed may have passed only because the job's validation settings were loosened. The
    mark tells whoever opens the folder that the window is done; the folder goes with its own
    run (its successful retry), by hand, or when untouched for :data:`QUARANTINE_KEPT`
    (:func:`sweep_quarantines`). One-off chunks' folders are inside their run's and
    have no interval, so only a batch's ``validation.json`` is compared.
    """
    own = Path(Workspace(job.name, run_id, purpose).quarantine)
    marked = []
    for folder in sorted(own.parent.iterdir()) if own.parent.is_dir() else []:
        if folder == own or not folder.is_dir() or folder.is_symlink() or (folder / SUPERSEDED).exists():
            continue
        try:
            window = Window.from_dict(dict(zip(("start", "end"), json.loads((folder / "validation.json").read_bytes())["window"])))
        except (OSError, ValueError, KeyError, TypeError, ConfigError):  # not a batch's, or unreadable: not compared
            continue
        try:
            report = _passed_report(job, run_id, window)
            if report is None:
                continue
            note = {
                "superseded_by": run_id,
                "at": (now or datetime.now(timezone.utc)).isoformat(),
                "window": window.to_dict(),
                "validation_report": report,
                "why": (
                    f"run {run_id} validated this window successfully after this batch was rejected; it is kept for "
                    f"inspection, and removed once untouched for {QUARANTINE_KEPT.days} days"
                ),
            }
            storage.atomic_write(str(folder / SUPERSEDED), json.dumps(note, indent=2).encode())
        except Exception as exc:  # a note for people: a store that cannot be read now must not fail a run that is done
            log.warning("job %s, run %s: could not check or mark the quarantine %s as superseded: %s", job.name, run_id, folder, exc)
            continue
        marked.append(str(folder))
    if marked:
        log.info(
            "job %s, run %s: marked the quarantine of other runs of a window this run validated as superseded (kept, "
            "see %s in each): %s", job.name, run_id, SUPERSEDED, marked,
        )
    return marked


def _passed_report(job: JobConfig, run_id: str, window: Window) -> str | None:
    """The validation report in which ``run_id`` passed ``window`` (of any purpose), or None."""
    for purpose in ("train", "tune", "predict"):
        path = validation_report_path(job, purpose, window, run_id)
        try:
            report = json.loads(storage.read_bytes(path, job.outputs.storage_options))
        except (FileNotFoundError, ValueError):
            continue
        if isinstance(report, dict) and report.get("success") is True:
            return path
    return None


def _last_touched(folder: Path) -> float:
    """The latest modification time of ``folder`` or anything in it: a folder's own time changes
    only when its direct entries do, and a running run writes deeper."""
    latest = folder.stat().st_mtime
    for parent, folders, files in os.walk(folder):
        for name in (*folders, *files):
            with contextlib.suppress(OSError):  # removed meanwhile by its own run
                latest = max(latest, os.lstat(os.path.join(parent, name)).st_mtime)
    return latest
