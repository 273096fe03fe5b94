"""Score series with their champion models and publish the labeled anomalies.

Scoring is done per series (mapped tasks in Airflow) into the run's workspace; publishing
then writes every series of the window at once, so the outputs never hold half a run.
"""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
from collections import Counter
from dataclasses import dataclass, field, replace
from typing import Any

import pandas as pd

from pipelines import storage
from pipelines.config import JobConfig, resolve_path
from pipelines.db import engine_for
from pipelines.detectors import BaseDetector
from pipelines.errors import ModelError, SinkError
from pipelines.extraction import checked_batch, prepare, read_parquet, series_groups
from pipelines.labels import label_verdicts, utc_stamp
from pipelines.registry import ModelVersion
from pipelines.schema import arrow_schema, conform
from pipelines.series import parse_series_key
from pipelines.sinks import BigQuerySink, ParquetSink, SqlSink
from pipelines.training import frequency_change, leave_out_confirmed, load_champion, registry_for
from pipelines.validation import RowNumbers
from pipelines.workspace import Window, Workspace, check_output_file, utcnow

log = logging.getLogger(__name__)


def labeled_frame(
    job: JobConfig,
    series: str,
    dimensions: dict[str, str],
    champion: tuple[ModelVersion, BaseDetector],
    rows: pd.DataFrame,
    history: pd.DataFrame | None,
    interval: Window,
    run_id: str,
) -> pd.DataFrame:
    """Score ``rows`` (``history``: the rows just before them) in the output schema.

    ``model`` is the kind of the version that scored, not the job's configured kind: tuning may
    have promoted another kind, and a job whose ``model.kind`` was changed is scored by its old
    champion until it is trained again.
    """
    version, detector = champion
    moved = frequency_change(job, version)
    if moved is not None:
        # Its windows and lags count rows of the old grid: it would score these rows without error, wrongly.
        raise ModelError(
            f"job {job.name}, series {series}, window {interval}: model version {version.version} cannot score: the job's "
            f"{moved} since it was trained, and the model counts its windows in rows of its own frequency. "
            f"Run the train DAG ({job.name}__train) or `anomaly-pipelines train {job.name}` to train it on the new grid"
        )
    history = history if history is not None and len(history) else None
    try:
        detection = detector.detect(rows, history=history)
    except ModelError as exc:
        # The detector knows neither the job, nor the series, nor the version (e.g. features
        # changed in the job file since this version was trained): a run scores many series.
        raise ModelError(
            f"job {job.name}, series {series}, window {interval}: model version {version.version} cannot score: {exc}"
        ) from exc
    frame = detection.to_frame()
    frame = frame.assign(
        job=job.name,
        series=series,
        model=version.metadata.get("model") or job.model.kind,
        model_version=version.version,
        run_id=run_id,
        interval_start=interval.start,
        interval_end=interval.end,
        scored_at=utcnow(),
        **dimensions,
    )
    return conform(frame, list(dimensions))


def _no_model(job: JobConfig, series: str) -> str:
    return (
        f"job {job.name}, series {series}: no champion model is serving. "
        f"Run the train DAG ({job.name}__train) or `anomaly-pipelines train {job.name}` first."
    )


def check_serving(job: JobConfig) -> None:
    """Fail before anything is read when no series of ``job`` has a champion yet: a predict run
    before the first training (a short scheduled window would otherwise fail validation's
    ``min_rows``, its history rows not being read without models, and blame the data)."""
    registry = registry_for(job)
    if not any(registry.champion(job.name, series) is not None for series in registry.series(job.name)):
        raise ModelError(
            f"job {job.name}: no champion model is serving for any series (registry {registry.root}). "
            f"Run the train DAG ({job.name}__train) or `anomaly-pipelines train {job.name}` first."
        )


def _write_parquet(frame: pd.DataFrame, path: str) -> None:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    storage.atomic_write(path, buffer.getvalue())


@dataclass(frozen=True)
class ScoreResult:
    series: str
    path: str | None  # None: not scored (see ``unscored``)
    rows: int
    anomalies: int
    model_version: str | None
    #: What resampling to the job's frequency did to the rows (merged, filled, missing).
    resampling: dict[str, int] | None = None
    #: Why the series was not scored: it has no model yet.
    unscored: str | None = None
    #: What people's true labels left out of the history rows the model read before the window
    #: (:func:`history_without_confirmed`); None when not scored.
    history_masking: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def score_series(job: JobConfig, series: str, data: pd.DataFrame, window: Window, *, run_id: str) -> ScoreResult:
    """Score one series' rows in ``window`` with its champion and stage them in the workspace.

    Rows of ``data`` before the window are the history the model's rolling features need, less
    the values people confirmed as anomalies (:func:`history_without_confirmed`).
    A series without a model yet (a new dimension value since the last training) is not scored:
    the result says so, and :func:`publish` writes the other series and names it, rather than one
    new region stopping every other region's scores until someone trains.
    """
    current = load_champion(job, series)
    if current is None:
        why = _no_model(job, series)
        log.warning("%s The other series are scored; this one is not.", why)
        return ScoreResult(series, None, 0, 0, None, data.attrs.get("resampling"), unscored=why)
    version, detector = current
    inside = (data.index >= window.start) & (data.index < window.end)
    dimensions = parse_series_key(series, job.dimensions)
    history, masking = history_without_confirmed(job, series, current, data[data.index < window.start], window)
    frame = labeled_frame(job, series, dimensions, (version, detector), data[inside], history, window, run_id)
    path = Workspace(job.name, run_id, "predict").scored(series)
    _write_parquet(frame, path)
    anomalies = int(frame.loc[frame["is_anomaly"], "timestamp"].nunique())
    log.info(
        "job %s, series %s: scored %d rows with %s, %d anomalous timestamps%s",
        job.name, series, len(frame), version.version, anomalies,
        f"; {masking['values']} history values in true anomaly labels left out" if masking["values"] else "",
    )
    return ScoreResult(series, path, len(frame), anomalies, version.version, data.attrs.get("resampling"), history_masking=masking)


def history_without_confirmed(
    job: JobConfig, series: str, champion: tuple[ModelVersion, BaseDetector], history: pd.DataFrame, window: Window
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``history`` with the values people confirmed as anomalies made missing, as training leaves
    them out (:func:`~pipelines.training.leave_out_confirmed`), and what was left out.

    Detectors learn from or condition on the rows before the window (``context`` continues its
    memory over them, ``seasonal_mad``'s level and ``iforest``'s lags read them): a confirmed
    incident there was taken as normal, and the same incident going on or coming again in the
    window scored lower. Only the history the model reads is looked at (its last ``lookback_``
    rows; for a model that reads only the rows after its training, those), never the window's
    rows, which are scored and published as they are. Without a true label there ``history``
    itself is returned: the scores are exactly those without labels.
    """
    version, detector = champion
    used = history.iloc[-detector.lookback_ :]
    data_end = version.metadata.get("data_end")
    if detector.history_after_training and data_end and isinstance(used.index, pd.DatetimeIndex):
        end = utc_stamp(data_end) if used.index.tz is not None else utc_stamp(data_end).tz_localize(None)
        used = used[used.index > end]  # the earlier rows were training rows (masked by training), not read
    if used.empty or not isinstance(used.index, pd.DatetimeIndex):
        return history, {"rows": 0, "values": 0}
    from pipelines.labels import label_store

    first, last = (utc_stamp(moment).to_pydatetime() for moment in (used.index.min(), used.index.max()))
    try:
        labels = label_store(job).labels(job.name, series, first, last)
    except SinkError as exc:
        # Scored on without them, the window would score differently from a rerun that reads them.
        raise SinkError(
            f"job {job.name}, series {series}, window {window}: cannot read people's labels of the history rows "
            f"before the window ({exc}); nothing was scored: rerun the interval once the labels table can be read"
        ) from exc
    masked, masking = leave_out_confirmed(used, label_verdicts(used.index, used.columns, labels))
    if not masking["values"]:
        return history, masking
    masking["reason"] = "inside people's true anomaly labels: left out of the history the model reads before the window"
    # ``used`` is the end of ``history`` (its index is sorted): the earlier rows stay as they are.
    return pd.concat([history.iloc[: len(history) - len(used)], masked]), masking


def score_chunk(
    job: JobConfig, window: Window, *, run_id: str, index: int, chunk_paths: list[str], read_from: str
) -> dict[str, Any]:
    """Validate and score chunk ``index`` of a one-off input, every series in it; ``read_from``
    names the input (``Extracted.read_from`` of ``extract_chunks``) for its validation errors.

    The previous chunk's last rows of each series are its history, so a chunk scores exactly as
    it would in one piece; each chunk is validated on its own (a series repeating an instant or
    going back in time across chunks was refused by ``extract_chunks``). Memory is bounded by two chunks.
    """
    # The job's min_rows applies to the whole file (checked when it was split), not to each chunk.
    per_chunk = job.model_copy(update={"validation": job.validation.model_copy(update={"min_rows": 0})})
    manifest = json.loads(storage.read_bytes(Workspace(job.name, run_id, "score").chunk_manifest))
    # Rows numbered as rows of the file (from 1, as extraction's errors count them): positions in
    # the chunk sent users to the wrong rows.
    first = chunk_input_rows(chunk_paths[:index], manifest[:index]) + 1
    last = first - 1 + chunk_input_rows(chunk_paths[index : index + 1], manifest[index : index + 1])
    # Said as a one-off's: which file and which of its rows (the window spans the whole file),
    # and that the file is to be fixed and scored again (there is no interval to re-run).
    numbers = RowNumbers(
        first=first,
        of="the input file, counting its first data row as 1",
        batch=f"rows {first} to {last} of {read_from} (chunk {index + 1} of {len(chunk_paths)})",
        fix="fix the input file (or the job's validation settings) and score it again (predict --input, or a predict "
        "run with `input`). No output was written.",
    )
    part = Workspace(job.name, run_id, "score").chunk_part(index)
    data = checked_batch(per_chunk, window, run_id=run_id, purpose="one_off", raw_path=chunk_paths[index], part=part, rows=numbers)
    # A series without a model yet (a new dimension value) is not scored, as in a scheduled window:
    # one new group failed the whole file, and the groups with a model got nothing.
    series, unscored = [], {}
    for key, dims, rows in series_groups(data, job):
        current = load_champion(job, key)
        if current is None:
            unscored[key] = _no_model(job, key)
        else:
            series.append((key, dims, rows, *current))
    if unscored:
        log.info("job %s: chunk %d of %d: %d series not scored, no model yet: %s",
                 job.name, index + 1, len(chunk_paths), len(unscored), ", ".join(unscored))
    if not series:
        return {"chunk": index, "path": None, "rows": 0, "unscored": unscored}
    needs = {key: max(detector.lookback_, 1) for key, _, _, _, detector in series}
    history = _history_before(job, chunk_paths[:index], manifest[:index], needs)
    frames = []
    for key, dims, rows, version, detector in series:
        frames.append(labeled_frame(job, key, dims, (version, detector), rows, history.get(key), window, run_id))
    frame = pd.concat(frames, ignore_index=True)
    path = Workspace(job.name, run_id, "score").scored_chunk(index)
    _write_parquet(frame, path)
    log.info("job %s: chunk %d of %d scored: %d rows, %d series", job.name, index + 1, len(chunk_paths), len(frame), len(series))
    return {"chunk": index, "path": path, "rows": len(frame), "unscored": unscored}


def chunk_input_rows(chunks: list[str], manifest: list[dict[str, int]]) -> int:
    """Rows of the input file in the raw ``chunks`` (with their ``manifest`` entries): the sum of
    the manifest's rows per series, or, for a chunk whose series could not be told (a dimension
    column missing, which validation reports), the row count in its Parquet footer."""
    return sum(sum(counts.values()) if counts else chunk_file_rows(path) for path, counts in zip(chunks, manifest, strict=True))


def chunk_file_rows(chunk_path: str) -> int:
    """Rows of the input in a raw chunk, from its Parquet footer (nothing else is read)."""
    import pyarrow.parquet as pq

    fs, inner = storage.filesystem(chunk_path)
    with fs.open(inner, "rb") as handle:
        return pq.ParquetFile(handle).metadata.num_rows


@dataclass(frozen=True)
class PublishResult:
    rows: int
    anomalies: dict[str, int]
    rows_per_series: dict[str, int]
    parquet_paths: list[str]
    table: str | None
    window: str
    #: Series of the window not scored, and why (they have no model yet).
    unscored: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _history_before(
    job: JobConfig, earlier: list[str], manifest: list[dict[str, int]], needs: dict[str, int]
) -> dict[str, pd.DataFrame]:
    """The last ``needs[series]`` rows of each series in the ``earlier`` chunks, newest first.

    The manifest says which chunks hold which series, so only those are read: usually just the
    previous chunk.
    """
    found: dict[str, pd.DataFrame] = {}
    for path, counts in zip(reversed(earlier), reversed(manifest), strict=True):
        wanted = {key for key, rows in needs.items() if key in counts and len(found.get(key, ())) < rows}
        if not wanted:
            if all(len(found.get(key, ())) >= rows for key, rows in needs.items()):
                break
            continue
        for key, _, rows in series_groups(prepare(read_parquet(path), job), job):
            if key in wanted:
                found[key] = pd.concat([rows, found[key]]) if key in found else rows
    return {key: rows.iloc[-needs[key] :] for key, rows in found.items()}


def publish_scored(job: JobConfig, window: Window, results: list[dict[str, Any]]) -> PublishResult:
    """:func:`publish` of :meth:`ScoreResult.to_dict` results, some of which may be unscored series.

    Every series unscored (nothing has a model): the error says to train. Some: the others are
    published and the result names the unscored ones (monitoring then asks for a retrain).
    """
    unscored = {r["series"]: r["unscored"] for r in results if r.get("unscored")}
    if unscored and len(unscored) == len(results):
        raise ModelError(
            f"job {job.name}: no champion model is serving for any series of window {window} ({', '.join(unscored)}). "
            f"Run the train DAG ({job.name}__train) or `anomaly-pipelines train {job.name}` first."
        )
    result = publish(job, window, [r["path"] for r in results if not r.get("unscored")])
    if unscored:
        log.warning("job %s, window %s: %d series not scored, no model yet: %s", job.name, window, len(unscored), ", ".join(unscored))
    return replace(result, unscored=unscored)


def publish(job: JobConfig, window: Window, scored_paths: list[str], *, output: str | None = None) -> PublishResult:
    """Write the staged scores of every series: Parquet dataset, SQL and BigQuery tables, replacing the window.

    The outputs take the new rows together as far as they can: the Parquet files are staged, the
    SQL table commits, and only then do the staged files replace the day files, so a failure of
    either write (or a process killed before the commit) leaves both as they were. A failure after
    the commit (moving the files, BigQuery) raises a SinkError naming the outputs that already hold
    the new rows; rerunning the interval makes them all agree. A process killed after the commit
    leaves the Parquet files to the next write of the job, which finishes them (readers meanwhile
    read the staged files): see :meth:`ParquetSink.replacing`.

    With ``output`` (one-off scoring), the staged parts are streamed into that one Parquet file.
    """
    if output:
        return publish_file(job, window, scored_paths, output)
    frames = [read_parquet(path) for path in scored_paths]
    frame = conform(pd.concat(frames, ignore_index=True), job.dimensions) if frames else None
    if frame is None or frame.empty:
        raise ModelError(f"job {job.name}: nothing was scored in window {window}; no output written")
    window_args = {"job": job.name, "dimensions": job.dimensions, "start": window.start, "end": window.end}
    root = resolve_path(job.outputs.parquet)
    parquet = ParquetSink(root, job.outputs.storage_options)
    # The outputs that hold the new rows, for an honest error if a later one fails.
    replaced: list[str] = []
    table_name = None
    try:
        if job.outputs.table:
            table = job.outputs.table
            table_name = f"{table.db_schema + '.' if table.db_schema else ''}{table.name} ({table.connection.describe()})"
            # The table commits between staging the Parquet files and moving them: a failed (or
            # killed) table write leaves the day files as they were, and once the table committed,
            # the Parquet journal makes the day files follow even if this process is killed. The
            # other way round (the Parquet write inside the table's transaction), a kill rolled the
            # table back while the next write finished the Parquet files: the outputs disagreed.
            with parquet.replacing(frame, **window_args) as paths:
                SqlSink(engine_for(table.connection), table.name, table.db_schema).write(frame, **window_args)
                replaced.append(f"table {table_name}")
            replaced.append(f"the Parquet dataset {root}")
        else:
            paths = parquet.write(frame, **window_args)
            replaced.append(f"the Parquet dataset {root}")
        if job.outputs.bigquery:
            BigQuerySink(job.outputs.bigquery).write(frame, **window_args)
            table_name = ", ".join(filter(None, [table_name, job.outputs.bigquery.describe()]))
    except Exception as exc:
        if not replaced:
            raise
        raise SinkError(
            f"job {job.name}, window {window}: {exc}. The outputs disagree for this window: "
            f"{' and '.join(replaced)} already {'hold' if len(replaced) > 1 else 'holds'} its new rows. Fix the cause, then rerun the interval "
            "(an Airflow retry of publish does): every write replaces the window, so the rerun writes "
            "the same rows into all outputs and adds no duplicates"
        ) from exc
    log.info("job %s: published %d rows for window %s to %s%s", job.name, len(frame), window, ", ".join(paths), f" and {table_name}" if table_name else "")
    return _summary(frame, paths, table_name, window)


def _summary(frame: pd.DataFrame, paths: list[str], table: str | None, window: Window) -> PublishResult:
    anomalous = frame[frame["is_anomaly"]].groupby("series")["timestamp"].nunique()
    per_series = frame.groupby("series")["timestamp"].nunique()
    return PublishResult(
        rows=len(frame),
        anomalies={s: int(anomalous.get(s, 0)) for s in per_series.index},
        rows_per_series={s: int(n) for s, n in per_series.items()},
        parquet_paths=paths,
        table=table,
        window=str(window),
    )


def publish_file(
    job: JobConfig, window: Window, scored_paths: list[str | None], output: str, *, unscored: dict[str, str] | None = None
) -> PublishResult:
    """Stream the staged parts into one Parquet file at ``output``, which appears whole or not at all.

    ``unscored`` names the series of the input without a model (a chunk of only those staged no
    part: None). The others are written and the result names these; with none scored nothing is
    written and the error says to train: a run that succeeded with an empty file would read as
    "no anomalies" to whoever looks at its status only.
    """
    unscored = unscored or {}
    import pyarrow as pa
    import pyarrow.parquet as pq

    check_output_file(output, f"job {job.name}: output")
    schema = arrow_schema(job.dimensions)
    rows, anomalies, timestamps = 0, Counter(), Counter()
    with tempfile.TemporaryDirectory() as scratch:
        local = os.path.join(scratch, "scored.parquet")
        with pq.ParquetWriter(local, schema) as writer:
            for path in filter(None, scored_paths):
                part = conform(read_parquet(path), job.dimensions)
                writer.write_table(pa.Table.from_pandas(part, schema=schema, preserve_index=False))
                rows += len(part)
                # A timestamp of one series lies in one part: counts add up across parts.
                timestamps.update(part.drop_duplicates(["series", "timestamp"])["series"].tolist())
                flagged = part[part["is_anomaly"]].drop_duplicates(["series", "timestamp"])
                anomalies.update(flagged["series"].tolist())
        if not rows:
            if unscored:
                raise ModelError(
                    f"job {job.name}: no champion model is serving for any series of the input ({', '.join(unscored)}); "
                    f"nothing was scored and {output} was not written. Run the train DAG ({job.name}__train) or "
                    f"`anomaly-pipelines train {job.name}` on data holding these series first, then score the file again."
                )
            raise ModelError(f"job {job.name}: nothing was scored; {output} not written")
        storage.atomic_copy(local, output, job.outputs.storage_options)
    log.info("job %s: wrote %d scored rows to %s", job.name, rows, output)
    if unscored:
        log.warning("job %s: %d series of the input not scored, no model yet: %s", job.name, len(unscored), ", ".join(unscored))
    return PublishResult(
        rows=rows,
        anomalies={s: anomalies.get(s, 0) for s in sorted(timestamps)},
        rows_per_series=dict(sorted(timestamps.items())),
        parquet_paths=[output],
        table=None,
        window=str(window),
        unscored=unscored,
    )
