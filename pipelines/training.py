"""Train one series' detector, register it, and promote it only if it serves at least as well.

Promotion rule (documented in docs/MODELS.md): the new model is first fitted on the head of the
training window and scored on its held-back tail, beside the serving champion scored on the same
rows: those of the tail after the champion's last training row, when there are enough of them
(:func:`compared_rows`). It replaces the champion only when its normalised forecast error there
is not worse than the champion's (a tie promotes: equal error, fresher data); a worse model is
registered with the reason but never serves. The registered artifact is then refitted on the
whole window. Both fits warm-start from the champion when it is of the same kind and parameters
and the detector allows it. A training that raises registers nothing, so the champion keeps serving.

One exception: when the job's ``model`` (kind, params), ``threshold`` or ``frequency`` is no longer
the one the champion was trained or tuned under (``configured_model``, ``threshold`` and
``frequency`` in its metadata), people changed the job file, and the new model is promoted without
the comparison (:func:`model_change`).

Values people confirmed as anomalies (true labels, :mod:`pipelines.labels`) are left out of what
the model learns as normal: they are made missing before any fit (:func:`leave_out_confirmed`),
overlapping labels resolved by :func:`label_verdicts`, the rule tuning uses too.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

import pipelines
from pipelines.config import JobConfig, resolve_path
from pipelines.detectors import BaseDetector, load_detector, make_detector
from pipelines.detectors.synthetic import robust_scale as feature_scale
from pipelines.durations import duration_text, parse_duration
from pipelines.errors import ConfigError, MissingDependencyError, ModelError, SinkError
from pipelines.labels import Verdicts, label_verdicts, utc_stamp  # the one rule for overlapping labels, which alerts apply too
from pipelines.monitoring import reference_profile
from pipelines.registry import ModelRegistry, ModelVersion, tuned_version
from pipelines.workspace import Window, utcnow

if TYPE_CHECKING:  # pragma: no cover
    from pipelines.labels import Label

log = logging.getLogger(__name__)

HOLDOUT_FRACTION = 0.2
#: Fewest held-back rows after the champion's last training row for the comparison to use only
#: them (:func:`compared_rows`). 10 is the fewest rows training accepts, below which a mean error is
#: mostly noise; a twentieth of the tail (a hundredth of the window) keeps a long window from being
#: judged on a handful of rows, while daily retraining of windows up to about 100 days still
#: compares out of sample (a 30-day window: 24 of 144 hourly rows, 288 of 1,728 at 5 minutes).
MIN_COMPARED_ROWS = 10
MIN_COMPARED_SHARE = 1 / 20
#: What the stored decision of a version registered to be promoted says until the outcome of its
#: promotion is recorded (:func:`register_model`).
UNCONFIRMED = (
    "promotion not confirmed: registered to be promoted, but no outcome of the champion pointer's write is recorded "
    "(the run was still promoting, or stopped or failed first); it serves only if the champion pointer names it"
)


def registry_for(job: JobConfig) -> ModelRegistry:
    return ModelRegistry(resolve_path(job.registry), job.outputs.storage_options)


def configured_params(job: JobConfig, kind: str) -> dict[str, Any]:
    """The parameters the job file gives detectors of ``kind``: its model's own for the job's kind;
    for another kind, those ``model: auto`` gives that candidate (``candidate_params``), else none."""
    if kind == job.model.kind:
        return dict(job.model.params)
    if job.model.kind == "auto":
        # Tuning an auto job tries each candidate kind: without them its Prophet trials, and a
        # Prophet challenger promoted by them, lost the time zone and holidays the job gave auto's.
        return dict((job.model.params.get("candidate_params") or {}).get(kind, {}))
    return {}


def detector_for(job: JobConfig, params: dict[str, Any] | None = None, kind: str | None = None) -> BaseDetector:
    """The job's detector with ``params`` over the configured ones (:func:`configured_params`: a
    kind chosen by tuning other than the job's starts from its defaults, or from ``auto``'s
    ``candidate_params`` for it)."""
    kind = kind or job.model.kind
    return make_detector(
        kind,
        {**configured_params(job, kind), **(params or {})},
        threshold_kind=job.threshold.kind,
        threshold_value=job.threshold.value,
    )


def configured_model(job: JobConfig) -> dict[str, Any]:
    """The job's ``model`` as its file says (kind and params), recorded with every trained or
    tuned version and tuning result as ``configured_model``: a tuned version records the job's
    model in force, not the kind it tuned, so a later change of the job file can be told apart."""
    return job.model.model_dump(mode="json")


def _model_params(kind: str, params: dict[str, Any]) -> Any:
    # Compared through the parameter model, so that a default written out is no change; a record
    # the current library cannot read (a kind or parameter removed since) compares as changed.
    from pipelines.detectors.params import MODEL_PARAMS

    try:
        return MODEL_PARAMS[kind](**params)
    except (KeyError, TypeError, ValueError):  # pydantic's ValidationError is a ValueError
        return (kind, params)


def _model_difference(recorded: dict[str, Any], job: JobConfig) -> str | None:
    """How ``job.model`` differs from a recorded :func:`configured_model`, or None when it does not."""
    old_kind, old_params = recorded.get("kind"), recorded.get("params") or {}
    if old_kind != job.model.kind:
        return f"{old_kind} → {job.model.kind}"
    before, now = _model_params(old_kind, old_params), _model_params(job.model.kind, job.model.params)
    if before == now:
        return None
    if isinstance(before, tuple) or isinstance(now, tuple):
        return f"{job.model.kind} params {old_params} → {job.model.params}"
    old_values, new_values = before.model_dump(mode="json"), now.model_dump(mode="json")
    moved = [name for name in sorted(new_values) if old_values.get(name) != new_values.get(name)]
    return f"{job.model.kind} params: " + ", ".join(f"{name} {old_values.get(name)!r} → {new_values[name]!r}" for name in moved)


def model_change(job: JobConfig, champion: ModelVersion, kind: str) -> str | None:
    """How the job's model, threshold or frequency changed since ``champion`` was trained or
    tuned, e.g. ``model changed (seasonal_mad → iforest)``; None when none did. ``kind`` is what
    this training builds.

    Compared with the champion's ``configured_model`` (the job's model in force when it was trained
    or tuned), its ``threshold`` and its ``frequency``. Versions registered before
    ``configured_model`` was recorded have none: unchanged when their kind is the one this training builds (the job's kind, or the
    tuned kind in force), or when tuning promoted them and the job still searches their kind (a
    tuned kind differs from the job's by design); else the job's kind was changed.
    """
    meta = champion.metadata
    recorded = meta.get("configured_model")
    if recorded is not None:
        changed = _model_difference(recorded, job)
    elif meta.get("model") in (job.model.kind, kind) or ("tuning" in meta and meta.get("model") in _searched(job)):
        changed = None
    else:
        changed = f"{meta.get('model')} → {job.model.kind}"
    parts = [] if changed is None else [f"model changed ({changed})"]
    moved = frequency_change(job, champion)
    if moved is not None:
        parts.append(moved)
    # The threshold is the job's too, and forecast error cannot tell thresholds apart.
    threshold, now = meta.get("threshold"), job.threshold.model_dump(mode="json")
    if threshold is not None and threshold != now:
        moved = ", ".join(f"{name} {threshold.get(name)!r} → {now[name]!r}" for name in now if threshold.get(name) != now[name])
        parts.append(f"threshold changed ({moved})")
    return " and ".join(parts) or None


def frequency_change(job: JobConfig, version: ModelVersion) -> str | None:
    """``frequency changed (1h → 10min)`` when ``version`` was trained on another grid than the
    job's ``frequency`` now; None when it was not, or did not record its frequency (older versions).

    Detectors count their windows, lags, seasons and lookback in rows: a model trained on hourly
    rows reads 10-minute rows as if they were hours, and scores them without any error.
    """
    return _frequency_difference(version.metadata.get("frequency"), job)


def _frequency_difference(recorded: Any, job: JobConfig) -> str | None:
    try:
        if recorded is None or parse_duration(recorded) == job.frequency:
            return None
    except ValueError:  # a record the current library cannot read compares as changed
        pass
    return f"frequency changed ({recorded} → {duration_text(job.frequency)})"


def _searched(job: JobConfig) -> list[str]:
    """The kinds tuning searches for ``job``: a tuned kind outside them is no longer the job's."""
    from pipelines.detectors.search_spaces import default_detectors

    return list(job.tune.detectors or default_detectors(job.model.kind, job.model.params))


def _tuned(job: JobConfig, series: str, registry: ModelRegistry) -> tuple[dict[str, Any], str]:
    """Params and kind from the last promoted tuning; ignored (with a warning) when the job's
    ``model`` changed since that tuning (its result was searched from the old one and would
    override what the job file now says) or, for tunings recorded before that was kept, when the
    job no longer searches the tuned kind."""
    document = _serving_tuned(job, series, registry, registry.tuned(job.name, series) or {})
    report = document.get("report") or {}
    recorded = report.get("configured_model")
    changed = _model_difference(recorded, job) if recorded is not None else None
    if changed is not None:
        log.warning(
            "job %s, series %s: ignoring tuned %s params: the job's model changed since that tuning (%s); "
            "run tune again to tune it",
            job.name, series, document.get("kind") or recorded.get("kind"), changed,
        )
        return {}, job.model.kind
    # Windows and levels in rows were searched on the old grid: 24 rows of 1h are 4 hours of 10min.
    moved = _frequency_difference(report.get("frequency"), job)
    if moved is not None:
        log.warning(
            "job %s, series %s: ignoring tuned %s params: the job's %s since that tuning; run tune again to tune it",
            job.name, series, document.get("kind") or job.model.kind, moved,
        )
        return {}, job.model.kind
    kind = document.get("kind") or job.model.kind
    if kind != job.model.kind and kind not in _searched(job):
        log.warning(
            "job %s, series %s: ignoring tuned %s params: the job now uses %s; run tune again to tune it",
            job.name, series, kind, job.model.kind,
        )
        return {}, job.model.kind
    return document.get("params") or {}, kind


def _serving_tuned(job: JobConfig, series: str, registry: ModelRegistry, document: dict[str, Any]) -> dict[str, Any]:
    """``document`` (``tuned.json``, empty when there is none), unless the champion is a tuned
    model promoted after the version it names (or with no ``tuned.json`` at all) and the tune run
    that promoted it has not stored its ``tuned.json`` yet: then the champion's own kind,
    parameters and record.

    A tune run promotes its model, then writes ``tuned.json``: a train starting in between read
    the parameters the tuned model had just beaten, or, after the first tuning of the series, none,
    and built (and could promote) them beside it. Whether that tune run got past its write is
    told by its tuning record (:meth:`~pipelines.registry.ModelRegistry.tuned_written`): if it
    did, a missing ``tuned.json`` was deleted (to train with the job's model), which is said. A
    ``tuned.json`` naming no version (written before versions were kept) is taken as it is.
    """
    named = tuned_version(document)
    if named is None and document:
        return document
    try:
        champion = registry.champion(job.name, series)
    except ModelError:  # a champion that cannot be read is replaced by this training: tuned.json stands
        return document
    if champion is None or "tuning" not in champion.metadata or (named is not None and champion.version <= named):
        return document
    if registry.tuned_written(job.name, series, champion.version):
        # Read again: it may have been written since it was read, before its record.
        current = registry.tuned(job.name, series) or {}
        if not current:
            log.warning(
                "job %s, series %s: tuned.json was deleted after tuning stored the parameters of the serving version %s: "
                "training builds the job's configured model (%s); run tune to tune it again",
                job.name, series, champion.version, job.model.kind,
            )
        return current
    meta = champion.metadata
    held = f"holds the parameters of version {named}" if named is not None else "is not written yet"
    log.warning(
        "job %s, series %s: tuned.json %s, but the tuned version %s serves (its tune run has not stored its parameters): "
        "training builds the serving one's (%s %s)",
        job.name, series, held, champion.version, meta.get("model"), meta.get("tuned_params"),
    )
    return {
        "kind": meta.get("model"),
        "params": meta.get("tuned_params") or {},
        "report": {"configured_model": meta.get("configured_model"), "frequency": meta.get("frequency")},
        "version": champion.version,
    }


def series_labels(job: JobConfig, series: str, data: pd.DataFrame) -> list[Label]:
    """People's labels of ``series`` overlapping the rows of ``data`` (none without timestamps).

    A labels table that cannot be read raises :class:`SinkError` naming the job and the series:
    training on without it would learn the confirmed anomalies as normal, and a failed training
    leaves the champion serving until a retry can read them.
    """
    if not isinstance(data.index, pd.DatetimeIndex) or data.empty:
        return []
    from pipelines.labels import label_store

    start, end = (utc_stamp(moment).to_pydatetime() for moment in (data.index.min(), data.index.max()))
    try:
        return list(label_store(job).labels(job.name, series, start, end))
    except SinkError as exc:
        raise SinkError(f"job {job.name}, series {series}: cannot read people's labels of the training rows: {exc}") from exc


def leave_out_confirmed(data: pd.DataFrame, verdicts: Verdicts) -> tuple[pd.DataFrame, dict[str, Any]]:
    """``data`` with the values people confirmed as anomalies (true verdicts) made missing, and
    what was left out (recorded as ``label_masking`` in the version's metadata).

    A model learns its training rows as normal: fitted over a confirmed incident, it learned the
    incident and stayed quiet when it came again. Missing rather than dropped, as every detector
    takes missing values and the rows keep their regular times (seasons, windows): a whole-series
    label leaves its rows missing, a feature's label that feature's values only (for a
    multivariate model, as a sensor that did not report). Without a true label ``data`` itself is
    returned: the fit is exactly the one without labels.
    """
    confirmed = verdicts.confirmed & data.notna().to_numpy()
    if not confirmed.any():
        return data, {"rows": 0, "values": 0}
    left_out = {
        "rows": int(confirmed.any(axis=1).sum()),
        "values": int(confirmed.sum()),
        "by_feature": {str(name): int(count) for name, count in zip(data.columns, confirmed.sum(axis=0), strict=True) if count},
        "reason": "inside people's true anomaly labels: left out of what the model learns as normal",
    }
    return data.mask(confirmed), left_out


def _check_left_out(job: JobConfig, series: str, window: Window, before: pd.DataFrame, after: pd.DataFrame, part: str) -> None:
    """Refuse a fit that the labels left without values of a feature: the detector would say the
    feature has none, and send people to the source when the labels are the cause."""
    emptied = [str(name) for name in after.columns if after[name].isna().all() and before[name].notna().any()]
    if emptied:
        raise ModelError(
            f"job {job.name}, series {series}, training window {window}: true anomaly labels cover every value of "
            f"feature(s) {', '.join(emptied)} in {part}, so nothing normal is left to learn; widen training_window, "
            "or withdraw or narrow the labels (anomaly-pipelines labels / unlabel)"
        )


def load_champion(job: JobConfig, series: str) -> tuple[ModelVersion, BaseDetector] | None:
    """The serving version and its detector, or ``None`` when nothing was promoted yet.

    Raises :class:`ModelError` naming the version when its artifact cannot be loaded (an older
    format, corrupt or missing files); storage errors (``OSError``) pass through unchanged, as a
    retry may fix them.
    """
    registry = registry_for(job)
    champion = registry.champion(job.name, series)
    if champion is None:
        return None
    files = registry.load_files(job.name, series, champion.version)
    try:
        return champion, load_detector(champion.metadata["model"], files)
    except OSError:
        raise
    except MissingDependencyError as exc:  # not corrupt: this worker lacks a package (a retry elsewhere may load it)
        serving = f"job {job.name}, series {series}: the serving model version {champion.version} ({champion.metadata['model']})"
        raise MissingDependencyError(exc.package, exc.extra, serving) from exc
    except Exception as exc:  # a corrupt file raises whatever its parser raises (BadZipFile, JSONDecodeError...)
        raise ModelError(
            f"job {job.name}, series {series}: the serving model version {champion.version} cannot be loaded "
            f"({type(exc).__name__}: {exc}); run the job's train to register and promote a new model"
        ) from exc


def version_summary(version: ModelVersion) -> dict[str, Any]:
    """What a registered version is, from its metadata: version, training time, window and rows,
    kind, parameters, threshold, metrics, the promotion decision, and for ``model: auto`` the
    detector it chose and why (``chosen``, ``choice_reason``; both None for any other kind). What
    ``GET .../model``, ``anomaly-pipelines models`` and the dashboard's Models tab show of a version."""
    meta = version.metadata
    detector = meta.get("detector") or {}
    chosen = "chosen" in detector
    return {
        "version": version.version,
        "trained_at": meta.get("trained_at"),
        "model": meta.get("model"),
        "chosen": detector["chosen"] if chosen else None,
        "choice_reason": detector.get("reason") if chosen else None,
        "training_window": meta.get("training_window"),
        "rows": meta.get("rows"),
        "decision": meta.get("decision"),
        "params": meta.get("params") or {},
        "threshold": meta.get("threshold"),
        "metrics": meta.get("metrics") or {},
    }


def champion_models(job: JobConfig, series: str | None = None, *, keys: list[str] | None = None) -> list[dict[str, Any]]:
    """Each series' serving model from its metadata: version, training window and rows,
    parameters, threshold, metrics, why it was promoted, and for ``auto`` the detector it chose
    and why (:func:`version_summary`); ``metadata`` is the whole metadata.json. Series
    without a champion are left out. What ``GET .../model`` and ``anomaly-pipelines models`` show.
    ``keys``: those series only, as the caller listed them (a page of them), instead of every one.

    Raises :class:`ModelError` naming the series that have models when ``series`` has none, or
    when the champion of ``series`` cannot be read; listing every series, such a series is left
    out with a warning naming it and why.
    """
    registry = registry_for(job)
    keys = registry.series(job.name) if keys is None else keys
    if series is not None:
        if series not in keys:
            raise ModelError(
                f"job {job.name} has no model for series {series!r}; series with models: {', '.join(keys) or 'none'}"
                f"{'' if keys else ' (train the job first)'}"
            )
        keys = [series]
    out = []
    for key in keys:
        try:
            version = registry.champion(job.name, key)
        except ModelError as exc:
            if series is not None:
                raise
            # One damaged champion.json or metadata.json must not hide every other series' model.
            log.warning("job %s, series %s: left out of the champion models: %s", job.name, key, exc)
            continue
        if version is None:
            continue
        meta, summary = version.metadata, version_summary(version)
        if (summary["decision"] or {}).get("pending"):
            # Its run stopped after the champion pointer named it, before recording that: it serves.
            summary["decision"] = {**summary["decision"], "promoted": True}
        out.append({"series": key, **summary, "features": meta.get("features") or list(job.features), "metadata": meta})
    return out


def holdout_error(detector: BaseDetector, holdout: pd.DataFrame, history: pd.DataFrame, scale: np.ndarray) -> float:
    """Mean absolute error of the expected values on ``holdout``, in units of each feature's scale,
    over the values and expectations that are finite (NaN when none is)."""
    detection = detector.detect(holdout, history=history)
    errors = np.abs(detection.values - detection.expected) / scale
    # An infinite value (an overflowed reading, which detectors score as missing) made both models'
    # errors inf, and inf <= inf promoted any challenger, however bad.
    errors = np.where(np.isfinite(errors), errors, np.nan)
    return float(np.nanmean(errors)) if not np.isnan(errors).all() else float("nan")


def compared_rows(champion: ModelVersion, tail: pd.DataFrame) -> tuple[int, int | None, str]:
    """Which rows of ``tail`` the challenger and ``champion`` are compared on: the offset of the
    first (they run to the end of ``tail``), how many of them the champion was trained on (None:
    not known), and what to say of them in the reason.

    The champion was refitted on its whole window, so the held-back rows up to its last training
    row (``data_end`` in its metadata) are in-sample for it: scored there it looks better than
    it is, and with trainings more frequent than the tail spans (daily on a 30-day window: 5 of
    the 6 tail days) it kept fresher models out. So only the rows after ``data_end`` are
    compared, when at least :data:`MIN_COMPARED_ROWS` (or :data:`MIN_COMPARED_SHARE` of the
    tail) of them hold values. With fewer (a re-run of the same interval, a gap in the source
    since, a champion trained on later data) or a version that did not record ``data_end``, the
    whole tail is compared as before: that favours the serving model, so a worse training still
    never replaces it.
    """
    end = champion.metadata.get("data_end")
    try:
        after = np.asarray(tail.index > pd.Timestamp(end)) if end else None
    except (TypeError, ValueError):  # not a timestamp, or one the index cannot be compared with
        after = None
    if after is None:
        return 0, None, (
            f"on all {len(tail)} held-back rows (the champion's last training row is not recorded: "
            "it may have been trained on some of them)"
        )
    unseen = int(after.sum())
    # Rows left missing by resampling (a gap in the source) tell nothing: only rows with a value count.
    fresh = int((after & tail.notna().any(axis=1).to_numpy()).sum())
    minimum = max(MIN_COMPARED_ROWS, math.ceil(len(tail) * MIN_COMPARED_SHARE))
    if unseen == len(tail):
        return 0, 0, f"on all {len(tail)} held-back rows, after the champion's last training row ({end})"
    if fresh >= minimum:
        return len(tail) - unseen, 0, (
            f"on the last {unseen} of {len(tail)} held-back rows, after the champion's last training row ({end})"
        )
    return 0, len(tail) - unseen, (
        f"on all {len(tail)} held-back rows: only {fresh} with values come after the champion's last training row "
        f"({end}), fewer than {minimum}, so it is also judged on {len(tail) - unseen} rows it was trained on, which favours it"
    )


def fingerprint(frame: pd.DataFrame) -> str:
    """Identifies the exact training data (timestamps, columns and values)."""
    digest = hashlib.sha256()
    digest.update(",".join(map(str, frame.columns)).encode())
    digest.update(frame.index.asi8.tobytes() if isinstance(frame.index, pd.DatetimeIndex) else frame.index.to_numpy().tobytes())
    digest.update(np.ascontiguousarray(frame.to_numpy(dtype="float64")).tobytes())
    return digest.hexdigest()


def library_versions() -> dict[str, str]:
    import sklearn

    return {
        "anomaly-pipelines": pipelines.__version__,
        "pandas": pd.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
    }


@dataclass(frozen=True)
class TrainResult:
    series: str
    version: str
    promoted: bool
    reason: str
    rows: int
    metrics: dict[str, float]
    #: What resampling to the job's frequency did to the training rows (merged, filled, missing).
    resampling: dict[str, int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def train_series(job: JobConfig, series: str, data: pd.DataFrame, window: Window, *, run_id: str) -> TrainResult:
    """Fit, compare with the champion, register, and promote when it is no worse (or when the job
    file changed the model or threshold since the champion: :func:`model_change`).

    A detector's own error (too few rows, a parameter the data does not allow) is given the job,
    the series and the window: the detector knows none of them, and a run trains many series.
    """
    try:
        return _train_series(job, series, data, window, run_id=run_id)
    except (ModelError, ConfigError) as exc:
        if str(exc).startswith(f"job {job.name}"):
            raise
        raise type(exc)(f"job {job.name}, series {series}, training window {window}: {exc}") from exc


def _train_series(job: JobConfig, series: str, data: pd.DataFrame, window: Window, *, run_id: str) -> TrainResult:
    # Rows with a value, not rows: resampling leaves a gap in the source as missing rows, and a
    # series with two values a day apart (25 hourly rows) was trained, scored nothing on its
    # held-back rows (holdout error NaN) and was promoted as the first champion.
    valued = int(data.notna().any(axis=1).sum())
    if valued < 10:
        held = f" with a value (of {len(data)} on the job's frequency grid)" if valued < len(data) else ""
        raise ModelError(
            f"job {job.name}, series {series}: only {valued} rows{held} in training window {window}; "
            "at least 10 are needed. Widen training_window or check the source."
        )
    registry = registry_for(job)
    tuned, kind = _tuned(job, series, registry)
    given = data
    data, masking = leave_out_confirmed(data, label_verdicts(data.index, data.columns, series_labels(job, series, data)))
    split = int(len(data) * (1 - HOLDOUT_FRACTION))
    head, tail = data.iloc[:split], data.iloc[split:]
    if masking["values"]:
        _check_left_out(job, series, window, given, data, "the window")
        _check_left_out(job, series, window, given.iloc[:split], head, "the first 80% of the rows (the model compared is fitted on them)")
    scale = feature_scale(head)

    try:
        current = load_champion(job, series)
    except ModelError as exc:
        # A champion that cannot be loaded cannot score either: training must be able to replace
        # it (its error tells people to retrain), so it is treated like a champion that cannot score.
        serving = registry.champion_version(job.name, series, unreadable=True)
        log.warning("job %s, series %s: champion %s cannot be loaded: %s", job.name, series, serving, exc)
        current, unloadable = None, str(exc)
    else:
        unloadable = None
        serving = current[0].version if current is not None else None
    # A model of another frequency learned other rows: nothing of it carries over.
    warm = current[1] if current is not None and frequency_change(job, current[0]) is None else None
    challenger = detector_for(job, tuned, kind).fit(head, warm_start=warm)
    challenger_error = holdout_error(challenger, tail, head, scale)
    metrics: dict[str, float] = {"holdout_error": challenger_error}

    if unloadable is not None:
        promoted, reason = True, f"the champion cannot be loaded, so it is replaced: {unloadable}"
        metrics["champion_holdout_error"] = float("inf")
    elif current is None:
        promoted, reason = True, "no champion yet"
    else:
        champion_version, champion = current
        # Both are scored on the same rows, each given every row before them as history.
        offset, trained_on, rows = compared_rows(champion_version, tail)
        if offset:
            challenger_error = holdout_error(challenger, tail.iloc[offset:], data.iloc[: split + offset], scale)
        try:
            champion_error = holdout_error(champion, tail.iloc[offset:], data.iloc[: split + offset], scale)
        except MissingDependencyError as exc:
            raise champion_needs(job, series, champion_version, exc) from exc
        except Exception as exc:  # a champion that cannot score current data must be replaced
            log.warning("job %s, series %s: champion %s cannot score: %s", job.name, series, champion_version.version, exc)
            champion_error = float("inf")
        metrics.update(
            holdout_error=challenger_error,
            champion_holdout_error=champion_error,
            compared_rows=len(tail) - offset,
            # Whether the champion was trained on none of the compared rows.
            compared_out_of_sample=trained_on == 0,
        )
        compared = f"holdout error {challenger_error:.4g} vs champion {champion_version.version} {champion_error:.4g} {rows}"
        change = model_change(job, champion_version, kind)
        if change is not None:
            # People changed the job file: they asked for this model. Compared by forecast error,
            # kinds that forecast less well (iforest, context) would never replace the champion.
            promoted = True
            reason = f"promoted: the job's {change}, so the new model serves without a comparison ({compared})"
        else:
            # Never a worse model: promoted only when not worse; a NaN error compares False.
            promoted = challenger_error <= champion_error
            if promoted:
                verdict = "promoted (not worse)"
            elif math.isnan(challenger_error) or math.isnan(champion_error):
                # "Worse" sent people looking at the new model when the compared rows held no value.
                verdict = "kept the champion (the errors cannot be compared: no forecast of a compared row with a value)"
            else:
                verdict = "kept the champion (the new model is worse)"
            reason = f"{compared}: {verdict}"

    final = detector_for(job, tuned, kind).fit(data, warm_start=warm)
    version = register_model(
        job, series, final, data, window, run_id=run_id, kind=kind, tuned=tuned, metrics=metrics, promoted=promoted, reason=reason,
        compared_with=serving, masking=masking,
    )
    promoted, reason = version.metadata["decision"]["promoted"], version.metadata["decision"]["reason"]
    metrics = version.metadata["metrics"]
    left_out = f" ({masking['values']} values in {masking['rows']} rows left out: confirmed anomalies)" if masking["values"] else ""
    log.info("job %s, series %s: trained %s on %d rows%s; %s", job.name, series, version.version, len(data), left_out, reason)
    return TrainResult(series, version.version, promoted, reason, len(data), metrics, data.attrs.get("resampling"))


def champion_needs(job: JobConfig, series: str, champion: ModelVersion, exc: MissingDependencyError) -> MissingDependencyError:
    """The error of a champion that cannot score here for want of a package: this worker lacks it,
    the model is not broken. Taken as a champion that cannot score, it was replaced by any model
    (an ``auto`` job's, which skips the candidates it cannot run), compared with nothing."""
    return MissingDependencyError(
        exc.package, exc.extra,
        f"job {job.name}, series {series}: the serving model version {champion.version} ({champion.metadata.get('model')}), "
        "which a new model is compared with before it may replace it,",
    )


def register_model(
    job: JobConfig,
    series: str,
    final: BaseDetector,
    data: pd.DataFrame,
    window: Window,
    *,
    run_id: str,
    kind: str,
    tuned: dict[str, Any],
    metrics: dict[str, float],
    promoted: bool,
    reason: str,
    compared_with: str | None,
    extra: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    masking: dict[str, Any] | None = None,
) -> ModelVersion:
    """Register ``final`` (fitted on all of ``data``) with its metadata, and promote it if ``promoted``.

    ``compared_with`` is the champion version the decision was taken against (None: there was
    none). The promotion replaces the champion only if it is still that version, in one atomic
    step (:meth:`~pipelines.registry.ModelRegistry.promote_if_champion`). If another run (a tune
    beside a train, a CLI train beside a scheduled one, a retry beside its first attempt) promoted
    another version meanwhile, this one was never compared with the model now serving: it stays
    registered but not promoted, and its stored decision says why. Shared by training and tuning,
    so a tuned model carries the same metadata as a trained one; ``extra(decision)`` adds sections
    given the final decision (tuning adds its trials and its own copy of the decision).
    ``masking`` says which values of ``data`` people's true labels left out
    (:func:`leave_out_confirmed`); ``data`` is as fitted, with them missing.

    A version to promote is registered first (a champion must be a complete version), its decision
    ``{"promoted": False, "pending": True}`` with :data:`UNCONFIRMED` in its reason, and says
    ``promoted`` only once the champion pointer names it: a run killed before the pointer's write,
    or whose write failed, left a version shown as promoted that never served. Killed after it, the
    version serves with its decision unconfirmed; what serves is what the champion pointer names.
    """
    registry = registry_for(job)
    metrics = {**metrics, "train_anomaly_rate": final.training_anomaly_rate(data)}
    decision: dict[str, Any] = {"promoted": False, "reason": reason}
    if promoted:
        decision.update(pending=True, reason=f"{reason}; {UNCONFIRMED}")
    metadata = {
        "model": kind,
        "params": final.get_params(),
        # The job's model in force (not the tuned kind): what the next training checks for a change.
        "configured_model": configured_model(job),
        "tuned_params": tuned,
        "threshold": job.threshold.model_dump(),
        "features": list(job.features),
        # The grid the rows were on: scoring refuses rows of another (frequency_change).
        "frequency": duration_text(job.frequency),
        "trained_at": utcnow().isoformat(),
        "run_id": run_id,
        "training_window": {"start": window.start.isoformat(), "end": window.end.isoformat()},
        "data_start": data.index.min().isoformat(),
        "data_end": data.index.max().isoformat(),
        "rows": len(data),
        "resampling": {**job.resample.model_dump(), "counts": data.attrs.get("resampling")},
        "label_masking": masking or {"rows": 0, "values": 0},
        "metrics": metrics,
        "decision": decision,
        "lookback": int(final.lookback_),
        "history_after_training": final.history_after_training,
        "detector": final.summary(),
        "library_versions": library_versions(),
        "data_fingerprint": fingerprint(data),
        "warm_started": bool(getattr(final, "warm_started_", False)),
        # What predict runs measure drift and anomaly rates against (pipelines.monitoring).
        "monitoring": reference_profile(data, train_anomaly_rate=metrics["train_anomaly_rate"]),
        **(extra(decision) if extra else {}),
    }
    version = registry.register(job.name, series, final.to_files(), metadata)
    if not promoted:
        return version
    serving = registry.promote_if_champion(job.name, series, version.version, compared_with)
    if serving == version.version:
        decision = {"promoted": True, "reason": reason}
        changes = {"decision": decision, **(extra(decision) if extra else {})}
        try:
            return registry.amend(job.name, series, version.version, changes)
        except (OSError, ModelError) as exc:
            # It serves (the pointer names it, and displays take serving from the pointer): failing
            # the run now would report a promoted model as a failed training, and a tune run would
            # not store its parameters. The stored decision stays unconfirmed, which is true.
            log.warning(
                "job %s, series %s: version %s serves (the champion pointer names it), but recording its promotion in its "
                "metadata failed (%s): its decision keeps saying the promotion is not confirmed",
                job.name, series, version.version, exc,
            )
            return ModelVersion(job.name, series, version.version, {**version.metadata, **changes})
    changed = (
        f"another run promoted version {serving} while this model was compared with {compared_with or 'no champion'}, "
        f"and it was never compared with {serving}"
        if serving is not None
        else f"the champion pointer to {compared_with} was removed while this model was compared with it"
    )
    decision = {"promoted": False, "reason": f"{reason}; not promoted after all: {changed}. Run train (or tune) again to compare with it"}
    log.warning("job %s, series %s: %s", job.name, series, decision["reason"])
    return registry.amend(job.name, series, version.version, {"decision": decision, **(extra(decision) if extra else {})})
