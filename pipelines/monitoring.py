"""Data drift and anomaly-rate monitoring of predict runs, and when to ask for a retrain.

At train time :func:`reference_profile` summarises each feature of the training window (decile
bins for the population stability index, a quantile sketch for the Kolmogorov-Smirnov statistic)
and the calibrated anomaly rate; :mod:`pipelines.training` stores it in the version's metadata.

After each predict run publishes, :func:`monitor_window` reads the run's rows back from the
Parquet dataset (the run's workspace is gone by then; the published rows carry each feature's
``value`` and ``is_anomaly``), computes per series and feature the drift of the values against
the serving champion's reference and the anomaly rate, and writes one JSON record per run and
series, atomically::

    <outputs.parquet>/_monitoring/job=<job>/<series slug>/records/<interval key>.json
    <outputs.parquet>/_monitoring/job=<job>/<series slug>/retrain_request.json

Re-running an interval replaces its record, so it never counts twice toward "sustained". The
decision rule and the reasons for its defaults are in docs/MODELS.md ("Monitoring and
retraining").
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from pipelines import storage
from pipelines.config import JobConfig, resolve_path
from pipelines.errors import ConfigError, ModelError, PipelineError
from pipelines.registry import ModelRegistry
from pipelines.series import series_slug
from pipelines.workspace import Window, utcnow

log = logging.getLogger(__name__)

#: Bins of the population stability index: deciles of the training values, the usual choice
#: (fewer bins miss shape changes, more make small windows noisy).
PSI_BINS = 10
#: Points of the quantile sketch the KS statistic is computed against (error at most 1 %).
SKETCH_POINTS = 101
#: Share given to a bin that holds no value, so that the logarithm in the PSI stays finite.
_PSI_FLOOR = 1e-4
REQUEST = "retrain_request.json"
#: The name of a record written by :func:`record_path` (its window's key).
_KEY = re.compile(r"\d{8}T\d{6}_\d{8}T\d{6}\.json$")


# -- reference at train time -------------------------------------------------------------------


def feature_reference(values: np.ndarray) -> dict[str, Any] | None:
    """Decile edges and shares, and a quantile sketch, of one feature's training values."""
    finite = np.asarray(values, dtype="float64")
    finite = finite[np.isfinite(finite)]
    if finite.size < 2:
        return None
    # Repeated values (counts, flat stretches) make some deciles equal: one edge each.
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, PSI_BINS + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, finite, side="right"), minlength=edges.size + 1)
    return {
        "edges": edges.tolist(),
        "shares": (counts / finite.size).tolist(),
        "quantiles": np.quantile(finite, np.linspace(0, 1, SKETCH_POINTS)).tolist(),
        "rows": int(finite.size),
    }


def calibrated_rate(train_anomaly_rate: Any, rows: int) -> float | None:
    """The anomaly rate the threshold implies: the share of training timestamps it flagged; None
    when ``train_anomaly_rate`` is no rate (missing, NaN, or outside [0, 1]).

    Measured rather than taken from the threshold's value, because a timestamp is anomalous when
    any of its features is (so several features flag more often than the contamination of each),
    and a ``score`` threshold has no nominal rate at all. Floored at one timestamp of the
    training window: a rate of 0 would make any single anomaly "far" from it.
    """
    # A NaN passed max() and crashed the rate test in scipy ("p (nan) must be in range"), and a
    # null read from metadata raised TypeError: a model without a rate is not rate-monitored.
    if isinstance(train_anomaly_rate, bool) or not isinstance(train_anomaly_rate, (int, float, np.number)):
        return None
    rate = float(train_anomaly_rate)
    if not 0.0 <= rate <= 1.0:  # NaN fails both comparisons
        return None
    return max(rate, 1.0 / max(rows, 1))


def reference_profile(data: pd.DataFrame, *, train_anomaly_rate: float) -> dict[str, Any]:
    """What drift and rate monitoring compare predict runs with (JSON, a few kB per feature)."""
    return {
        "features": {str(c): feature_reference(data[c].to_numpy(dtype="float64")) for c in data.columns},
        "calibrated_anomaly_rate": calibrated_rate(train_anomaly_rate, len(data)),
        "rows": len(data),
    }


# -- statistics ----------------------------------------------------------------------------------


def psi(reference: dict[str, Any], values: np.ndarray) -> float | None:
    """Population stability index of ``values`` against the training deciles of ``reference``.

    Hand-written (ten lines): no maintained library in our dependencies computes it, and the
    formula is the standard one, sum over bins of ``(actual - expected) * ln(actual / expected)``.
    """
    finite = np.asarray(values, dtype="float64")
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return None
    edges, shares = np.asarray(reference["edges"]), np.asarray(reference["shares"])
    top = max(edges[-1], reference["quantiles"][-1]) if edges.size else None
    if top is not None and (edges[-1] >= top or shares[-1] > 2 / PSI_BINS):
        # The top decile is the training maximum (a constant feature, an error count that was
        # always 0), or the top bin holds several deciles (a value repeated at its edge merged
        # them: an error flag that was 0 in 96 % of training rows and 1 in the others): either
        # way the top bin [edge, inf) held (nearly) every training value, so values above
        # anything seen in training fell in it too and a jump upward was no drift at all. An
        # edge just above the maximum gives them their own bin, which held no training value.
        # (Not for a top bin of one decile: values just past a continuous tail's maximum are
        # common in a new window and would each add noise, while a jump already fills that bin.)
        edges, shares = np.append(edges, np.nextafter(top, np.inf)), np.append(shares, 0.0)
    expected = np.maximum(shares, _PSI_FLOOR)
    counts = np.bincount(np.searchsorted(edges, finite, side="right"), minlength=edges.size + 1)
    actual = np.maximum(counts / finite.size, _PSI_FLOOR)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def ks(reference: dict[str, Any], values: np.ndarray) -> float | None:
    """Two-sample Kolmogorov-Smirnov statistic of ``values`` against the reference's sketch."""
    from scipy.stats import ks_2samp

    finite = np.asarray(values, dtype="float64")
    finite = finite[np.isfinite(finite)]
    if not finite.size:
        return None
    # The sketch's evenly spaced quantiles are a sample whose empirical CDF is within 1/100 of
    # the training one; only the statistic is used (its p-value would assume 101 draws).
    return float(ks_2samp(np.asarray(reference["quantiles"]), finite).statistic)


def rate_p_value(anomalous: int, rows: int, expected_rate: float) -> float:
    """One-sided binomial test: how likely ``anomalous`` or more of ``rows`` at ``expected_rate``."""
    from scipy.stats import binomtest

    return float(binomtest(anomalous, rows, min(max(expected_rate, 0.0), 1.0), alternative="greater").pvalue)


# -- records ---------------------------------------------------------------------------------------


def monitoring_root(job: JobConfig) -> str:
    return storage.join(resolve_path(job.outputs.parquet), "_monitoring", f"job={job.name}")


def _series_folder(job: JobConfig, series: str) -> str:
    return storage.join(monitoring_root(job), series_slug(series))


def record_path(job: JobConfig, series: str, window: Window) -> str:
    return storage.join(_series_folder(job, series), "records", f"{window.key()}.json")


def _read_json(job: JobConfig, series: str, url: str, needs: tuple[str, ...], remedy: str) -> dict[str, Any]:
    """The JSON object at ``url`` holding ``needs``; one that is not (edited by hand, cut short by a
    copy) is a :class:`ConfigError` naming the job, the series, the file and ``remedy``: it failed as
    a bare JSONDecodeError or KeyError naming none of them, on every run after."""
    content = storage.read_bytes(url, job.outputs.storage_options)
    try:
        document = json.loads(content)
    except ValueError as exc:
        wrong = f"is not valid JSON ({exc})"
    else:
        missing = [key for key in needs if key not in document] if isinstance(document, dict) else None
        if missing == []:
            return document
        wrong = f"lacks {', '.join(missing)}" if missing else "holds no JSON object"
    raise ConfigError(f"job {job.name}, series {series}: the monitoring file {url} {wrong}; {remedy}")


def read_records(job: JobConfig, series: str) -> list[dict[str, Any]]:
    """Every record of ``series``, oldest interval first."""
    folder = storage.join(_series_folder(job, series), "records")
    records = []
    for name in storage.find(folder, job.outputs.storage_options):
        if name.endswith(".json") and not name.startswith("."):  # dot files: interrupted writes
            remedy = "delete it (re-running its interval's predict run writes it again)"
            needs = ("interval_start", "interval_end", "model_version", "features")
            records.append(_read_json(job, series, storage.join(folder, name), needs, remedy))
    return sorted(records, key=lambda r: r["interval_start"])


def _recent_records(
    job: JobConfig, series: str, window: Window, version: str, request: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """The records up to ``window``'s start that :func:`retrain_reason` and :func:`_already_requested`
    look at, oldest first: read newest first, and only back to the last ``sustained_runs`` records of
    ``version`` or the latest record of another champion (a champion's records count from its latest
    promotion on), and, if a retrain was asked for it, to that request or ``repeat_after_runs`` records.

    A series gains a record every run and every run read them all: after a year of hourly runs that
    was 8,760 files per series and run, minutes of GETs per series on object storage.
    """
    folder = storage.join(_series_folder(job, series), "records")
    latest = f"{window.key().split('_')[0]}_"  # names are <start>_<end>.json, sorted by start
    names = [
        name for name in storage.find(folder, job.outputs.storage_options)
        if name.endswith(".json") and not name.startswith(".")  # dot files: interrupted writes
        # Later intervals (a backfill runs behind the scheduled runs) are not read; a file named
        # otherwise (copied in by hand) is, and sorts after them, so it is read first.
        and (name[: len(latest)] <= latest or not _KEY.match(name))
    ]
    settings = job.monitoring
    since = request["interval_start"] if request is not None and request["model_version"] == version else None
    remedy = "delete it (re-running its interval's predict run writes it again)"
    needs = ("interval_start", "interval_end", "model_version", "features")
    picked: list[dict[str, Any]] = []
    own = own_since = 0
    for name in reversed(names):
        record = _read_json(job, series, storage.join(folder, name), needs, remedy)
        if record["interval_start"] > window.start.isoformat():
            continue
        picked.append(record)
        if record["model_version"] != version:
            if since is None:
                break  # an earlier champion's: the ones before it never count (it starts afresh)
            continue
        own += 1
        own_since += since is not None and record["interval_start"] > since
        if own >= settings.sustained_runs and (
            since is None or record["interval_start"] <= since or own_since >= settings.repeat_after_runs
        ):
            break
    return sorted(picked, key=lambda r: r["interval_start"])


def _write_json(url: str, document: dict[str, Any], job: JobConfig) -> None:
    storage.atomic_write(url, json.dumps(document, indent=2, sort_keys=True).encode(), job.outputs.storage_options)


def read_request(job: JobConfig, series: str) -> dict[str, Any] | None:
    remedy = "delete it (a retrain still due is requested again by the next run)"
    try:
        return _read_json(job, series, storage.join(_series_folder(job, series), REQUEST), ("model_version", "interval_start"), remedy)
    except FileNotFoundError:
        return None


# -- one run ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MonitorResult:
    """What a predict run's monitoring found: whether a retrain is due, why, and the figures."""

    due: bool
    reasons: list[str]
    window: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    records: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"due": self.due, "reasons": self.reasons, "window": self.window, "rows": self.rows, "records": self.records}


def _monitored(rows: pd.DataFrame, window: Window, min_rows: int) -> pd.DataFrame:
    """The window's rows, extended back by the latest earlier published timestamps up to ``min_rows``."""
    inside = rows[rows["timestamp"] >= window.start]
    stamps = inside["timestamp"].nunique()
    if stamps >= min_rows:
        return inside
    earlier = rows.loc[rows["timestamp"] < window.start, "timestamp"].drop_duplicates().nlargest(min_rows - stamps)
    return rows[(rows["timestamp"] >= window.start) | rows["timestamp"].isin(earlier)]


def series_record(
    job: JobConfig, series: str, rows: pd.DataFrame, window: Window, metadata: dict[str, Any], version: str, run_id: str
) -> dict[str, Any]:
    """Drift per feature and the anomaly rate of one series' published ``rows`` (window plus look-back)."""
    settings = job.monitoring
    monitored = _monitored(rows, window, settings.min_rows)
    stamps = int(monitored["timestamp"].nunique())
    profile = metadata.get("monitoring") or {}
    references = profile.get("features") or {}
    notes = []
    if not references:
        notes.append(f"model version {version} has no training reference: retrain to monitor its drift")
    features: dict[str, dict[str, Any]] = {}
    # Each feature's statistics take its own latest min_rows values: counted per timestamp, a
    # feature missing at most timestamps (a sensor offline, gaps left missing) got a PSI over a
    # handful of values, far above the threshold by chance, and asked for a retrain that cannot
    # help; and one missing value must not cost a feature its statistics either.
    present_rows = rows[np.isfinite(rows["value"].to_numpy(dtype="float64"))]
    for feature in sorted(monitored["feature"].unique()):
        own_rows = _monitored(present_rows[present_rows["feature"] == feature], window, settings.min_rows)
        values = own_rows["value"].to_numpy(dtype="float64")
        reference = references.get(str(feature))
        present = len(values)
        enough = present >= settings.min_rows and reference is not None
        if references and reference is None:
            notes.append(
                f"feature {feature}: model version {version} has no training reference for it (added after that "
                "training, or missing in all its rows): retrain to monitor its drift"
            )
        elif reference is not None and stamps >= settings.min_rows and not enough:
            notes.append(
                f"feature {feature}: only {present} values published up to this window (the others are missing); "
                f"its drift needs monitoring.min_rows={settings.min_rows}"
            )
        stats = {
            "psi": psi(reference, values) if enough else None,
            "ks": ks(reference, values) if enough else None,
        }
        statistic = stats[settings.statistic]
        features[str(feature)] = {**stats, "drifted": statistic is not None and statistic > settings.threshold}
    # The rate is judged on rows this champion scored: earlier rows may come from another model.
    own = monitored[monitored["model_version"] == version]
    rate_rows = int(own["timestamp"].nunique())
    anomalous = int(own.loc[own["is_anomaly"].astype(bool), "timestamp"].nunique())
    expected = profile.get("calibrated_anomaly_rate")
    if expected is None and "train_anomaly_rate" in metadata.get("metrics", {}):
        expected = calibrated_rate(metadata["metrics"]["train_anomaly_rate"], int(metadata.get("rows", 0)))
    p_value = rate_p_value(anomalous, rate_rows, expected) if expected is not None and rate_rows >= settings.min_rows else None
    rate = anomalous / rate_rows if rate_rows else None
    far = (
        p_value is not None and rate is not None and expected is not None
        and p_value < settings.rate_p_value and rate > settings.rate_factor * expected
    )
    if expected is None:
        notes.append(
            f"model version {version} recorded no usable training anomaly rate, so its rate is not monitored; "
            "train the series again to record one"
        )
    if stamps < settings.min_rows:
        notes.append(f"only {stamps} timestamps published up to this window; statistics need monitoring.min_rows={settings.min_rows}")
    return {
        "job": job.name,
        "series": series,
        "interval_start": window.start.isoformat(),
        "interval_end": window.end.isoformat(),
        "run_id": run_id,
        "model_version": version,
        "statistic": settings.statistic,
        "drift_threshold": settings.threshold,
        "timestamps": int(rows.loc[rows["timestamp"] >= window.start, "timestamp"].nunique()),
        "monitored_timestamps": stamps,
        "features": features,
        "drifted_features": sorted(f for f, s in features.items() if s["drifted"]),
        "anomalous_timestamps": anomalous,
        "rate_timestamps": rate_rows,
        "anomaly_rate": rate,
        "calibrated_anomaly_rate": expected,
        "rate_p_value": p_value,
        "rate_far": bool(far),
        "notes": notes,
        "recorded_at": utcnow().isoformat(),
    }


def retrain_reason(job: JobConfig, records: list[dict[str, Any]], version: str) -> str | None:
    """Why the last ``sustained_runs`` records of champion ``version`` call for a retrain, or ``None``."""
    n = job.monitoring.sustained_runs
    latest = [r for r in records if r["model_version"] == version][-n:]
    if len(latest) < n:
        return None
    # Judged on the recorded figures with today's settings, not on each record's "drifted" and
    # "rate_far": after a setting was changed (to quiet a false alarm), records made under the
    # old one asked for a retrain "above 1 ... at least 0.3" until sustained_runs new ones came.
    statistic, threshold = job.monitoring.statistic, job.monitoring.threshold

    def over(record: dict[str, Any]) -> set[str]:
        return {f for f, s in record["features"].items() if s.get(statistic) is not None and s[statistic] > threshold}

    drifted = over(latest[0]).intersection(*(over(r) for r in latest[1:]))
    span = f"{latest[0]['interval_start']} to {latest[-1]['interval_end']}"
    if drifted:
        worst = {f: min(r["features"][f][statistic] for r in latest) for f in sorted(drifted)}
        figures = ", ".join(f"{f} (at least {v:.3g})" for f, v in worst.items())
        return (
            f"sustained drift: {job.monitoring.statistic} above {job.monitoring.threshold:g} in the last {n} runs "
            f"({span}) for {figures}"
        )
    settings = job.monitoring
    if all(
        r["rate_p_value"] is not None and r["rate_p_value"] < settings.rate_p_value
        and r["anomaly_rate"] > settings.rate_factor * r["calibrated_anomaly_rate"]
        for r in latest
    ):
        rates = ", ".join(f"{r['anomaly_rate']:.3g}" for r in latest)
        return (
            f"anomaly rate far above the calibrated {latest[-1]['calibrated_anomaly_rate']:.3g} in the last {n} runs "
            f"({span}): {rates} (each over {job.monitoring.rate_factor:g}x, binomial p < {job.monitoring.rate_p_value:g})"
        )
    return None


def _already_requested(
    job: JobConfig, request: dict[str, Any] | None, records: list[dict[str, Any]], version: str, run_id: str
) -> bool:
    """A retrain asked for this champion is not asked again until ``repeat_after_runs`` runs later.

    Except by the run that asked: its retry (or clear) must ask again, since the asset event that
    carries the request is emitted only when the task succeeds.
    """
    if request is None or request["model_version"] != version or request.get("run_id") == run_id:
        return False
    since = [r for r in records if r["model_version"] == version and r["interval_start"] > request["interval_start"]]
    return len(since) < job.monitoring.repeat_after_runs


def monitor_window(
    job: JobConfig,
    window: Window,
    *,
    run_id: str,
    registry: ModelRegistry | None = None,
    unscored: dict[str, str] | None = None,
) -> MonitorResult:
    """Record drift and anomaly rates of the published rows of ``window``; say whether to retrain.

    ``unscored`` are the window's series that had no model (:func:`pipelines.scoring.score_series`):
    a retrain is asked for each once, so that a new dimension value gets its model before the
    next scheduled training; not again while that request stands (a series with too few rows to
    train would otherwise ask at every run).
    """
    from pipelines.sinks import ParquetSink
    from pipelines.training import registry_for

    if not job.monitoring.enabled:
        return MonitorResult(False, ["monitoring is disabled for this job (monitoring.enabled: false)"], str(window))
    registry = registry or registry_for(job)
    # Twice min_rows periods: missing values and gaps (a source silent at night) take part of it,
    # and each feature's statistics need min_rows values (series_record).
    lookback = window.start - job.frequency * (2 * job.monitoring.min_rows)
    published = ParquetSink(resolve_path(job.outputs.parquet), job.outputs.storage_options).read(
        job=job.name, start=lookback, end=window.end
    )
    in_window = published[published["timestamp"] >= window.start]
    if in_window.empty:
        log.warning("job %s: no published rows in window %s; nothing to monitor", job.name, window)
        return MonitorResult(False, [f"no published rows in window {window}"], str(window))
    reasons: list[str] = []
    rows: list[dict[str, Any]] = []
    paths: list[str] = []
    failed: list[tuple[str, str, Exception]] = []  # (series, what was being done, the error)
    # Retrain requests, written once every series is monitored: the asset event that carries them
    # is emitted only when the task succeeds, and a request written by a run that then failed made
    # the next runs take the retrain as asked (_already_requested) while none was triggered.
    requests: list[tuple[str, dict[str, Any]]] = []
    for series in sorted(unscored or {}):
        try:
            _request_first_model(job, series, window, run_id, reasons, requests)
        except Exception as exc:
            failed.append((series, "asking for its first model", exc))
            log.error("job %s, series %s: asking for its first model failed, the other series go on: %s", job.name, series, exc)
    for series, series_rows in published.groupby("series", sort=True):
        series = str(series)
        scored = in_window.loc[in_window["series"] == series, "model_version"]
        if scored.empty:
            continue
        version = str(scored.iloc[-1])
        try:
            _monitor_series(job, series, series_rows, window, version, run_id, registry, reasons, rows, paths, requests)
        except Exception as exc:
            # One series' missing model version or damaged file stopped the run there: the series
            # after it were not monitored at all, and their sustained drift went unseen.
            failed.append((series, f"monitoring its rows scored by model version {version}", exc))
            log.error("job %s, series %s: monitoring failed, the other series go on: %s", job.name, series, exc,
                      exc_info=not isinstance(exc, PipelineError))
    if failed:
        _raise_failed(job, window, failed, reasons)
    for url, request in requests:
        _write_json(url, request, job)
    return MonitorResult(bool(reasons), reasons, str(window), rows, paths)


def _request_first_model(
    job: JobConfig, series: str, window: Window, run_id: str, reasons: list[str], requests: list[tuple[str, dict[str, Any]]]
) -> None:
    """Ask once for a training of ``series``, which had no model to score its rows (appended to ``requests``)."""
    request = read_request(job, series)
    if request is not None and request["model_version"] is None and request.get("run_id") != run_id:
        log.info("job %s, series %s: no model yet; a training was already requested", job.name, series)
        return
    reasons.append(f"series {series}: no model yet, so its rows were not scored")
    request = {"model_version": None, "interval_start": window.start.isoformat(), "run_id": run_id,
               "reason": "no model yet", "requested_at": utcnow().isoformat()}
    requests.append((storage.join(_series_folder(job, series), REQUEST), request))


#: Series whose failure the task's error details (a registry out of reach fails every series).
_FAILURES_NAMED = 10


def _raise_failed(job: JobConfig, window: Window, failed: list[tuple[str, str, Exception]], reasons: list[str]) -> None:
    """Fail the run, once every other series was monitored, naming each series that could not be.

    Failing rather than succeeding with a warning: a run that succeeds is not looked at, and a
    series that is never monitored (its model version gone, a damaged file) would drift unseen for
    good. The cost: the retrain asset is updated only by a task that succeeds, so a retrain found
    due for the other series (named here) is asked for again by the task's retry or clear once the
    bad series is fixed, or by the job's next run that succeeds (its request is not written, so no
    run takes it as asked), or done by the next scheduled training.
    """
    def said(exc: Exception) -> str:
        if isinstance(exc, ModelError):
            return f"{exc} (restore that version in the registry, or train the series again)"
        if isinstance(exc, PipelineError):
            return str(exc)  # a damaged file, a store out of reach: its message says what to do
        if isinstance(exc, OSError):
            return f"{type(exc).__name__}: {exc} (check that the job's outputs and registry storage are reachable)"
        # Not foreseen (a bare KeyError says "'edges'"): its type, and the traceback in the log.
        return f"{type(exc).__name__}: {exc} (unexpected: see the traceback in the task's log)"

    # Named in full in the log, one line each; the task's error (a line of the UI) names the first ones.
    lines = "; ".join(f"series {series}, {what}: {said(exc)}" for series, what, exc in failed[:_FAILURES_NAMED])
    if len(failed) > _FAILURES_NAMED:
        lines += f"; and {len(failed) - _FAILURES_NAMED} more series (see the log)"
    due = f" A retrain is due for {'; '.join(reasons)}; it is asked for once this task succeeds." if reasons else ""
    message = (
        f"job {job.name}: monitoring of window {window} failed for {len(failed)} series, the others were monitored and "
        f"recorded: {lines}. Then clear this task: monitoring a window again replaces its records, never counts them twice.{due}"
    )
    # A file to repair or a model to train: retrying as it is cannot help (see dags' fail_fast);
    # anything else (a store out of reach) keeps the task's retries.
    if all(isinstance(exc, (ConfigError, ModelError)) for _, _, exc in failed):
        raise ModelError(message) from failed[0][2]
    raise PipelineError(message) from failed[0][2]


def _monitor_series(
    job: JobConfig,
    series: str,
    series_rows: pd.DataFrame,
    window: Window,
    version: str,
    run_id: str,
    registry: ModelRegistry,
    reasons: list[str],
    rows: list[dict[str, Any]],
    paths: list[str],
    requests: list[tuple[str, dict[str, Any]]],
) -> None:
    """Record the drift and rate of one series, ask for its retrain when due; appends to the run's lists."""
    metadata = registry.version(job.name, series, version).metadata
    record = series_record(job, series, series_rows, window, metadata, version, run_id)
    path = record_path(job, series, window)
    _write_json(path, record, job)
    paths.append(path)
    records = _recent_records(job, series, window, version, None)
    reason = retrain_reason(job, records, version)
    decision = "ok"
    if reason is not None:
        request = read_request(job, series)
        if request is not None and request["model_version"] == version:
            records = _recent_records(job, series, window, version, request)  # back to the request
        if _already_requested(job, request, records, version, run_id):
            decision = "retrain already requested"
            log.info("job %s, series %s: %s; a retrain was already requested for %s", job.name, series, reason, version)
        else:
            decision = "retrain"
            reasons.append(f"series {series}: {reason}")
            log.warning("job %s, series %s: retrain requested: %s", job.name, series, reason)
            request = {"model_version": version, "interval_start": record["interval_start"], "run_id": run_id,
                       "reason": reason, "requested_at": utcnow().isoformat()}
            requests.append((storage.join(_series_folder(job, series), REQUEST), request))
    for feature, stats in record["features"].items():
        rows.append({
            "series": series, "feature": feature, "psi": stats["psi"], "ks": stats["ks"], "drifted": stats["drifted"],
            "anomaly_rate": record["anomaly_rate"], "calibrated": record["calibrated_anomaly_rate"],
            "p_value": record["rate_p_value"], "decision": decision,
        })
    for note in record["notes"]:
        log.info("job %s, series %s: %s", job.name, series, note)
