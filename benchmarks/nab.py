"""Detection quality on the Numenta Anomaly Benchmark (NAB), measured through the pipeline itself.

Each NAB series is replayed as a scheduled deployment would have seen it, with the same step
functions the Airflow tasks call (:func:`pipelines.runner.run_train` and
:func:`pipelines.runner.run_predict`: extract, Great Expectations validation, train or score,
publish to the Parquet dataset); the scores are read back from that dataset.

The replay of one series (:func:`replay_series`), with ``p`` NAB's probationary rows
(``min(floor(0.15 n), 750)``), ``C`` = :data:`CHUNK_ROWS` and ``k`` = :data:`RETRAIN_EVERY`:

1. train on rows ``[0, p)``;
2. predict chunk after chunk of ``C`` rows, the window of each ending where the next begins;
3. before every ``k``-th chunk, retrain on the trailing ``training_window`` that ends at the
   chunk's start (the registry promotes the new model only if it serves at least as well).

No step sees a row after the point it scores: a training window ends at the chunk it serves,
and a predict window ``[s, e)`` reads rows before ``e`` (and the detector's history before ``s``).
Chunk size does not change the scores: every detector scores a row from that row and earlier
rows only (``tests/benchmarks/test_nab_quick.py`` checks it by cutting a series short), so the
chunks set the retraining points and the number of runs, nothing else.

``python -m benchmarks.nab`` replays the whole corpus for every detector of
:data:`benchmarks.detectors.DETECTORS` and writes the section ``nab`` of ``docs/BENCHMARKS.md``;
``--quick`` replays three short series with one detector and only prints.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import logging
import math
import os
import re
import shutil
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from benchmarks.detectors import DETECTORS, DetectorUnderTest
from benchmarks.report import fmt_number, machine_facts, merge_tables, read_section, table, table_rows, write_section

if TYPE_CHECKING:  # pragma: no cover
    from pipelines.config import JobConfig

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
SECTION = "nab"
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
PROFILE_TITLES = ("Standard", "Reward low FP", "Reward low FN")

#: Rows per predict run. Larger chunks mean fewer runs (each pays extraction and GX validation,
#: about 0.3-0.5 s); they change no score (see the module docstring).
CHUNK_ROWS = 250
#: Retrain before every k-th chunk, i.e. every 1,000 rows: weekly retraining of hourly data,
#: every three and a half days of 5-minute data.
RETRAIN_EVERY = 4
#: The trailing training window, in periods of the series: two weeks of 5-minute data,
#: half a year of hourly data; short series train on everything seen so far.
TRAINING_PERIODS = 4000
#: The fixed decision threshold of every detector: its own calibration flags this share of its
#: training points, the platform's default, set before any label was looked at.
CONTAMINATION = 0.005
WORKERS = 2
#: The *alerts* rows count what a person would be sent, not every flagged row: one alert at the
#: first flagged row of an event, and no new one until this long after the end of the last
#: alerted event (``alerts.snooze`` of ``pipelines.alerts``), converted to rows of each series,
#: unless an event peaks higher than that alert (``alerts.escalate``, on by default). One day is
#: the usual paging snooze; it was declared before the alert rows were scored, and
#: docs/BENCHMARKS.md shows the score for other snoozes too.
ALERT_SNOOZE = timedelta(days=1)
#: Unflagged rows allowed inside one event: the default ``alerts.max_gap``.
ALERT_MAX_GAP = 1
#: Snoozes (rows) of the sensitivity table, so the chosen one hides nothing.
SNOOZE_SENSITIVITY = (0, 12, 50, 100, 200, 400)
#: Thresholds tried by the alert sweep: the score quantiles ``1 - q`` of the corpus for these
#: ``q`` (an exact sweep as for raw alarms is not possible: the snooze couples the rows).
ALERT_SWEEP_TAILS = tuple(float(q) for q in np.geomspace(1e-6, 0.05, 60))

#: The quick slice for the test suite: three short series (one hourly with gaps, two 5-minute),
#: one with a daily season and two where it falls back to none.
QUICK_SERIES = (
    "realAdExchange/exchange-3_cpc_results.csv",
    "realAWSCloudwatch/iio_us-east-1_i-a2eb1cd9_NetworkIn.csv",
    "realTraffic/speed_7578.csv",
)

#: Published NAB v1.0 scoreboard (standard, reward low FP, reward low FN), copied from the
#: "Scoreboard" table of numenta/NAB's README.md at commit ea702d75cc2258d9d7dd35ca8e5e2539d71f3140
#: (December 2024). These are NOT our numbers. They use NAB's own per-profile threshold
#: optimised over the corpus, like our "swept" rows.
PUBLISHED_SOURCE = "https://github.com/numenta/NAB/blob/ea702d75cc2258d9d7dd35ca8e5e2539d71f3140/README.md#scoreboard"
PUBLISHED: tuple[tuple[str, str, str, str], ...] = (
    ("Perfect", "100.0", "100.0", "100.0"),
    ("ARTime", "74.9", "65.1", "80.4"),
    ("Numenta HTM", "70.5-69.7", "62.6-61.7", "75.2-74.2"),
    ("CAD OSE", "69.9", "67.0", "73.2"),
    ("earthgecko Skyline", "58.2", "46.2", "63.9"),
    ("KNN CAD", "58.0", "43.4", "64.8"),
    ("Relative Entropy", "54.6", "47.6", "58.8"),
    ("Random Cut Forest", "51.7", "38.4", "59.7"),
    ("Twitter ADVec v1.0.0", "47.1", "33.6", "53.5"),
    ("Windowed Gaussian", "39.6", "20.9", "47.4"),
    ("Etsy Skyline", "35.7", "27.1", "44.5"),
    ("Bayesian Changepoint", "17.7", "3.2", "32.2"),
    ("EXPoSE", "16.4", "3.2", "26.9"),
    ("Random", "11.0", "1.2", "19.5"),
    ("Null", "0.0", "0.0", "0.0"),
)


def nab_root() -> Path:
    """The NAB corpus: ``shared/datasets/nab`` beside the repository (as in CI), else /work's."""
    beside = REPO.parent / "shared" / "datasets" / "nab"
    return beside if beside.is_dir() else Path("/work/shared/datasets/nab")


# -- one series ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReplayPlan:
    """When the replay of one series trains and predicts, and the job settings that depend on it.

    ``probation_rows`` and ``frequency`` come from the whole file (:meth:`for_file`): NAB gives
    every detector the probationary length, and a deployment knows its data's spacing in
    advance. Neither lets a step see data after the point it scores.
    """

    probation_rows: int
    frequency: timedelta
    chunk_rows: int = CHUNK_ROWS
    retrain_every: int = RETRAIN_EVERY
    training_periods: int = TRAINING_PERIODS

    @classmethod
    def for_timestamps(cls, timestamps: pd.Series) -> ReplayPlan:
        from pipelines.evaluation.nab import probationary_rows

        spacing = timestamps.diff().median()
        return cls(probationary_rows(len(timestamps)), spacing.to_pytimedelta())

    @classmethod
    def for_file(cls, csv_path: str | Path) -> ReplayPlan:
        return cls.for_timestamps(_read_timestamps(csv_path))

    @property
    def training_window(self) -> timedelta:
        return self.frequency * self.training_periods


@dataclass(frozen=True)
class SeriesReplay:
    """What the pipeline published for one series, aligned with the rows of its NAB file.

    ``score`` is the calibrated score in [0, 1] and ``is_anomaly`` the job's decision; rows
    that were never scored (the probationary part, repeated timestamps) hold 0 and False, and
    ``scored`` tells which rows were.
    """

    key: str
    score: np.ndarray
    is_anomaly: np.ndarray
    scored: np.ndarray
    params: dict[str, Any]
    note: str | None
    dropped_rows: int
    predict_runs: int
    training_runs: int
    promotions: int
    failed_trainings: int
    seconds: float
    #: The detector each training chose, for ``auto`` (in training order); empty for the others.
    choices: tuple[str, ...] = ()


def _read_timestamps(csv_path: str | Path) -> pd.Series:
    from pipelines.sources.base import parse_timestamps

    # The pipeline's own parser, so the harness and the file source agree on every timestamp.
    return parse_timestamps(pd.read_csv(csv_path, usecols=["timestamp"])["timestamp"]).astype("datetime64[ns, UTC]")


def job_name(key: str) -> str:
    """A valid, unique job name for a NAB series key."""
    slug = re.sub(r"[^a-z0-9]+", "_", key.lower().removesuffix(".csv")).strip("_")
    digest = hashlib.sha1(key.encode()).hexdigest()[:6]
    return f"nab_{slug[:50]}_{digest}"


def series_job(
    key: str, csv_path: Path, detector: DetectorUnderTest, params: dict[str, Any], plan: ReplayPlan, workdir: Path
) -> JobConfig:
    """The job a deployment of ``detector`` on this series would have, writing into ``workdir``."""
    from pipelines.config import JobConfig

    return JobConfig.model_validate(
        {
            "name": job_name(key),
            "description": f"NAB replay of {key} with {detector.label}",
            "source": {"kind": "file", "path": str(csv_path), "format": "csv"},
            "timestamp": "timestamp",
            "frequency": plan.frequency,
            "features": ["value"],
            "model": {"kind": detector.kind, "params": params},
            "training_window": plan.training_window,
            "threshold": {"kind": "contamination", "value": CONTAMINATION},
            "outputs": {"parquet": str(workdir / "outputs")},
            "registry": str(workdir / "models"),
            "validation": {"min_rows": 1},
        }
    )


@contextmanager
def pipeline_home(workdir: Path) -> Iterator[None]:
    """Point the library's work files, quarantine and relative paths at ``workdir`` for a while."""
    names = ("ANOMALY_PIPELINES_HOME", "ANOMALY_PIPELINES_BASE_DIR")
    saved = {name: os.environ.get(name) for name in names}
    os.environ["ANOMALY_PIPELINES_HOME"] = str(workdir / "var")
    os.environ["ANOMALY_PIPELINES_BASE_DIR"] = str(workdir)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def chunk_starts(timestamps: pd.Series, plan: ReplayPlan) -> list[pd.Timestamp]:
    """Start of every predict window: the time of rows ``p``, ``p + C``, ``p + 2C``...

    Windows are in time, as the pipeline's are; a start that is not after the previous one (a
    few NAB files repeat or step back a timestamp) is dropped, so windows never overlap.
    """
    starts: list[pd.Timestamp] = []
    earliest = timestamps.iloc[: plan.probation_rows].min()
    for row in range(plan.probation_rows, len(timestamps), plan.chunk_rows):
        moment = timestamps.iloc[row]
        if moment > earliest and (not starts or moment > starts[-1]):
            starts.append(moment)
    return starts


def source_file(csv_path: Path, timestamps: pd.Series, workdir: Path) -> tuple[Path, np.ndarray]:
    """The file the job reads, and which rows of ``csv_path`` it holds.

    A few NAB files repeat a timestamp (summer-time changes, one stray row), which the
    platform's validation rightly rejects: a deployment's source would hand over one row per
    timestamp. For those files the job reads a copy keeping the first row of each timestamp;
    the rows left out are never scored (score 0, no alarm).
    """
    kept = ~timestamps.duplicated(keep="first").to_numpy()
    if kept.all():
        return csv_path, kept
    copy = workdir / "source" / csv_path.name
    copy.parent.mkdir(parents=True, exist_ok=True)
    # As text, so the copy holds exactly the original values and timestamps.
    pd.read_csv(csv_path, dtype=str, keep_default_na=False)[kept].to_csv(copy, index=False)
    return copy, kept


def replay_series(
    csv_path: str | Path,
    key: str,
    detector: DetectorUnderTest,
    workdir: str | Path,
    plan: ReplayPlan | None = None,
) -> SeriesReplay:
    """Replay one NAB series through the pipeline's train and predict runs (see the module doc).

    ``plan`` defaults to :meth:`ReplayPlan.for_file`; ``workdir`` receives the job's models,
    outputs and work files.
    """
    from pipelines.errors import ModelError
    from pipelines.runner import run_predict, run_train
    from pipelines.sinks import ParquetSink
    from pipelines.workspace import Window

    began = time.perf_counter()
    csv_path, workdir = Path(csv_path).resolve(), Path(workdir)
    timestamps = _read_timestamps(csv_path)
    plan = plan or ReplayPlan.for_timestamps(timestamps)
    starts = chunk_starts(timestamps, plan)
    if not starts:
        raise ValueError(f"{key}: no row after the {plan.probation_rows} probationary rows to predict")
    source, kept = source_file(csv_path, timestamps, workdir)
    first = timestamps.min()
    ends = [*starts[1:], timestamps.max() + pd.Timedelta(plan.frequency)]
    params, note = detector.params_for(plan.frequency, int((timestamps[kept] < starts[0]).sum()))
    job = series_job(key, source, detector, params, plan, workdir)
    window = plan.training_window

    trainings: list[dict[str, Any]] = []
    failed, scored_from = 0, None
    with pipeline_home(workdir):
        for chunk, (start, end) in enumerate(zip(starts, ends, strict=True)):
            if chunk % plan.retrain_every == 0:
                # The first training sees every probationary row; later ones the trailing window.
                since = first if chunk == 0 else max(first, start - pd.Timedelta(window))
                try:
                    trainings += run_train(
                        job, Window(since.to_pydatetime(), start.to_pydatetime()), run_id=f"train_{chunk}"
                    )
                except ModelError as exc:
                    # As in production: a failed training registers nothing; the champion, if
                    # there is one, serves on.
                    failed += 1
                    log.warning("%s: training before chunk %d failed, %s: %s", key, chunk,
                                "the champion serves on" if trainings else "no model serves (rows unscored)", exc)
            if trainings:
                run_predict(job, Window(start.to_pydatetime(), end.to_pydatetime()), run_id=f"predict_{chunk}")
                scored_from = start if scored_from is None else scored_from
        published = ParquetSink(str(workdir / "outputs")).read(job=job.name) if scored_from is not None else None

    if published is None:
        score, is_anomaly, scored = np.zeros(len(timestamps)), np.zeros(len(timestamps), dtype=bool), np.zeros(len(timestamps), dtype=bool)
    else:
        due = kept & (timestamps >= scored_from).to_numpy()
        score, is_anomaly, scored = _align(published, timestamps, due, key)
    return SeriesReplay(
        key=key,
        score=score,
        is_anomaly=is_anomaly,
        scored=scored,
        params=params,
        note=note,
        dropped_rows=int((~kept).sum()),
        predict_runs=len(starts),
        training_runs=len(trainings) + failed,
        promotions=sum(bool(t["promoted"]) for t in trainings),
        failed_trainings=failed,
        seconds=time.perf_counter() - began,
    )


def _align(
    published: pd.DataFrame, timestamps: pd.Series, due: np.ndarray, key: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Scores and decisions per row of the NAB file, from the published rows of its job.

    ``due`` marks the rows the pipeline had to score (one per timestamp, see :func:`source_file`).
    Rows the pipeline added for gaps in the file (resampling keeps an empty period as a row
    without a value, scored 0) are not rows of the file and are left out; rows of an irregular
    file that share a period of the job's frequency share its score.
    """
    rows = published[(published["feature"] == "value") & published["value"].notna()]
    out = pd.DataFrame(
        {
            "timestamp": rows["timestamp"].astype("datetime64[ns, UTC]").to_numpy(),
            "score": rows["score"].to_numpy(dtype="float64"),
            "is_anomaly": rows["is_anomaly"].to_numpy(dtype=bool),
        }
    )
    expected = pd.DataFrame({"timestamp": timestamps.to_numpy()[due], "row": np.flatnonzero(due)})
    # Irregular files are put on the job's grid: a row's score is that of its period, the
    # published row at or just before it (regular files match exactly).
    out = out.sort_values("timestamp")
    period = out["timestamp"].diff().median() if len(out) > 1 else pd.Timedelta(0)
    matched = pd.merge_asof(
        expected.sort_values("timestamp"), out, on="timestamp", direction="backward", tolerance=period
    ).sort_values("row")
    if matched["score"].isna().any():
        missing = matched.loc[matched["score"].isna(), "timestamp"].iloc[0]
        raise RuntimeError(f"{key}: no published score for the row at {missing}")
    score = np.zeros(len(timestamps))
    is_anomaly = np.zeros(len(timestamps), dtype=bool)
    scored = np.zeros(len(timestamps), dtype=bool)
    at = matched["row"].to_numpy()
    score[at] = matched["score"].to_numpy()
    is_anomaly[at] = matched["is_anomaly"].to_numpy(dtype=bool)
    scored[at] = True
    return score, is_anomaly, scored


# -- the corpus ---------------------------------------------------------------------------------


def _quiet_worker() -> None:
    """Keep a worker's output to warnings: a full replay makes thousands of runs."""
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(processName)s %(name)s: %(message)s")
    for name in ("pipelines", "great_expectations"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", module="great_expectations")
    warnings.filterwarnings("ignore", message=".*deprecated.*")


def _replay_task(csv_path: Path, key: str, *, detector: DetectorUnderTest, workdir: str) -> SeriesReplay:
    return replay_series(csv_path, key, detector, Path(workdir) / job_name(key))


@dataclass(frozen=True)
class DetectorRun:
    """One detector replayed over a set of series, with its NAB scores."""

    detector: DetectorUnderTest
    series: dict[str, SeriesReplay]
    seconds: float
    workers: int
    #: One-minute load average when the replay started and when it ended: other work may share
    #: the machine, and its times are only comparable at similar loads.
    load: tuple[float, float]
    fixed: dict[str, float]
    swept: dict[str, tuple[float, float]]
    #: The same, counting alerts (:func:`alerts`) instead of flagged rows.
    alerts_fixed: dict[str, float]
    alerts_swept: dict[str, tuple[float, float]]
    #: Standard score of the fixed threshold's alerts per snooze in rows (:data:`SNOOZE_SENSITIVITY`).
    snooze_sensitivity: dict[int, float]


def replay_corpus(
    detector: DetectorUnderTest, keys: Sequence[str], root: Path, workdir: Path, workers: int
) -> dict[str, SeriesReplay]:
    """Replay ``keys`` with ``detector``; each series in one process, ``workers`` at a time."""
    return replay_in_pool(functools.partial(_replay_task, detector=detector, workdir=str(workdir)), keys, root, workers, detector.kind)


def replay_in_pool(
    task: Callable[[Path, str], SeriesReplay], keys: Sequence[str], root: Path, workers: int, label: str
) -> dict[str, SeriesReplay]:
    """``task(csv path, key)`` for every NAB key, longest file first, in ``workers`` processes
    (in this one for a single worker), logging each series as it is done: a corpus replay takes
    from minutes to hours. ``task`` must pickle (a module-level function or a partial of one)."""
    paths = {key: root / "data" / key for key in keys}
    # Longest first, so the last series to finish is a short one and no worker idles long.
    order = sorted(keys, key=lambda k: -paths[k].stat().st_size)
    began = time.perf_counter()
    results: dict[str, SeriesReplay] = {}

    def done(replay: SeriesReplay) -> None:
        results[replay.key] = replay
        log.info(
            "%s: series %d/%d done (%s, %d predict and %d training runs, %.1f s); elapsed %.0f s",
            label, len(results), len(keys), replay.key, replay.predict_runs,
            replay.training_runs, replay.seconds, time.perf_counter() - began,
        )

    if workers <= 1:
        for key in order:
            done(task(paths[key], key))
    else:
        # spawn, not fork: each worker imports the library itself instead of inheriting
        # whatever state (threads, open files) the parent happens to hold.
        with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_quiet_worker) as pool:
            for future in as_completed([pool.submit(task, paths[key], key) for key in order]):
                done(future.result())
    return dict(sorted(results.items()))


def nab_scores(
    series: dict[str, SeriesReplay], root: Path, partial: bool
) -> tuple[dict[str, float], dict[str, tuple[float, float]]]:
    """Normalised NAB scores per profile: of the job's own decisions, and of the best
    corpus-wide threshold on the scores (threshold, score)."""
    from pipelines.evaluation.nab import score_corpus, sweep_threshold

    decisions = {key: replay.is_anomaly for key, replay in series.items()}
    scores = {key: replay.score for key, replay in series.items()}
    fixed = {p: score_corpus(decisions, root, p, partial=partial).score for p in PROFILES}
    swept = {p: sweep_threshold(scores, root, p, partial=partial) for p in PROFILES}
    return fixed, swept


def alerts(flagged: np.ndarray, score: np.ndarray, snooze_rows: int, max_gap: int = ALERT_MAX_GAP) -> np.ndarray:
    """The rows where :mod:`pipelines.alerts` would send an alert, by its rules in rows.

    Flagged rows at most ``max_gap`` unflagged rows apart form one event; an event is alerted,
    at its first row, unless it starts while the series is snoozed, i.e. within ``snooze_rows``
    rows after the end of the last alerted event, and does not peak above that event's peak
    ``score`` (escalation, the default of ``alerts.escalate``).
    """
    sent = np.zeros(len(flagged), dtype=bool)
    rows = np.flatnonzero(flagged)
    if not rows.size:
        return sent
    breaks = np.flatnonzero(np.diff(rows) > max_gap + 1)
    starts, ends = rows[np.r_[0, breaks + 1]], rows[np.r_[breaks, rows.size - 1]]
    snoozed_until, snooze_peak = -1, math.inf
    for start, end in zip(starts, ends, strict=True):
        peak = float(score[start : end + 1].max())
        if start > snoozed_until or peak > snooze_peak:
            sent[start], snoozed_until, snooze_peak = True, end + snooze_rows, peak
    return sent


def snooze_rows(csv_path: Path) -> int:
    """:data:`ALERT_SNOOZE` in rows of the series at ``csv_path``."""
    return max(1, math.ceil(ALERT_SNOOZE / ReplayPlan.for_file(csv_path).frequency))


def fixed_alerts(series: dict[str, SeriesReplay], root: Path) -> dict[str, np.ndarray]:
    """The rows each series' own decisions (the fixed threshold) send alerts at."""
    return {key: alerts(replay.is_anomaly, replay.score, snooze_rows(root / "data" / key)) for key, replay in series.items()}


def alert_scores(
    series: dict[str, SeriesReplay], root: Path, partial: bool
) -> tuple[dict[str, float], dict[str, tuple[float, float]], dict[int, float]]:
    """NAB scores of the alerts (fixed threshold; swept over :data:`ALERT_SWEEP_TAILS`) and the
    snooze sensitivity of the fixed threshold's alerts."""
    from pipelines.evaluation.nab import score_corpus

    snooze = {key: snooze_rows(root / "data" / key) for key in series}
    sent_fixed = fixed_alerts(series, root)
    fixed = {p: score_corpus(sent_fixed, root, p, partial=partial).score for p in PROFILES}
    pooled = np.concatenate([replay.score[replay.scored] for replay in series.values()])
    thresholds = sorted({float(np.quantile(pooled, 1 - q)) for q in ALERT_SWEEP_TAILS})
    swept: dict[str, tuple[float, float]] = {p: (math.inf, 0.0) for p in PROFILES}
    for threshold in thresholds:
        sent = {key: alerts((replay.score >= threshold) & replay.scored, replay.score, snooze[key]) for key, replay in series.items()}
        for p in PROFILES:
            score = score_corpus(sent, root, p, partial=partial).score
            if score > swept[p][1]:
                swept[p] = (threshold, score)
    sensitivity = {
        rows: score_corpus({k: alerts(r.is_anomaly, r.score, rows) for k, r in series.items()}, root, "standard", partial=partial).score
        for rows in SNOOZE_SENSITIVITY
    }
    return fixed, swept, sensitivity


def _load() -> float:
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else math.nan


def run_detectors(
    detectors: Sequence[DetectorUnderTest], keys: Sequence[str], root: Path, workers: int, partial: bool
) -> list[DetectorRun]:
    runs = []
    workdir = Path(tempfile.mkdtemp(prefix="nab-replay-"))
    try:
        for detector in detectors:
            load_before, began = _load(), time.perf_counter()
            series = replay_corpus(detector, keys, root, workdir / detector.kind, workers)
            seconds = time.perf_counter() - began
            fixed, swept = nab_scores(series, root, partial)
            alerts_fixed, alerts_swept, sensitivity = alert_scores(series, root, partial)
            log.info("%s: replayed %d series in %.0f s; NAB standard %.1f (fixed), %.1f (swept); alerts %.1f, %.1f",
                     detector.kind, len(series), seconds, fixed["standard"], swept["standard"][1],
                     alerts_fixed["standard"], alerts_swept["standard"][1])
            runs.append(DetectorRun(
                detector, series, seconds, workers, (load_before, _load()), fixed, swept,
                alerts_fixed, alerts_swept, sensitivity,
            ))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return runs


# -- the report ---------------------------------------------------------------------------------


def _threshold_text(value: float) -> str:
    # Calibrated scores crowd just below 1: four decimals would show every threshold alike.
    return "never alarm" if not math.isfinite(value) else f"{value:.6g}"


def _snooze_text() -> str:
    return f"{ALERT_SNOOZE.days} day" if ALERT_SNOOZE == timedelta(days=1) else str(ALERT_SNOOZE)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def render(runs: Sequence[DetectorRun], *, quick: bool, total_rows: int, series_count: int) -> str:
    """The Markdown section "## Detection quality on NAB" for ``runs``."""
    facts = machine_facts()
    memory = f"{facts['memory_gib']:g} GiB RAM" if facts["memory_gib"] else "unknown RAM"
    workers = runs[0].workers if runs else 1
    libraries = ", ".join(f"{name} {version}" for name, version in facts["libraries"].items())
    lines = ["## Detection quality on NAB", ""]
    replayed = [run.detector for run in runs]
    left_out = [d.kind for d in DETECTORS if d not in replayed]
    command = "python -m benchmarks.nab" + (f" --detectors {' '.join(d.kind for d in replayed)}" if left_out else "")
    lines.append(
        f"Generated by `{command}` (`benchmarks/nab.py`); do not edit by hand."
        + (f" Not replayed through the pipeline in this run: {', '.join(left_out)}." if left_out else "")
        if not quick
        else "Quick slice (`python -m benchmarks.nab --quick`), printed only."
    )
    lines += [
        "",
        f"Every series ({series_count} NAB files, {total_rows:,} rows) is replayed through the pipeline's own "
        "steps (`run_train` and `run_predict`: extract, Great Expectations validation, train or score, publish "
        "to the Parquet dataset), causally: train on NAB's probationary rows (`min(floor(0.15 n), 750)`), then "
        f"predict {CHUNK_ROWS} rows per run, retraining before every {RETRAIN_EVERY}th run "
        f"(every {CHUNK_ROWS * RETRAIN_EVERY:,} rows) on the trailing {TRAINING_PERIODS:,} periods seen so far; "
        "the registry promotes a retrained model only if it serves at least as well. Scores are read back "
        "from the published Parquet output. No parameter was chosen by looking at NAB labels (docs/BENCHMARKS.md, "
        "\"what was changed\", lists every change and its measured effect).",
        "",
    ]
    if quick:
        lines += [
            "**Quick slice:** NAB scores are normalised against this slice's own null and perfect "
            "detectors, so they are not comparable with published NAB scores.",
            "",
        ]
    headers = ["Detector", "Threshold", *PROFILE_TITLES, "Source"]
    rows: list[list[str]] = []
    for run in runs:
        rows.append([
            f"`{run.detector.label}`",
            f"fixed: contamination {CONTAMINATION} of each training window (as deployed), flagged rows",
            *(f"{run.fixed[p]:.1f}" for p in PROFILES),
            "ours, this run",
        ])
        thresholds = " / ".join(_threshold_text(run.swept[p][0]) for p in PROFILES)
        rows.append([
            f"`{run.detector.label}`",
            f"swept: best corpus-wide score threshold per profile ({thresholds}), chosen on the labels, flagged rows",
            *(f"{run.swept[p][1]:.1f}" for p in PROFILES),
            "ours, this run",
        ])
        rows.append([
            f"`{run.detector.label}`",
            f"alerts, fixed: the fixed threshold, one alert per event, snooze {_snooze_text()} with escalation",
            *(f"{run.alerts_fixed[p]:.1f}" for p in PROFILES),
            "ours, this run",
        ])
        alert_thresholds = " / ".join(_threshold_text(run.alerts_swept[p][0]) for p in PROFILES)
        rows.append([
            f"`{run.detector.label}`",
            f"alerts, swept: as above, best corpus-wide threshold per profile ({alert_thresholds}), chosen on the labels",
            *(f"{run.alerts_swept[p][1]:.1f}" for p in PROFILES),
            "ours, this run",
        ])
    if not quick:
        rows += [[name, "optimised per profile by NAB", *values, "published"] for name, *values in PUBLISHED]
    lines += [table(headers, rows, align="llrrrl"), ""]
    if not quick:
        lines += [
            f"Published rows: NAB v1.0 scoreboard, copied from [numenta/NAB's README]({PUBLISHED_SOURCE}) "
            "(the Numenta HTM range spans random seeds); they are not our runs. Published detectors had their "
            "threshold optimised over the corpus per profile, as our *swept* rows do; the *fixed* rows are what "
            "a deployment gets with the threshold set in advance. NAB charges every alarm outside a window, so the "
            "*flagged rows* rows charge each row of a long anomalous stretch; the *alerts* rows count what the "
            f"platform would send a person: one alert per event and none for the snooze ({_snooze_text()}) after it "
            "unless a later event peaks higher than the alert (escalation, `alerts.escalate`).",
            "",
            "Standard score of the fixed threshold's alerts for other snoozes (rows):",
            "",
            table(
                ["Detector", *(str(rows) for rows in SNOOZE_SENSITIVITY)],
                [[f"`{run.detector.label}`", *(f"{run.snooze_sensitivity[r]:.1f}" for r in SNOOZE_SENSITIVITY)] for run in runs],
                align="l" + "r" * len(SNOOZE_SENSITIVITY),
            ),
            "",
        ]

    lines += ["Runs:", ""]
    run_rows = []
    for run in runs:
        replays = run.series.values()
        seasonless = [r.key for r in replays if r.note]
        run_rows.append([
            f"`{run.detector.label}`",
            str(len(run.series)),
            f"{sum(r.predict_runs for r in replays):,}",
            f"{sum(r.training_runs for r in replays):,} ({sum(r.promotions for r in replays):,} promoted, "
            f"{sum(r.failed_trainings for r in replays)} failed)",
            f"{len(seasonless)} of {len(run.series)}" if "season" in run.detector.params else "—",
            f"{sum(int(r.is_anomaly.sum()) for r in replays):,}",
            _minutes(run.seconds),
            fmt_number(sum(int(r.scored.sum()) for r in replays) / run.seconds, 3),
            f"{run.load[0]:.1f} → {run.load[1]:.1f}",
        ])
    lines += [
        table(
            [
                "Detector", "Series", "Predict runs", "Training runs", "Season fallback", "Alarms (fixed)",
                "Wall time", "Scored rows/s", "Load average",
            ],
            run_rows,
        ),
        "",
        f"Wall time is the whole replay of a detector with {workers} worker process(es), "
        "one series per process at a time, GX validation and registry included. "
        f"Machine: {facts['cores']} cores ({facts['cpu']}), {memory}, {facts['os']}, Python {facts['python']}; "
        f"{libraries}. Run ended {datetime.now(UTC):%Y-%m-%d %H:%M} UTC. The load average (one minute, at the "
        f"start and the end of each replay) includes our own {workers} worker(s); where it is higher, other work "
        "shared the machine and the times are longer than on an idle one.",
        "",
    ]
    repeated = sorted((r.key, r.dropped_rows) for r in (runs[0].series.values() if runs else ()) if r.dropped_rows)
    if repeated:
        lines += [
            f"{len(repeated)} files repeat a timestamp ({sum(n for _, n in repeated)} rows in all: "
            + ", ".join(f"`{key}` {n}" for key, n in repeated)
            + "), which the platform's validation rejects; their jobs read a copy keeping the first row of "
            "each timestamp, and the rows left out count as never alarming.",
            "",
        ]
    for run in runs:
        notes = sorted((r.key, r.note) for r in run.series.values() if r.note)
        if notes:
            lines += [
                f"<details><summary><code>{run.detector.kind}</code>: series run without a season "
                f"({len(notes)}; the label-free rule of <code>DetectorUnderTest.params_for</code>)</summary>",
                "",
                *(f"- `{key}`: {note}" for key, note in notes),
                "",
                "</details>",
                "",
            ]
    return "\n".join(lines).rstrip() + "\n"


def replay(
    quick: bool = False, *, workers: int = WORKERS, kinds: Sequence[str] | None = None
) -> tuple[list[DetectorRun], str]:
    """Replay NAB (``quick``: :data:`QUICK_SERIES` with the first detector only; ``kinds``: only
    those detectors of :data:`DETECTORS`); the runs and their Markdown section."""
    from pipelines.evaluation.nab import load_windows

    root = nab_root()
    keys = list(QUICK_SERIES) if quick else sorted(load_windows(root))
    unknown = sorted(set(kinds or ()) - {d.kind for d in DETECTORS})
    if unknown:
        raise ValueError(f"--detectors {unknown} are not in benchmarks.detectors.DETECTORS ({[d.kind for d in DETECTORS]})")
    detectors = DETECTORS[:1] if quick else [d for d in DETECTORS if not kinds or d.kind in kinds]
    # One process is quicker for a few short series: a worker spends seconds importing GX.
    runs = run_detectors(detectors, keys, root, 1 if quick else workers, partial=quick)
    total_rows = sum(len(_read_timestamps(root / "data" / key)) for key in keys)
    return runs, render(runs, quick=quick, total_rows=total_rows, series_count=len(keys))


def run(quick: bool = False) -> str:
    """The section "## Detection quality on NAB" of a fresh replay (see :func:`replay`)."""
    return replay(quick)[1]


_KEPT_FROM = re.compile(r"[Rr]ows of ((?:`[^`]+`(?:, )?)+) (?:are kept )?from the run that ended ([0-9: -]+ UTC)")


def kept_note(previous: str, kept: Sequence[str]) -> str:
    """Which run each of the ``kept`` rows comes from: the run that ``previous`` says it kept
    them from, else the run ``previous`` itself ended."""
    ended = re.search(r"Run ended ([0-9: -]+ UTC)", previous)
    when = {label: time for labels, time in _KEPT_FROM.findall(previous) for label in re.findall(r"`[^`]+`", labels)}
    groups: dict[str, list[str]] = {}
    for label in kept:
        groups.setdefault(when.get(label, ended.group(1) if ended else "earlier"), []).append(label)
    (oldest, labels), *later = sorted(groups.items())
    parts = [f"Rows of {', '.join(labels)} are kept from the run that ended {oldest}"]
    parts += [f"rows of {', '.join(labels)} from the run that ended {time}" for time, labels in later]
    return "; ".join(parts) + "; the others are from this run."


def merged_section(previous: str, fresh: str) -> str:
    """``fresh`` (a run of some detectors) with the rows of the other detectors kept from
    ``previous``, and a sentence saying which rows come from which run."""
    merged, kept = merge_tables(previous, fresh)
    if not kept:
        return merged
    shown = set(kept) | {row[0] for row in table_rows(fresh)}
    missing = [d.kind for d in DETECTORS if f"`{d.label}`" not in shown]
    note = kept_note(previous, kept) + (f" Never replayed through the pipeline: {', '.join(missing)}." if missing else "")
    merged = re.sub(r" Not replayed through the pipeline in this run: [^\n]*?\.(?=\n|$)", "", merged, count=1)
    merged = re.sub(r"(Generated by `[^\n]*)", lambda m: f"{m.group(1)} {note}", merged, count=1)
    fresh_kinds = set(re.findall(r"<summary><code>([^<]+)</code>", fresh))
    details = [
        block for block in re.findall(r"<details>.*?</details>", previous, flags=re.DOTALL)
        if re.search(r"<code>([^<]+)</code>", block).group(1) not in fresh_kinds  # type: ignore[union-attr]
    ]
    return merged.rstrip() + "".join(f"\n\n{block}" for block in details) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.nab", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="three short series, one detector; print only")
    parser.add_argument("--workers", type=int, default=WORKERS, help="series replayed at once (default 2)")
    parser.add_argument("--detectors", nargs="+", metavar="KIND", help="replay only these kinds (default: every detector)")
    args = parser.parse_args(argv)
    _quiet_worker()
    log.setLevel(logging.INFO)
    _, section = replay(args.quick, workers=args.workers, kinds=args.detectors)
    if args.detectors and not args.quick:
        section = merged_section(read_section(SECTION), section)
    print(section)
    if not args.quick:
        path = write_section(SECTION, section)
        log.info("wrote section %r of %s", SECTION, path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
