"""Four DAGs per job in config/jobs/: ``<job>__train``, ``<job>__predict``, ``<job>__tune`` and
``<job>__score`` (one-off scoring of a file, triggered only).

This file only turns validated job configs into DAGs. Every task is a few lines that call one
function of the ``pipelines`` library and pass paths (never data) to the next task. Heavy
libraries (pandas, scikit-learn, Great Expectations) are imported inside the tasks, so parsing
this file costs only pydantic and YAML.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from datetime import datetime, timedelta, timezone

import pendulum
from airflow.sdk import Asset, Param, TriggerRule, dag, get_current_context, get_parsing_context, task
from airflow.timetables.interval import CronDataIntervalTimetable

from pipelines.config import DEFAULT_CHUNK_ROWS, MAX_CHUNK_ROWS, JobConfig, scan_jobs
from pipelines.errors import ConfigError

log = logging.getLogger(__name__)

DEFAULT_ARGS = {"owner": "anomaly-pipelines", "retries": 2, "retry_delay": timedelta(minutes=1)}

# The ISO 8601 forms the window's start and end take (a subset of what `workspace.to_utc` parses):
# Airflow checks a run's params when the run is created, so a typo is refused at trigger time,
# in the form or by `airflow dags trigger`, instead of failing `extract` later.
ISO_DATE_TIME = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?)?$"


def _window_param(title: str, description: str) -> Param:
    """An optional ISO 8601 bound of the window, checked when the run is triggered."""
    return Param(None, type=["null", "string"], pattern=ISO_DATE_TIME, title=title, description=description)


WINDOW_PARAMS = {
    "start": _window_param(
        "Window start",
        "ISO 8601 date or date-time, e.g. 2024-03-01T00:00:00Z (UTC if no offset). Empty: the scheduled data interval "
        "(a run triggered without a logical date: the schedule's last complete interval).",
    ),
    "end": _window_param(
        "Window end",
        "ISO 8601 date or date-time, exclusive, e.g. 2024-03-08 (UTC if no offset). Empty: the scheduled data interval's end "
        "(a run triggered without a logical date: the schedule's last complete interval's).",
    ),
}


def _training_window_params(job: JobConfig) -> dict:
    """``start`` and ``end`` as train and tune read them: the training window, not a data interval."""
    from pipelines.durations import duration_text

    return {
        "start": _window_param(
            "Training window start",
            "ISO 8601 date or date-time, e.g. 2024-02-01T00:00:00Z (UTC if no offset). "
            f"Empty: {duration_text(job.training_window)} (the job's training_window) before the end.",
        ),
        "end": _window_param(
            "Training window end",
            "ISO 8601 date or date-time, exclusive, e.g. 2024-03-08 (UTC if no offset). "
            "Empty: the scheduled data interval's end; for a run started by a tune or retrain asset event, "
            "the end of the window the event names; else when the run was due.",
        ),
    }


# No default for input: a run without it is refused when it is created (form, CLI or REST API).
SCORE_PARAMS = {
    "input": Param(
        type="string",
        minLength=1,
        title="Input file",
        description="Score this whole file (a path relative to the project root, an absolute one, s3:// or gs://) "
        "with the job's serving models; the job's source and outputs are not touched.",
    ),
    "output": Param(
        None,
        type=["null", "string"],
        title="Output file",
        description="The Parquet file to write (relative to the project root); never inside the job's dataset. "
        "Empty: _one_off/ beside the job's dataset.",
    ),
    "chunk_rows": Param(
        DEFAULT_CHUNK_ROWS,
        type="integer",
        minimum=1000,
        maximum=MAX_CHUNK_ROWS,
        title="Rows per chunk",
        description="Each chunk is validated and scored by its own task; bounds memory.",
    ),
}


# A run that hangs (a source that never answers) held its DAG's max_active_runs for ever: no later
# run of the job started. Each DAG fails a run still going after its dagrun_timeout (the clock starts
# when the run starts, queued tasks included); its unfinished tasks stop and the next run can start.
# Train and tune read one training window and fit each series (1,000 series of `context` train in
# 23 minutes on 2 workers, docs/BENCHMARKS.md): hours mean hung, not slow. Tune fits a whole grid
# per series, so it gets twice train's time.
TRAIN_TIMEOUT = timedelta(hours=6)
TUNE_TIMEOUT = timedelta(hours=12)
# One-off scoring reads a whole file of any size (10 million points in 40 s on 2 cores): a day
# leaves room for billions of points on a busy cluster while still freeing the run's slot.
SCORE_TIMEOUT = timedelta(hours=24)
# Predict scores one data interval; runs queue behind a slow one (max_active_runs=1). Three intervals
# let a run ride out its retries and a slow source; beyond that the job falls behind its schedule.
# At least an hour (a 5-minute schedule would kill a run still in its first retry delay), at most
# twelve (a daily or weekly job's hung run would otherwise block it for days).
PREDICT_TIMEOUT_INTERVALS = 3
PREDICT_TIMEOUT_RANGE = (timedelta(hours=1), timedelta(hours=12))


def dagrun_timeout(purpose: str, cron: str | None, job: JobConfig | None = None) -> timedelta:
    """How long a run of a job's ``purpose`` DAG (scheduled on ``cron``) may take before it is failed:
    the job's ``timeouts`` setting for it, else the defaults above."""
    configured = getattr(job.timeouts, purpose) if job is not None else None
    if configured is not None:
        return configured
    if purpose != "predict":
        return {"train": TRAIN_TIMEOUT, "tune": TUNE_TIMEOUT, "score": SCORE_TIMEOUT}[purpose]
    shortest, longest = PREDICT_TIMEOUT_RANGE
    if not cron:  # manual windows only: as long as the longest scheduled one
        return longest
    from croniter import croniter

    # The shortest gap between fires: an irregular cron ("0 9-17 * * 1-5") is judged by its busy hours.
    fires = croniter(cron, datetime(2024, 1, 1, tzinfo=timezone.utc))
    times = [fires.get_next(datetime) for _ in range(50)]
    interval = min(later - earlier for earlier, later in zip(times, times[1:]))
    return min(max(PREDICT_TIMEOUT_INTERVALS * interval, shortest), longest)


def fail_fast(func):
    """Bad data, bad configuration, a missing model or a package not installed fail the task at
    once: a retry cannot fix them. Other errors (a database away, a file not there yet) keep their
    retries."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        from airflow.sdk.exceptions import AirflowFailException

        from pipelines.errors import ConfigError, DataValidationError, MissingDependencyError, ModelError

        try:
            return func(*args, **kwargs)
        except (ConfigError, DataValidationError, ModelError, MissingDependencyError) as exc:
            raise AirflowFailException(str(exc)) from exc

    return wrapper


@contextlib.contextmanager
def _given_window_fails_fast(params: dict):
    """A window a person gave (``start`` or ``end`` in the run's conf) that holds no rows fails the
    task at once: a retry reads the same window again (it was retried twice, minutes, and the run
    failed as if the data had not landed). A scheduled run's empty window keeps its retries."""
    from pipelines.errors import EmptyWindowError

    try:
        yield
    except EmptyWindowError as exc:
        if not (params.get("start") or params.get("end")):
            raise
        from airflow.sdk.exceptions import AirflowFailException

        given = ", ".join(f"{key} {params[key]!r}" for key in ("start", "end") if params.get(key))
        raise AirflowFailException(f"{exc} The window came from the run's conf ({given}): check it and trigger again.") from exc


def model_asset(job: JobConfig) -> Asset:
    """Updated whenever a train run registers models for ``job``."""
    return Asset(name=f"anomaly_pipelines__{job.name}__model", uri=f"file:///anomaly-pipelines/models/{job.name}")


def tuned_asset(job: JobConfig) -> Asset:
    """Updated when a tune run stores new parameters for ``job``: train runs at once to use them."""
    return Asset(name=f"anomaly_pipelines__{job.name}__tuned", uri=f"file:///anomaly-pipelines/tuned/{job.name}")


def retrain_asset(job: JobConfig) -> Asset:
    """Updated when a predict run finds sustained drift or an anomaly rate far from the calibrated one."""
    return Asset(name=f"anomaly_pipelines__{job.name}__retrain", uri=f"file:///anomaly-pipelines/retrain/{job.name}")


def _timetable(cron: str | None) -> CronDataIntervalTimetable | None:
    # Data-interval timetables give contiguous windows, so every hour (or day) is scored once.
    return CronDataIntervalTimetable(cron, timezone="UTC") if cron else None


def _last_complete_interval(job: JobConfig) -> tuple[datetime, datetime]:
    """The window of a predict run triggered without a logical date (``airflow dags trigger``'s
    default), which has no data interval: the last complete interval of the predict schedule
    before the run was due, as the schedule's own timetable infers a manual run's; the last whole
    period of the job's frequency when predict has no schedule. Such a run failed with "predict
    needs a window" whatever the trigger meant."""
    from pipelines.workspace import last_period

    context = get_current_context()
    due = getattr(context.get("dag_run"), "run_after", None) or datetime.now(timezone.utc)
    timetable = context["dag"].timetable
    if isinstance(timetable, CronDataIntervalTimetable):
        interval = timetable.infer_manual_data_interval(run_after=pendulum.instance(due))
        start, end, what = interval.start, interval.end, f"interval of the predict schedule `{job.schedules.predict}`"
    else:
        window = last_period(job, due)
        start, end, what = window.start, window.end, f"period of the job's frequency ({job.frequency})"
    log.info(
        "job %s: no data interval, start or end given: scoring [%s, %s), the last complete %s before %s; "
        "trigger with start and end for another window",
        job.name, start.isoformat(), end.isoformat(), what, due.isoformat(),
    )
    return start, end


def _train_schedule(job: JobConfig):
    """Train runs on its cron and as soon as tuning stores new parameters or monitoring asks
    for a retrain; on those assets alone when the job has no train cron."""
    from airflow.sdk import AssetOrTimeSchedule

    assets = tuned_asset(job) | retrain_asset(job)
    timetable = _timetable(job.schedules.train)
    return assets if timetable is None else AssetOrTimeSchedule(timetable=timetable, assets=assets)


def _context_window(declared: dict) -> tuple[object, object, dict]:
    context = get_current_context()
    # Airflow accepts any key in a run's conf: a misspelt one ("inptu") would quietly score the
    # data interval instead of the file that was asked for.
    unknown = sorted(set(getattr(context.get("dag_run"), "conf", None) or {}) - set(declared))
    if unknown:
        raise ConfigError(
            f"unknown run conf key(s) {', '.join(unknown)}; "
            f"{context['dag'].dag_id} takes {', '.join(declared)} (check the spelling and trigger again)"
        )
    # A backfill gives every one of its runs the same conf: each run redid that one window and
    # none scored (or trained on) the interval it stands for.
    conf = getattr(context.get("dag_run"), "conf", None) or {}
    run_type = getattr(context.get("dag_run"), "run_type", None)
    bounds = {key: conf[key] for key in ("start", "end") if conf.get(key)}
    if bounds and getattr(run_type, "value", run_type) == "backfill":
        given = ", ".join(f"{key} {value!r}" for key, value in bounds.items())
        raise ConfigError(
            f"{context['dag'].dag_id}: a backfill run works on its own data interval, but the backfill gave every run "
            f"the same {given}: each run would redo that one window. Leave start and end out of --dag-run-conf "
            "and give the range with --from-date and --to-date"
        )
    return context.get("data_interval_start"), context.get("data_interval_end"), context["params"]


def _conf_path(path: str | None) -> str | None:
    """A path of the run's conf: a relative one resolves against the project root, as ``input`` and
    the job file's paths do (it was written relative to whatever folder the worker ran in)."""
    from pipelines.config import resolve_path

    return resolve_path(path) if path else path


def _materialize(results) -> list[dict]:
    # Indexing up to len() reads each mapped result once; iterating a lazy XCom sequence probes
    # one past the end, which Airflow logs as an error.
    return [dict(results[i]) for i in range(len(results))]


def _dag_doc(job: JobConfig, purpose: str, cron: str | None) -> tuple[str, str]:
    """The DAG's description (one line, in the DAG list) and its docs (the UI's Docs panel)."""
    from pipelines.durations import duration_text

    span = duration_text(job.training_window)
    when = f"on `{cron}` (UTC)" if cron else "only when triggered"
    if purpose == "train":
        description = f"Trains a model per series of {job.name} ({job.model.kind}); promotes each that serves at least as well."
        what = (
            f"Reads the last {span} (the job's training window) of the source up to the window end, validates it, fits one "
            "model per series (a mapped `fit` task each), registers it and promotes it unless it is worse than the serving "
            f"champion. Runs {f'on `{cron}` (UTC) and' if cron else '(no cron)'} as soon as `{tuned_asset(job).name}` "
            "(tune stored new parameters) or "
            f"`{retrain_asset(job).name}` (predict's monitoring asks for a retrain) is updated; such a run trains up to the "
            f"end of the window the event names. Updates `{model_asset(job).name}`, naming the series promoted, kept and "
            "failed: a series whose `fit` failed does not hold back the others' event, and `finish` then fails the run. "
            "Another window: trigger with `end` "
            f"(and `start`), e.g. `airflow dags trigger {job.name}__train --conf '{{\"end\": \"2024-03-08\"}}'`."
        )
    elif purpose == "tune":
        description = f"Searches the tuning grid per series of {job.name}; train follows when a tuned model is promoted."
        what = (
            f"Reads the last {span} of the source up to the window end, validates it, searches the job's tuning grid per "
            "series (a mapped `fit` task each) and promotes a tuned challenger only where it is clearly better than the "
            "serving champion (`tune.promotion_margin`). "
            f"Runs {when}. Updates `{tuned_asset(job).name}`, which starts train on the same window, only when some "
            "series' challenger was promoted (`announce` is skipped otherwise)."
        )
    elif purpose == "score":
        description = f"One-off scoring of a whole file with {job.name}'s serving models, into one Parquet file."
        what = (
            "Scores the file given as `input` with the serving models: it is split into chunks of `chunk_rows` rows, each "
            "validated and scored by its own mapped `score` task, and streamed into one Parquet file, `output` (default: "
            "`_one_off/` beside the job's dataset). The job's source, outputs, monitoring and alerts are not touched. "
            f"Only triggered, e.g. `airflow dags trigger {job.name}__score --conf '{{\"input\": \"data/file.csv\"}}'`. "
            f"Up to {SCORE_MAX_ACTIVE_RUNS} runs at once: each writes its own output file and work folder, so they do not "
            "clash (give them different outputs), and it runs beside, never blocking, the scheduled predict runs; more would "
            "crowd the workers that those runs need, each chunk holding its rows in memory."
        )
    else:
        sinks = " and ".join(
            name for name, used in [("the Parquet dataset", True), ("the SQL table", job.outputs.table is not None),
                                    ("the BigQuery table", job.outputs.bigquery is not None)] if used
        )
        description = f"Scores {job.name} with the serving models, publishes the anomalies, monitors drift."
        what = (
            f"Scores the data interval with the serving models (a mapped `score` task per series) and publishes them to {sinks} "
            f"(re-running an interval replaces its rows); then `monitor` records drift and anomaly rates and updates "
            f"`{retrain_asset(job).name}` (which starts train) when a retrain is due"
            + ("; `alert` sends the job's alerts" if job.alerts is not None else "")
            + f". Runs {when}. Another window: trigger with `start` and `end`. One-off scoring of a file is "
            f"`{job.name}__score`, not this DAG."
        )
    timeout = duration_text(dagrun_timeout(purpose, cron, job))
    why = "the job's `timeouts`" if getattr(job.timeouts, purpose) is not None else {
        "train": "1,000 series train in minutes",
        "tune": "twice train's: a grid search per series",
        "score": "a file of billions of points fits in it",
        "predict": f"{PREDICT_TIMEOUT_INTERVALS} schedule intervals, kept between 1h and 12h: later runs queue behind it",
    }[purpose]
    held = f"hold one of its {SCORE_MAX_ACTIVE_RUNS} run slots" if purpose == "score" else "stop the job's later runs"
    doc = (
        f"**{purpose}** for job `{job.name}`. {job.description}\n\n{what}\n\n"
        f"A run still going after {timeout} ({why}) is failed (`dagrun_timeout`), so that a hung run cannot "
        f"{held}.\n\n"
        f"Model `{job.model.kind}`, features {', '.join(job.features)}, dimensions {', '.join(job.dimensions) or 'none'}."
    )
    return description, doc


#: One-off scoring runs of one job at once (see the score DAG's docs).
SCORE_MAX_ACTIVE_RUNS = 3


def _dag_kwargs(job: JobConfig, purpose: str, cron: str | None, params: dict) -> dict:
    description, doc = _dag_doc(job, purpose, cron)
    return {
        "dag_id": f"{job.name}__{purpose}",
        "schedule": _timetable(cron),
        "start_date": pendulum.instance(job.start_datetime),
        "catchup": False,
        # Runs of one job write the same partitions: one at a time; a one-off run writes its own file.
        "max_active_runs": SCORE_MAX_ACTIVE_RUNS if purpose == "score" else 1,
        "dagrun_timeout": dagrun_timeout(purpose, cron, job),
        "default_args": DEFAULT_ARGS,
        "params": params,
        "tags": ["anomaly-pipelines", job.name, purpose] + (["one-off"] if purpose == "score" else []),
        "description": description,
        "doc_md": doc,
    }


def build_train_dag(job: JobConfig, purpose: str = "train"):
    """Train (or tune) every series: extract → validate → one mapped task per series → summarize."""
    cron = job.schedules.train if purpose == "train" else job.schedules.tune
    outlets = [model_asset(job)] if purpose == "train" else []
    kwargs = _dag_kwargs(job, purpose, cron, _training_window_params(job))
    if purpose == "train":
        kwargs["schedule"] = _train_schedule(job)

    @dag(**kwargs)
    def train_dag():
        @task
        @fail_fast
        def extract(run_id: str | None = None) -> dict:
            """Reads the training window of the job's source into the run's work folder; refuses a bad run
            conf before reading anything."""
            from pipelines.extraction import extract as extract_window
            from pipelines.workspace import training_window

            _, interval_end, params = _context_window(WINDOW_PARAMS)
            if interval_end is None and not params.get("end"):
                # An asset-triggered (or manual) run has no data interval (see triggered_training_end).
                from pipelines.workspace import triggered_training_end

                context = get_current_context()
                events = context.get("triggering_asset_events") or {}
                ends = [
                    e.extra["end"]
                    for asset in (tuned_asset(job), retrain_asset(job))
                    for e in events.get(asset, [])
                    if (e.extra or {}).get("end")
                ]
                due = context.get("logical_date") or getattr(context.get("dag_run"), "run_after", None)
                interval_end = triggered_training_end(job, ends, due)
            window = training_window(job, interval_end, start=params.get("start"), end=params.get("end"))
            with _given_window_fails_fast(params):
                return extract_window(job, window, run_id=run_id, purpose=purpose).to_dict()

        @task
        @fail_fast
        def validate(extracted: dict, run_id: str | None = None) -> list[str]:
            """Checks the batch (the job's validation settings and suite) and lists its series; a failed
            check fails the run with the batch quarantined and a report beside the outputs."""
            from pipelines.extraction import validate as validate_batch
            from pipelines.workspace import Window

            window = Window.from_dict(extracted["window"])
            return validate_batch(job, window, run_id=run_id, purpose=purpose, raw_path=extracted["paths"][0])

        # doc_md given: Airflow gives a mapped task no docs from its docstring.
        @task(
            map_index_template="{{ series_label }}",
            doc_md="One series: train registers a model (tune searches the job's grid) and promotes it only where "
            "it is no worse than the serving champion (tune: clearly better).",
        )
        @fail_fast
        def fit(series: str, extracted: dict, run_id: str | None = None) -> dict:
            from pipelines.extraction import read_series
            from pipelines.workspace import Window

            get_current_context()["series_label"] = series  # names the mapped task in the UI

            data = read_series(job, run_id, series, purpose=purpose)
            window = Window.from_dict(extracted["window"])
            if purpose == "tune":
                from pipelines.tuning import tune_series

                return tune_series(job, series, data, window, run_id=run_id)
            from pipelines.training import train_series

            return train_series(job, series, data, window, run_id=run_id).to_dict()

        # Once every fit is done and at least one succeeded: one series' failed fit (a new region with
        # too few rows) made summarize upstream_failed, so the series promoted in the same run got no
        # model asset event and its consumers never heard of them. `finish` still fails the run.
        # Only fit is an upstream (extract's and validate's results are pulled): with extract an
        # upstream, its success alone would run summarize after validate failed.
        @task(outlets=outlets, trigger_rule=TriggerRule.ALL_DONE_MIN_ONE_SUCCESS)
        @fail_fast
        def summarize(results: list[dict], run_id: str | None = None) -> dict:
            """Logs each series' version and promotion (and the series whose fit failed); train also updates
            the job's model asset, saying which series' versions now serve. Removes the run's work folder
            unless a fit failed (clearing that fit task re-runs it on the same data), and old model versions."""
            from pipelines.reporting import log_table
            from pipelines.runner import cleanup, prune_models

            ti = get_current_context()["ti"]
            extracted, series = ti.xcom_pull(task_ids="extract"), ti.xcom_pull(task_ids="validate")
            results = _materialize(results)
            done = {r["series"] for r in results}
            failed = [key for key in series if key not in done]
            # Which window: a manual or asset-triggered run chose it itself (see extract).
            window = "[{start}, {end})".format(**extracted["window"])
            log_table(f"job {job.name}: {purpose} results, window {window}", results + [{"series": key, "failed": True} for key in failed])
            if not failed:
                cleanup(job, run_id, purpose=purpose, series=series)
            else:
                prune_models(job, series=series)  # as cleanup does: one series failing every run must not keep the others' old versions
            if purpose == "train":
                # The event said nothing: a DAG scheduled on it could not tell a new serving model from a
                # run whose every challenger lost to its champion.
                get_current_context()["outlet_events"][model_asset(job)].extra = {
                    "end": extracted["window"]["end"],
                    "promoted": {r["series"]: r["version"] for r in results if r.get("promoted")},
                    "kept": sorted(r["series"] for r in results if not r.get("promoted")),
                    "failed": failed,
                    "run_id": run_id,
                }
            return {"series": len(results), "results": results, "failed": failed, "total": len(series)}

        @task
        def finish(summary: dict) -> None:
            """Fails the run when some series' fit failed, naming them (summarize has announced the others);
            does nothing otherwise."""
            from airflow.sdk.exceptions import AirflowFailException

            if summary["failed"]:
                past = {"train": "trained", "tune": "tuned"}[purpose]
                done = ", ".join(r["series"] for r in summary["results"])
                raise AirflowFailException(
                    f"job {job.name}: {purpose} failed for {len(summary['failed'])} of {summary['total']} series "
                    f"({', '.join(summary['failed'])}): their fit tasks' logs say why; clear those tasks to retry once "
                    f"fixed. The other series were {past}: {done}"
                )

        # Tune only: succeeds (updating tuned_asset, which schedules train) when some series'
        # challenger was promoted; skipped otherwise, so an unchanged model triggers no train run.
        @task(outlets=[tuned_asset(job)])
        def announce(summary: dict, extracted: dict, run_id: str | None = None) -> dict:
            """Updates the job's tuned asset (which starts train on this window) when some series' tuned
            challenger was promoted; skipped otherwise."""
            from airflow.sdk.exceptions import AirflowSkipException

            promoted = [r["series"] for r in summary["results"] if r.get("promoted")]
            if not promoted:
                raise AirflowSkipException("no tuned challenger was promoted: the serving models stay, no retrain")
            # "end": the triggered train run trains on the same window's end (see extract).
            extra = {"end": extracted["window"]["end"], "promoted": promoted, "run_id": run_id}
            get_current_context()["outlet_events"][tuned_asset(job)].extra = extra
            return extra

        extracted = extract()
        series = validate(extracted)
        summary = summarize(fit.partial(extracted=extracted).expand(series=series))
        finish(summary)
        if purpose == "tune":
            announce(summary, extracted)

    return train_dag()


def _refuse_one_off(job: JobConfig) -> None:
    """A predict run asked for one-off scoring, which moved to ``<job>__score``: say so at once."""
    conf = getattr(get_current_context().get("dag_run"), "conf", None) or {}
    asked = [key for key in SCORE_PARAMS if key in conf]
    if asked:
        raise ConfigError(
            f"job {job.name}: {job.name}__predict scores windows of the job's source (start, end) and no longer "
            f"takes {', '.join(asked)}: one-off scoring of a file has its own DAG. Trigger {job.name}__score instead, "
            f"with the same conf: airflow dags trigger {job.name}__score --conf '{{\"input\": \"data/file.csv\"}}'"
        )


def build_predict_dag(job: JobConfig):
    """Score every series of a window: extract (+ history) → validate → one mapped task per series → publish."""

    @dag(**_dag_kwargs(job, "predict", job.schedules.predict, WINDOW_PARAMS))
    def predict_dag():
        @task
        @fail_fast
        def extract(run_id: str | None = None) -> dict:
            """Reads the window with the history the serving models need; refuses a bad run conf and a job
            with no model yet before reading anything."""
            from pipelines.extraction import extract as extract_window
            from pipelines.runner import history_rows
            from pipelines.scoring import check_serving
            from pipelines.workspace import prediction_window

            # One-off scoring ran here and held the job's only active run for as long as a file of
            # millions of points took: scheduled windows waited. It has its own DAG now.
            _refuse_one_off(job)
            interval_start, interval_end, params = _context_window(WINDOW_PARAMS)
            if interval_end is None and not params.get("end"):
                # Triggered without a logical date (`airflow dags trigger`'s default): no data interval.
                # A start alone scores from it up to the default's end; an end alone is refused (a start
                # from the default would not be what was meant).
                interval_start, interval_end = _last_complete_interval(job)
            # A window typed wrong is refused as such, even before the job's first training.
            window = prediction_window(interval_start, interval_end, start=params.get("start"), end=params.get("end"), job=job)
            check_serving(job)  # before the first training: "train first", not a validation failure
            with _given_window_fails_fast(params):
                extracted = extract_window(job, window, run_id=run_id, purpose="predict", history_rows=history_rows(job, window.start))
            return extracted.to_dict()

        @task
        @fail_fast
        def validate(extracted: dict, run_id: str | None = None) -> list[dict]:
            """Checks the window's batch and lists its series; a failed check fails the run with the batch
            quarantined."""
            from pipelines.extraction import validate as validate_batch
            from pipelines.workspace import Window

            window = Window.from_dict(extracted["window"])
            keys = validate_batch(job, window, run_id=run_id, purpose="predict", raw_path=extracted["paths"][0])
            return [{"series": key} for key in keys]

        @task(
            map_index_template="{{ unit_label }}",
            doc_md="Scores one series with its serving model.",
        )
        @fail_fast
        def score(unit: dict, extracted: dict, run_id: str | None = None) -> dict:
            from pipelines.extraction import read_series
            from pipelines.scoring import score_series
            from pipelines.workspace import Window

            window = Window.from_dict(extracted["window"])
            get_current_context()["unit_label"] = unit["series"]  # names the mapped task in the UI
            data = read_series(job, run_id, unit["series"], purpose="predict")
            return score_series(job, unit["series"], data, window, run_id=run_id).to_dict()

        # Backfills run several intervals at once (their own max_active_runs), and two publishes
        # rewriting one day's Parquet file at once would lose one's rows: one publish at a time.
        @task(max_active_tis_per_dag=1)
        @fail_fast
        def publish(scored: list[dict], extracted: dict, run_id: str | None = None) -> dict:
            """Writes the scored rows to the job's outputs, replacing the interval's rows, and removes the
            run's work folder."""
            from pipelines.reporting import log_table
            from pipelines.runner import cleanup
            from pipelines.scoring import publish_scored
            from pipelines.workspace import Window

            window = Window.from_dict(extracted["window"])
            result = publish_scored(job, window, _materialize(scored))
            summary = [{"series": k, "timestamps": n, "anomalous": result.anomalies[k]} for k, n in result.rows_per_series.items()]
            summary += [{"series": k, "timestamps": 0, "anomalous": "not scored: no model yet"} for k in result.unscored]
            log_table(f"job {job.name}: scored {window}", summary)
            cleanup(job, run_id, purpose="predict")
            return result.to_dict()

        # From the published rows (the workspace is gone by then; ``published`` only orders it
        # after publish): records drift and anomaly rates, and succeeds (updating retrain_asset, which schedules train) only when a retrain
        # is due; otherwise it is skipped. One at a time: backfill runs decide in turn.
        @task(outlets=[retrain_asset(job)], max_active_tis_per_dag=1)
        @fail_fast
        def monitor(published: dict, extracted: dict, run_id: str | None = None) -> dict:
            """Records drift and anomaly rates of the published window; updates the job's retrain asset (which
            starts train) when a retrain is due, and is skipped otherwise."""
            from airflow.sdk.exceptions import AirflowSkipException

            from pipelines.monitoring import monitor_window
            from pipelines.reporting import log_table
            from pipelines.workspace import Window

            context = get_current_context()
            window = Window.from_dict(extracted["window"])
            result = monitor_window(job, window, run_id=run_id, unscored=published.get("unscored"))
            log_table(f"job {job.name}: drift and anomaly rate, {window}", result.rows)
            # Kept whether or not a retrain is due (a skipped task has no return value).
            context["ti"].xcom_push(key="monitoring", value=result.to_dict())
            if not result.due:
                raise AirflowSkipException(f"no retrain due: {'; '.join(result.reasons) or 'no sustained drift or anomaly rate'}")
            # "end": the triggered train run trains on the data up to this window (see extract).
            context["outlet_events"][retrain_asset(job)].extra = {
                "reasons": result.reasons, "end": window.end.isoformat(), "window": str(window), "run_id": run_id
            }
            return result.to_dict()

        # From the published rows (``published`` only orders it after publish). One at a time:
        # every run of the job reads and writes its alert state (sent events, snoozes, digest).
        # A failed delivery keeps its retries: the retry sends what was not sent.
        @task(max_active_tis_per_dag=1)
        @fail_fast
        def alert(published: dict, extracted: dict) -> dict:
            """Sends the job's alerts for the window's anomalies (snoozes and digests kept between runs)."""
            from pipelines.alerts import alert_window
            from pipelines.workspace import Window

            return alert_window(job, Window.from_dict(extracted["window"]), context=get_current_context())

        extracted = extract()
        units = validate(extracted)
        published = publish(score.partial(extracted=extracted).expand(unit=units), extracted)
        monitor(published, extracted)
        if job.alerts is not None:
            alert(published, extracted)

    return predict_dag()


def build_score_dag(job: JobConfig):
    """One-off scoring of a file: extract (split into chunks) → list_chunks → one mapped task per chunk → publish.

    Its own DAG, triggered only: in the predict DAG (max_active_runs=1) a file of millions of
    points held the job's scheduled windows back for as long as it took, and they held it back.
    """

    @dag(**_dag_kwargs(job, "score", None, SCORE_PARAMS))
    def score_dag():
        @task
        @fail_fast
        def extract(run_id: str | None = None) -> dict:
            """Splits the ``input`` file into chunks; refuses a bad run conf, a bad input or output and a job
            with no model yet before reading anything."""
            from pipelines.extraction import extract_chunks
            from pipelines.runner import check_one_off
            from pipelines.scoring import check_serving

            _, _, params = _context_window(SCORE_PARAMS)
            chunk_rows = int(params["chunk_rows"])
            # Bad values fail here, not in publish after every chunk is scored.
            check_one_off(job, input_path=params["input"], output=_conf_path(params.get("output")), chunk_rows=chunk_rows)
            check_serving(job)  # before the first training: "train first", not a validation failure
            return extract_chunks(job, run_id=run_id, input_path=params["input"], chunk_rows=chunk_rows).to_dict()

        # Airflow maps over a task's whole return value only, and extract's names every chunk's path,
        # which each score task needs: the indexes to map over come from here.
        @task
        def list_chunks(extracted: dict) -> list[int]:
            """Lists the chunks of the file, each validated and scored by its own mapped ``score`` task."""
            return list(range(len(extracted["paths"])))

        @task(
            map_index_template="{{ chunk_label }}",
            doc_md="Validates one chunk of the file and scores it with the serving models.",
        )
        @fail_fast
        def score(chunk: int, extracted: dict, run_id: str | None = None) -> dict:
            from pipelines.runner import log_score_run_progress
            from pipelines.scoring import score_chunk
            from pipelines.workspace import Window

            get_current_context()["chunk_label"] = f"chunk {chunk + 1} of {len(extracted['paths'])}"  # names it in the UI
            scored = score_chunk(
                job, Window.from_dict(extracted["window"]), run_id=run_id, index=chunk, chunk_paths=extracted["paths"],
                read_from=extracted["read_from"],
            )
            log_score_run_progress(
                job, run_id=run_id, chunk_paths=extracted["paths"], total_rows=extracted["rows"], split_at=extracted.get("split_at")
            )
            return scored

        @task
        @fail_fast
        def publish(scored: list[dict], extracted: dict, run_id: str | None = None) -> dict:
            """Streams the scored chunks into the one ``output`` Parquet file (whole or not at all) and removes
            the run's work folder."""
            from pipelines.reporting import log_table
            from pipelines.runner import cleanup
            from pipelines.scoring import publish_file
            from pipelines.workspace import Window, one_off_output

            params = get_current_context()["params"]
            window = Window.from_dict(extracted["window"])
            scored = _materialize(scored)
            unscored = {key: why for s in scored for key, why in s.get("unscored", {}).items()}
            output = _conf_path(params.get("output")) or one_off_output(job, run_id)
            result = publish_file(job, window, [s["path"] for s in scored], output, unscored=unscored)
            summary = [{"series": k, "timestamps": n, "anomalous": result.anomalies[k]}
                       for k, n in result.rows_per_series.items()]
            summary += [{"series": k, "timestamps": 0, "anomalous": "not scored: no model yet"} for k in result.unscored]
            log_table(f"job {job.name}: scored {params['input']} into {output}", summary)
            cleanup(job, run_id, purpose="score")
            return result.to_dict()

        extracted = extract()
        publish(score.partial(extracted=extracted).expand(chunk=list_chunks(extracted)), extracted)

    return score_dag()


# A job file that does not validate makes no DAGs, and the other jobs keep theirs (one exception
# here would drop every DAG of this file); anomaly_job_errors.py reports it as an import error.
# A worker parses this file to run one task: it builds that task's job only, as building every
# job's DAGs made each task start 30 ms per configured job later (15 s at 500 jobs).
_running = get_parsing_context().dag_id
for _job in scan_jobs().jobs.values():
    if _running and _running not in {f"{_job.name}__{purpose}" for purpose in ("train", "tune", "predict", "score")}:
        continue
    build_train_dag(_job, "train")
    build_train_dag(_job, "tune")
    build_predict_dag(_job)
    build_score_dag(_job)
