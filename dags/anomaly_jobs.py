"""Three DAGs per job in config/jobs/: ``<job>__train``, ``<job>__predict`` and ``<job>__tune``.

This file only turns validated job configs into DAGs. Every task is a few lines that call one
function of the ``pipelines`` library and pass paths (never data) to the next task. Heavy
libraries (pandas, scikit-learn, Great Expectations) are imported inside the tasks, so parsing
this file costs only pydantic and YAML.
"""

from __future__ import annotations

import functools
from datetime import timedelta

import pendulum
from airflow.sdk import Asset, Param, dag, get_current_context, get_parsing_context, task
from airflow.timetables.interval import CronDataIntervalTimetable

from pipelines.config import JobConfig, scan_jobs
from pipelines.errors import ConfigError

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
        "ISO 8601 date or date-time, e.g. 2024-03-01T00:00:00Z (UTC if no offset). Empty: the scheduled data interval.",
    ),
    "end": _window_param(
        "Window end",
        "ISO 8601 date or date-time, exclusive, e.g. 2024-03-08 (UTC if no offset). Empty: the scheduled data interval's end.",
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


ONE_OFF_PARAMS = {
    "input": Param(
        None,
        type=["null", "string"],
        title="Input file (one-off scoring)",
        description="Score this whole file (a path relative to the project root, an absolute one, s3:// or gs://) "
        "instead of the job's source; leave the window start and end empty.",
    ),
    "output": Param(
        None,
        type=["null", "string"],
        title="Output file (one-off scoring)",
        description="The Parquet file to write (relative to the project root); never inside the job's dataset. "
        "Empty: _one_off/ beside the job's dataset.",
    ),
    "chunk_rows": Param(
        250_000,
        type="integer",
        minimum=1000,
        title="Rows per chunk (one-off scoring)",
        description="Each chunk is validated and scored by its own task; bounds memory.",
    ),
}


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
            f"end of the window the event names. Updates `{model_asset(job).name}`. Another window: trigger with `end` "
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
            + f". Runs {when}. Another window: trigger with `start` and `end`. One-off scoring of a file (the job's "
            f"outputs are not touched): `airflow dags trigger {job.name}__predict --conf '{{\"input\": \"data/file.csv\"}}'`, "
            "written to `output` (default: `_one_off/` beside the job's dataset)."
        )
    doc = (
        f"**{purpose}** for job `{job.name}`. {job.description}\n\n{what}\n\n"
        f"Model `{job.model.kind}`, features {', '.join(job.features)}, dimensions {', '.join(job.dimensions) or 'none'}."
    )
    return description, doc


def _dag_kwargs(job: JobConfig, purpose: str, cron: str | None, params: dict) -> dict:
    description, doc = _dag_doc(job, purpose, cron)
    return {
        "dag_id": f"{job.name}__{purpose}",
        "schedule": _timetable(cron),
        "start_date": pendulum.instance(job.start_datetime),
        "catchup": False,
        "max_active_runs": 1,  # runs of one job write the same partitions: one at a time
        "default_args": DEFAULT_ARGS,
        "params": params,
        "tags": ["anomaly-pipelines", job.name, purpose],
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

        @task(outlets=outlets)
        @fail_fast
        def summarize(results: list[dict], extracted: dict, run_id: str | None = None) -> dict:
            """Logs each series' version and promotion and removes the run's work folder; train also
            updates the job's model asset, saying which series' versions now serve."""
            from pipelines.reporting import log_table
            from pipelines.runner import cleanup

            results = _materialize(results)
            log_table(f"job {job.name}: {purpose} results", results)
            cleanup(job, run_id, purpose=purpose)
            if purpose == "train":
                # The event said nothing: a DAG scheduled on it could not tell a new serving model from a
                # run whose every challenger lost to its champion.
                get_current_context()["outlet_events"][model_asset(job)].extra = {
                    "end": extracted["window"]["end"],
                    "promoted": {r["series"]: r["version"] for r in results if r.get("promoted")},
                    "kept": sorted(r["series"] for r in results if not r.get("promoted")),
                    "run_id": run_id,
                }
            return {"series": len(results), "results": results}

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
        summary = summarize(fit.partial(extracted=extracted).expand(series=series), extracted)
        if purpose == "tune":
            announce(summary, extracted)

    return train_dag()


def build_predict_dag(job: JobConfig):
    """Score every series: extract (+ history) → validate → one mapped task per series → publish.

    With the ``input`` param (one-off scoring) the file is split into chunks instead, each
    validated and scored by its own mapped task, and streamed into one output file.
    """

    @dag(**_dag_kwargs(job, "predict", job.schedules.predict, {**WINDOW_PARAMS, **ONE_OFF_PARAMS}))
    def predict_dag():
        @task
        @fail_fast
        def extract(run_id: str | None = None) -> dict:
            """Reads the window (with the history the serving models need), or splits the one-off ``input``
            file into chunks; refuses a bad run conf and a job with no model yet before reading anything."""
            from pipelines.extraction import extract as extract_window
            from pipelines.extraction import extract_chunks
            from pipelines.runner import check_one_off, history_rows
            from pipelines.scoring import check_serving
            from pipelines.workspace import prediction_window

            interval_start, interval_end, params = _context_window({**WINDOW_PARAMS, **ONE_OFF_PARAMS})
            # Bad one-off values fail here, not in publish after every chunk is scored.
            check_one_off(
                job, input_path=params.get("input"), output=_conf_path(params.get("output")), chunk_rows=int(params["chunk_rows"]),
                start=params.get("start"), end=params.get("end"),
            )
            # A window typed wrong is refused as such, even before the job's first training.
            window = None if params.get("input") else prediction_window(
                interval_start, interval_end, start=params.get("start"), end=params.get("end"), job=job
            )
            check_serving(job)  # before the first training: "train first", not a validation failure
            if window is None:
                extracted = extract_chunks(
                    job, run_id=run_id, input_path=params["input"], chunk_rows=int(params["chunk_rows"])
                )
                return {**extracted.to_dict(), "one_off": True}
            extracted = extract_window(job, window, run_id=run_id, purpose="predict", history_rows=history_rows(job, window.start))
            return {**extracted.to_dict(), "one_off": False}

        @task
        @fail_fast
        def validate(extracted: dict, run_id: str | None = None) -> list[dict]:
            """Checks the window's batch and lists its series (one-off: lists the chunks, each checked where
            it is scored); a failed check fails the run with the batch quarantined."""
            from pipelines.extraction import validate as validate_batch
            from pipelines.workspace import Window

            if extracted["one_off"]:  # each chunk is validated by the task that scores it
                return [{"chunk": index} for index in range(len(extracted["paths"]))]
            window = Window.from_dict(extracted["window"])
            keys = validate_batch(job, window, run_id=run_id, purpose="predict", raw_path=extracted["paths"][0])
            return [{"series": key} for key in keys]

        @task(
            map_index_template="{{ unit_label }}",
            doc_md="Scores one series (or one chunk of a one-off file) with its serving model.",
        )
        @fail_fast
        def score(unit: dict, extracted: dict, run_id: str | None = None) -> dict:
            from pipelines.extraction import read_series
            from pipelines.scoring import score_chunk, score_series
            from pipelines.workspace import Window

            window = Window.from_dict(extracted["window"])
            if "chunk" in unit:
                get_current_context()["unit_label"] = f"chunk {unit['chunk'] + 1} of {len(extracted['paths'])}"
                return score_chunk(
                    job, window, run_id=run_id, index=unit["chunk"], chunk_paths=extracted["paths"], read_from=extracted["read_from"]
                )
            get_current_context()["unit_label"] = unit["series"]  # names the mapped task in the UI
            data = read_series(job, run_id, unit["series"], purpose="predict")
            return score_series(job, unit["series"], data, window, run_id=run_id).to_dict()

        # Backfills run several intervals at once (their own max_active_runs), and two publishes
        # rewriting one day's Parquet file at once would lose one's rows: one publish at a time.
        @task(max_active_tis_per_dag=1)
        @fail_fast
        def publish(scored: list[dict], extracted: dict, run_id: str | None = None) -> dict:
            """Writes the scored rows to the job's outputs, replacing the interval's rows (one-off: to one
            Parquet file), and removes the run's work folder."""
            from pipelines.reporting import log_table
            from pipelines.runner import cleanup
            from pipelines.scoring import publish_file, publish_scored
            from pipelines.workspace import Window, one_off_output

            params = get_current_context()["params"]
            window = Window.from_dict(extracted["window"])
            scored = _materialize(scored)
            paths = [s["path"] for s in scored]
            if extracted["one_off"]:
                unscored = {key: why for s in scored for key, why in s.get("unscored", {}).items()}
                output = _conf_path(params.get("output")) or one_off_output(job, run_id)
                result = publish_file(job, window, paths, output, unscored=unscored)
            else:
                result = publish_scored(job, window, scored)
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

            if extracted["one_off"]:
                raise AirflowSkipException("one-off scoring does not write the job's outputs: nothing to monitor")
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
            from airflow.sdk.exceptions import AirflowSkipException

            from pipelines.alerts import alert_window
            from pipelines.workspace import Window

            if extracted["one_off"]:
                raise AirflowSkipException("one-off scoring does not write the job's outputs: nothing to alert on")
            return alert_window(job, Window.from_dict(extracted["window"]), context=get_current_context())

        extracted = extract()
        units = validate(extracted)
        published = publish(score.partial(extracted=extracted).expand(unit=units), extracted)
        monitor(published, extracted)
        if job.alerts is not None:
            alert(published, extracted)

    return predict_dag()


# A job file that does not validate makes no DAGs, and the other jobs keep theirs (one exception
# here would drop every DAG of this file); anomaly_job_errors.py reports it as an import error.
# A worker parses this file to run one task: it builds that task's job only, as building every
# job's DAGs made each task start 30 ms per configured job later (15 s at 500 jobs).
_running = get_parsing_context().dag_id
for _job in scan_jobs().jobs.values():
    if _running and _running not in {f"{_job.name}__{purpose}" for purpose in ("train", "tune", "predict")}:
        continue
    build_train_dag(_job, "train")
    build_train_dag(_job, "tune")
    build_predict_dag(_job)
