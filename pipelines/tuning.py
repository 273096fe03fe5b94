"""Tuning: an Optuna search over detector kinds and their parameters per series, then a
challenger/champion decision. Documented in docs/MODELS.md ("Tuning").

1. The series' training window is split into a fitted head and a held-back tail
   (:func:`prepare_holdout`). Without labels the tail gets synthetic anomalies (spikes, a level
   shift); with labels (:mod:`pipelines.labels`) the tail is scored against what people said,
   and the values they confirmed anomalous are left out of what is fitted, as in training.
2. Each trial fits one candidate (kind + parameters from
   :data:`pipelines.detectors.search_spaces.SEARCH_SPACES`, narrowed by ``tune.grid``) on the
   head and scores it on the tail (:func:`evaluate`): ``objective = F1 - 0.1 * min(error, 1)``.
3. The best trial is the challenger. It and the serving champion (refitted on the head) are
   scored by the same function on anomalies planted afresh; the challenger replaces the champion
   only when it is clearly better (by ``tune.promotion_margin`` and beyond chance over the
   plantings) there and on each earlier held-back stretch up to ``tune.stretches``, the rule
   ``model: auto`` applies to its own challengers (:func:`_decide`). It is then refitted on the
   whole window, registered, promoted, and ``tuned.json`` (kind + params) is written, so the
   next train builds the same detector (until the job file changes ``model``: the record keeps
   ``configured_model``, the job's model the search started from). Every trial and the decision are kept
   in a tuning record per run (promoted or not) and in the registered version's metadata.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import logging
import math
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipelines.config import WINDOWS_FITTED, JobConfig
from pipelines.detectors.auto import _NEEDS as _KIND_PACKAGES  # auto keeps the one list of optional packages
from pipelines.detectors.params import MODEL_PARAMS
from pipelines.detectors.search_spaces import (
    Choice,
    FloatRange,
    IntRange,
    Space,
    check_tune_settings,
    default_detectors,
    restricted_space,
)
from pipelines.detectors.selection import compare, held_back_stretches
from pipelines.detectors.synthetic import Injected, detection_f1_by_planting, mean_of_parts, plant_repeatedly
from pipelines.durations import duration_text, rows_spanned
from pipelines.errors import ConfigError, MissingDependencyError, ModelError
from pipelines.labels import label_verdicts
from pipelines.training import (
    champion_needs,
    configured_model,
    configured_params,
    detector_for,
    feature_scale,
    frequency_change,
    holdout_error,
    leave_out_confirmed,
    load_champion,
    register_model,
    registry_for,
    series_labels,
)
from pipelines.workspace import Window, utcnow

if TYPE_CHECKING:  # pragma: no cover
    import optuna

    from pipelines.detectors.base import BaseDetector

log = logging.getLogger(__name__)

#: Weight of the forecast error in the objective. F1 moves in steps of about 0.05-0.1 on a few
#: events; the error (robust units, capped at 1) can then decide only between candidates whose
#: F1 is nearly equal, which is when forecast quality is the better guide.
ERROR_WEIGHT = 0.1
#: The fitted head keeps at least this share of the window when labels pull the split earlier.
MIN_HEAD_FRACTION = 0.5
_MIN_ROWS = 10


def objective_value(f1: float, error: float) -> float:
    """One scalar to maximise: event F1, less a small penalty for the forecast error."""
    if not math.isfinite(error):
        error = 1.0
    return f1 - ERROR_WEIGHT * min(error, 1.0)


@dataclass(frozen=True)
class Holdout:
    """The data every candidate (and the champion) is judged on.

    ``head`` is fitted; ``clean`` is the held-back tail as it is (forecast error); each of
    ``plantings`` is a frame the detections are taken on with the row ranges in it that should be
    flagged: ``clean`` with planted anomalies (``tune.plantings`` draws), or ``clean`` itself
    with the true labels' rows (one).
    """

    objective: str
    reason: str
    head: pd.DataFrame
    clean: pd.DataFrame
    plantings: list[Injected]
    scale: np.ndarray
    labels: dict[str, int] = field(default_factory=dict)

    @property
    def planted(self) -> bool:
        """Whether the events were planted (else they are people's true labels)."""
        return all(planting.clean is not None for planting in self.plantings)

    def replanted(self, seed: int) -> Holdout:
        """The same rows with anomalies planted afresh from ``seed`` on (as many plantings):
        the final decision is taken on these, not on the plantings the search maximised over,
        whose best trial is partly the luckiest. Labeled events cannot be drawn again: the same."""
        if not self.planted:
            return self
        fresh = plant_repeatedly(self.clean, self.scale, seed=seed, times=len(self.plantings))
        return Holdout(self.objective, self.reason, self.head, self.clean, fresh, self.scale, self.labels)

    def earlier_stretches(self, fraction: float, count: int, seed: int) -> list[Holdout]:
        """Up to ``count`` stretches before the held-back rows (a rolling origin, as ``auto``'s:
        :func:`~pipelines.detectors.selection.held_back_stretches`), each with its own fitted head
        and ``len(plantings)`` plantings, seeded from ``seed`` on. None for labeled events: they
        lie where people put them."""
        if not self.planted:
            return []
        times = len(self.plantings)
        min_rows = math.ceil(_MIN_ROWS / min(fraction, 1 - fraction))
        stretches = []
        for number, (head, clean) in enumerate(held_back_stretches(self.head, fraction, count, min_rows)):
            scale = feature_scale(head)
            planted = plant_repeatedly(clean, scale, seed=seed + number * times, times=times)
            stretches.append(Holdout(self.objective, self.reason, head, clean, planted, scale, self.labels))
        return stretches

    def describe(self) -> dict[str, Any]:
        return {
            "kind": self.objective,
            "reason": self.reason,
            "formula": f"event F1 - {ERROR_WEIGHT} * min(forecast error, 1)",
            "head_rows": len(self.head),
            "held_back_rows": len(self.clean),
            "held_back_start": _iso(self.clean.index[0]),
            "events": len(self.plantings[0].events),
            "plantings": len(self.plantings),
            "labels": self.labels,
        }


def _iso(value: Any) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _series_labels(job: JobConfig, series: str, data: pd.DataFrame) -> list[Any]:
    return series_labels(job, series, data)


def _runs(rows: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) positions of each run of consecutive True in ``rows``."""
    edges = np.diff(np.concatenate([[0], rows.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1).tolist(), (np.flatnonzero(edges == -1) - 1).tolist(), strict=True))


def prepare_holdout(job: JobConfig, series: str, data: pd.DataFrame, labels: list[Any] | None = None) -> Holdout:
    """Split ``data`` and choose the objective: labeled when the series has labels in the window.

    Unlabeled: the last ``tune.holdout_fraction`` of rows is held back and gets planted anomalies.
    Labeled: the split moves earlier to the first row of the first true anomaly that starts after
    ``MIN_HEAD_FRACTION`` of the rows, so that labeled anomaly is scored on data the candidate did
    not fit; anomalies left inside the fitted head are counted but never scored. The true
    anomalies in the tail are the events; flags anywhere else, false-alarm labels included, are
    false positives. With only false-alarm labels in the tail, planted anomalies stand in as
    the events and the false-alarm periods stay known-normal rows.

    Where labels overlap, each row and feature takes one verdict
    (:func:`~pipelines.labels.label_verdicts`, as training does); a true anomaly is a run of
    rows with a true verdict on any feature, so labels of several features over one stretch are
    one event. The values confirmed anomalous are left out of the fitted head
    (:func:`~pipelines.training.leave_out_confirmed`), as training leaves them out: a candidate
    is not fitted to learn them as normal. An anomaly that starts in the head and runs on into the
    tail can be neither an event (its start was not held back) nor normal rows: its rows in the
    tail are left missing, so a flag there is not counted against a candidate. ``labels``: the
    series' labels when the caller read them already (else they are read here).
    """
    rows = len(data)
    split = int(rows * (1 - job.tune.holdout_fraction))
    labels = _series_labels(job, series, data) if labels is None else labels
    verdicts = label_verdicts(data.index, data.columns, labels)
    true_runs = _runs(verdicts.confirmed.any(axis=1))
    # Anomalies starting before the smallest head can never be held back: they do not move the split.
    reachable = [first for first, _ in true_runs if first >= int(rows * MIN_HEAD_FRACTION)]
    if reachable:
        split = min(split, min(reachable))
    fitted, _ = leave_out_confirmed(data, verdicts)
    head, clean = fitted.iloc[:split], data.iloc[split:]
    # Rows with a value: resampling leaves a gap in the source as missing rows, and a series with
    # a few values among them was tuned on nothing (every trial's F1 0) and promoted as the champion.
    in_head, in_tail = (int(part.notna().any(axis=1).sum()) for part in (data.iloc[:split], clean))
    if in_head < _MIN_ROWS or in_tail < _MIN_ROWS:
        sparse = " with a value" if (in_head, in_tail) != (len(head), len(clean)) else ""
        raise ModelError(
            f"job {job.name}, series {series}: {rows} rows are too few to tune (at least {_MIN_ROWS} in the fitted "
            f"head and {_MIN_ROWS} in the held-back tail, now {in_head} and {in_tail}{sparse}, held back from "
            f"{_iso(clean.index[0]) if len(clean) else 'the end'}); widen training_window or change tune.holdout_fraction"
        )
    emptied = [str(name) for name in head.columns if head[name].isna().all() and data[name].iloc[:split].notna().any()]
    if emptied:
        raise ModelError(
            f"job {job.name}, series {series}: true anomaly labels cover every value of feature(s) {', '.join(emptied)} "
            f"in the {split} rows tuning fits on (before {_iso(data.index[split])}), so nothing normal is left to learn; "
            "widen training_window, or withdraw or narrow the labels (anomaly-pipelines labels / unlabel)"
        )
    scale = feature_scale(head)
    if not labels:
        return Holdout(
            "unlabeled",
            "no labels for this series in the window: anomalies planted in the held-back tail",
            head, clean, plant_repeatedly(clean, scale, seed=job.tune.seed, times=job.tune.plantings), scale,
        )
    straddling = [(first, last) for first, last in true_runs if first < split <= last]
    if straddling:
        clean = clean.copy()
        for _, last in straddling:
            clean.iloc[: last - split + 1] = np.nan
    events = [(first - split, last - split) for first, last in true_runs if first >= split]
    counts = {
        "true": sum(1 for label in labels if label.verdict),
        "false": sum(1 for label in labels if not label.verdict),
        "true_scored": len(events),
        "true_in_fitted_part": sum(1 for first, _ in true_runs if first < split),
        # Labels that another label (more specific, or written later) overrules on every row they cover.
        "overruled": verdicts.overruled,
    }
    if events:
        reason = f"{counts['true_scored']} true anomaly label(s) in the held-back rows are the events to find"
        return Holdout("labeled", reason, head, clean, [Injected(clean, events)], scale, counts)
    planted = plant_repeatedly(clean, scale, seed=job.tune.seed, times=job.tune.plantings)
    reason = "labels exist but no true anomaly falls in the held-back rows: planted anomalies are the events"
    return Holdout("labeled", reason, head, clean, planted, scale, counts)


def evaluate(detector: BaseDetector, holdout: Holdout) -> dict[str, float]:
    """Score a detector fitted on ``holdout.head``: event F1, precision, recall, forecast error, objective."""
    # Planted events one at a time, as auto ranks kinds: scored together, events ~25 rows apart
    # judged a detector's reaction to the event before (context's rest hid the next three, and
    # the search then preferred the shortest rest and other kinds). Labeled events stay together.
    by_planting = detection_f1_by_planting(
        lambda frame: np.asarray(detector.detect(frame, history=holdout.head).is_anomaly).any(axis=1), holdout.plantings
    )
    parts = mean_of_parts(by_planting)
    error = holdout_error(detector, holdout.clean, holdout.head, holdout.scale)
    return {
        **{name: round(value, 4) for name, value in parts.items()},
        "holdout_error": round(error, 6) if math.isfinite(error) else None,
        "objective": round(objective_value(parts["f1"], error), 6),
        # The paired test of the challenger/champion decision compares these, planting by planting.
        "objective_by_planting": [round(objective_value(part["f1"], error), 6) for part in by_planting],
    }


def _spaces(job: JobConfig) -> dict[str, dict[str, Space]]:
    kinds = job.tune.detectors or default_detectors(job.model.kind, job.model.params)
    try:
        check_tune_settings(kinds, job.tune.grid)
    except ValueError as exc:
        raise ConfigError(f"job {job.name}: {exc}") from None
    usable = {}
    for kind in kinds:
        package = _KIND_PACKAGES.get(kind)
        if package and importlib.util.find_spec(package) is None:
            log.warning("job %s: %s is not tuned: the %s package is not installed", job.name, kind, package)
            continue
        usable[kind] = restricted_space(kind, job.tune.grid)
    if not usable:
        raise ConfigError(f"job {job.name}: none of tune.detectors {kinds} can run here (packages missing)")
    return usable


def _learnable(job: JobConfig, spaces: dict[str, dict[str, Space]], head_rows: int) -> tuple[dict[str, dict[str, Space]], list[str]]:
    """``spaces`` without what no trial fitted on ``head_rows`` can learn, and why each part was
    left out: a season spanning fewer than two rows of the job's frequency (refused at fit) or more
    than half the head (a profile needs two seasons: such a trial is skipped), and windows longer
    than the head holds as many times as the kind fits (refused at fit). Proposed anyway, they were
    a fifth to a quarter of a short series' trials, each skipped. What the job's ``tune.grid``
    names stays: the skipped trials say why."""
    narrowed, left_out = {}, []
    for kind, space in spaces.items():
        space = dict(space)
        season = space.get("season")
        if isinstance(season, Choice) and "season" not in job.tune.grid:
            kept = []
            for value in season.values:
                rows = None if value is None else rows_spanned(value, job.frequency)
                if rows is not None and rows < 2:
                    left_out.append(f"{kind} season {value}: spans {rows} row of {duration_text(job.frequency)}, a season needs two")
                elif rows is not None and 2 * rows > head_rows:
                    left_out.append(f"{kind} season {value}: a profile needs two seasons ({2 * rows} rows), a trial fits on {head_rows}")
                else:
                    kept.append(value)
            space["season"] = Choice(tuple(kept))
        window, times = space.get("window"), WINDOWS_FITTED.get(kind)
        if isinstance(window, IntRange) and times and "window" not in job.tune.grid:
            longest = head_rows // times
            if window.low <= longest < window.high:
                left_out.append(f"{kind} window above {longest}: it fits on {times} windows, a trial on {head_rows} rows")
                space["window"] = IntRange(window.low, longest, log=window.log)
        narrowed[kind] = space
    return narrowed, left_out


def _defaults(job: JobConfig, kind: str, space: dict[str, Space]) -> dict[str, Any] | None:
    """The configured (or the detector's default) values of the searched parameters, when all
    lie in the space: that trial runs first, so tuning never ends below the starting point."""
    base = {**MODEL_PARAMS[kind]().model_dump(), **configured_params(job, kind)}
    values = {name: base.get(name) for name in space}
    return values if all(space[name].contains(value) for name, value in values.items()) else None


def _grid(space: dict[str, Space]) -> list[dict[str, Any]] | None:
    """Every combination when the space is finite (all choices), else None."""
    if not all(isinstance(s, Choice) for s in space.values()):
        return None
    names = sorted(space)
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(space[n].values for n in names))]


def _suggest(trial: optuna.Trial, kind: str, space: dict[str, Space]) -> dict[str, Any]:
    # Names carry the kind: Optuna needs one distribution per name, and level_shift's `drift`
    # is not mset's.
    params: dict[str, Any] = {}
    for name, dist in space.items():
        key = f"{kind}.{name}"
        if isinstance(dist, Choice):
            params[name] = trial.suggest_categorical(key, list(dist.values))
        elif isinstance(dist, IntRange):
            params[name] = trial.suggest_int(key, int(dist.low), int(dist.high), log=dist.log)
        elif isinstance(dist, FloatRange):
            params[name] = trial.suggest_float(key, dist.low, dist.high, log=dist.log)
    return params


def _enqueued(kind: str, params: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind, **{f"{kind}.{name}": value for name, value in params.items()}}


def _plan(job: JobConfig, spaces: dict[str, dict[str, Space]]) -> tuple[list[dict[str, Any]], int]:
    """Trials queued before sampling, and how many trials to run in all."""
    grids = {kind: _grid(space) for kind, space in spaces.items()}
    if all(g is not None for g in grids.values()):
        every = [_enqueued(kind, params) for kind, grid in grids.items() for params in grid or []]
        if len(every) <= job.tune.trials:  # a small finite space: try each point once, no sampling
            return every, len(every)
    # The job's own kind first: on ties the earlier trial wins, so the configured model stays.
    order = sorted(spaces, key=lambda kind: kind != job.model.kind)
    queued = [_enqueued(kind, d) for kind in order if (d := _defaults(job, kind, spaces[kind])) is not None]
    return queued[: job.tune.trials], job.tune.trials


def _search(job: JobConfig, series: str, holdout: Holdout, spaces: dict[str, dict[str, Space]]) -> list[dict[str, Any]]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # our own per-trial log line says more
    queued, total = _plan(job, spaces)
    sampler = optuna.samplers.TPESampler(seed=job.tune.seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    for params in queued:
        study.enqueue_trial(params, skip_if_exists=True)
    kinds = list(spaces)
    trials: list[dict[str, Any]] = []
    seen: dict[str, dict[str, Any]] = {}
    started = time.perf_counter()

    def objective(trial: optuna.Trial) -> float:
        kind = trial.suggest_categorical("kind", kinds)
        params = _suggest(trial, kind, spaces[kind])
        key = json.dumps([kind, params], sort_keys=True, default=str)
        begun = time.perf_counter()
        record: dict[str, Any] = {"number": trial.number, "kind": kind, "params": params}
        if key in seen:  # TPE may propose a point again: same data, same seed, same score
            record.update({**seen[key]["scores"], "repeat_of": seen[key]["number"]})
        else:
            try:
                detector = detector_for(job, params, kind).fit(holdout.head)
                fallback = getattr(detector, "season_fallback_", None)
                if fallback and "season" in params:
                    # The searched season did not fit twice in the head, so the detector fitted
                    # without one: scored, the trial judged no season under the season's name,
                    # and a winner became a seasonal model (refitted on the whole window) that no
                    # trial scored. The job's own season falls back in training too: kept.
                    record["skipped"] = (
                        f"season {params['season']} needs two seasons of rows, more than the {len(holdout.head)} a trial fits "
                        "on: it would fit without a season (widen training_window to tune it)"
                    )
                else:
                    record["scores"] = evaluate(detector, holdout)
            except (ModelError, ConfigError) as exc:
                record["skipped"] = str(exc)
            except Exception as exc:  # one candidate's numerical failure (LinAlgError...) must not end the study
                log.warning("job %s, series %s: trial %d %s %s failed", job.name, series, trial.number + 1, kind, params, exc_info=True)
                record["skipped"] = f"failed: {type(exc).__name__}: {exc}"
            if "scores" in record:
                seen[key] = {"number": trial.number, "scores": record["scores"]}
                record.update(record.pop("scores"))
        record["seconds"] = round(time.perf_counter() - begun, 3)
        trials.append(record)
        log.info(
            "job %s, series %s: trial %d/%d %s %s -> %s, %.1fs elapsed",
            job.name, series, trial.number + 1, total, kind, params,
            f"objective {record['objective']:.4f} (F1 {record['f1']:.2f})" if "objective" in record else f"skipped: {record['skipped']}",
            time.perf_counter() - started,
        )
        if "skipped" in record:
            raise optuna.TrialPruned(record["skipped"])
        return float(record["objective"])

    study.optimize(objective, n_trials=total, timeout=job.tune.timeout.total_seconds())
    return trials


def _decide(job: JobConfig, series: str, best: dict[str, Any], holdout: Holdout) -> dict[str, Any]:
    """Whether the challenger (``best``) replaces the serving champion: the rule ``auto`` applies to
    its challengers (:mod:`pipelines.detectors.selection`). The challenger must be clearly better,
    by more than ``tune.promotion_margin`` and beyond chance over the plantings, on anomalies
    planted afresh (seeds after the search's: the best of many trials on the search's plantings is
    partly the luckiest) in the held-back rows, and then on each of the earlier stretches up to
    ``tune.stretches``. One search on one stretch of a few hundred rows is a weak judge: on NAB
    (docs/BENCHMARKS.md, "Tuning on NAB") a single comparison promoted challengers that lost
    to the untuned model on the rows scored next. With people's labels there is one set of events
    and no test: more than the margin on the held-back rows decides.

    The champion is judged as the trials are, its kind and parameters fitted afresh on each
    stretch's head. As it serves, it was fitted on the held-back rows too, so it would be judged on
    rows it learned: a memory (``context``) or a forecaster has seen their clean values, and an
    ``auto`` model has chosen its kind with them. A stretch whose head is too short to refit it as
    it serves (fewer rows than its window needs, or than two of its seasons) cannot judge it: the
    champion is kept, as when the challenger cannot fit."""
    from sklearn.base import clone

    margin = job.tune.promotion_margin
    decision: dict[str, Any] = {"margin": margin, "challenger": {"kind": best["kind"], "params": best["params"], **_scores(best)}}
    try:
        current = load_champion(job, series)
    except ModelError as exc:  # a champion that cannot be loaded cannot serve: it must be replaceable
        serving = registry_for(job).champion_version(job.name, series, unreadable=True)
        log.warning("job %s, series %s: champion %s cannot be loaded: %s", job.name, series, serving, exc)
        return {
            **decision, "promoted": True, "reason": f"the champion cannot be loaded, so it is replaced: {exc}",
            "planted_afresh": False, "stretches": [], "champion": {"version": serving, "error": str(exc)},
        }
    if current is None:
        return {**decision, "promoted": True, "reason": "no champion yet", "planted_afresh": False, "stretches": [], "champion": None}
    version, champion = current
    champion_kind = version.metadata.get("model")
    trained_rows = version.metadata.get("rows") or 0
    moved = frequency_change(job, version)
    if moved is not None:
        # Scoring refuses a model of another grid: kept, it would leave nothing serving.
        return {
            **decision, "promoted": True,
            "reason": f"the job's {moved} since champion {version.version} ({champion_kind}) was trained: it cannot score "
            "rows of the new frequency, so it is replaced without a comparison",
            "planted_afresh": False, "stretches": [], "champion": {"version": version.version, "kind": champion_kind},
        }
    first = holdout.replanted(job.tune.seed + len(holdout.plantings))
    afresh = first is not holdout
    earlier = first.earlier_stretches(
        job.tune.holdout_fraction, job.tune.stretches - 1, seed=job.tune.seed + 2 * len(holdout.plantings)
    )
    stretches: list[dict[str, Any]] = []
    for number, stretch in enumerate([first, *earlier], start=1):
        entry: dict[str, Any] = {"stretch": number, "held_back_rows": len(stretch.clean), "held_back_start": _iso(stretch.clean.index[0])}
        stretches.append(entry)
        try:
            entry["challenger"] = evaluate(detector_for(job, best["params"], best["kind"]).fit(stretch.head), stretch)
        except Exception as exc:  # it cannot fit here (a numerical failure included): nothing shows it is better
            entry.update(challenger_error=str(exc), clearly_better=False, verdict=f"the challenger cannot fit here: {exc}")
            break
        try:
            refitted = clone(champion).fit(stretch.head)
            # Fitted without the season it serves with, it would be judged as another, weaker model.
            fallback = None if getattr(champion, "season_fallback_", None) else getattr(refitted, "season_fallback_", None)
            if fallback is None:
                entry["champion"] = evaluate(refitted, stretch)
        except MissingDependencyError as exc:  # this worker lacks a package: the champion is not broken
            raise champion_needs(job, series, version, exc) from exc
        except Exception as exc:
            if not (isinstance(exc, ModelError) and len(stretch.head) < trained_rows):
                # A champion that cannot score current data must be replaceable.
                log.warning(
                    "job %s, series %s: champion %s cannot score held-back stretch %d: %s", job.name, series, version.version, number, exc
                )
                entry.update(champion_error=str(exc), clearly_better=True, verdict=f"the champion cannot fit or score here: {exc}")
                continue
            # It serves, fitted on more rows: too few here is this comparison's limit, not a broken model, and
            # taken as one it let any challenger (the worst of the space) replace it unjudged.
            fallback = str(exc)
        if fallback is not None:
            entry.update(champion_error=fallback, clearly_better=False, verdict=_unjudged(job, number, stretch, fallback))
            break
        comparison = compare(entry["challenger"]["objective_by_planting"], entry["champion"]["objective_by_planting"], margin)
        entry.update(
            gain=round(comparison.gain, 6), p_value=comparison.p_value, clearly_better=comparison.clearly_better, verdict=comparison.describe()
        )
        if not comparison.clearly_better:
            break
    promoted = all(entry["clearly_better"] for entry in stretches)
    events = "anomalies planted afresh" if afresh else "people's labeled anomalies"
    total, decided = 1 + len(earlier), stretches[-1]
    if promoted:
        verdicts = "; ".join(f"stretch {e['stretch']}: {_versus(e)}" for e in stretches)
        short = f" (of {job.tune.stretches} asked: the rows before are too few)" if afresh and total < job.tune.stretches else ""
        reason = (
            f"challenger {best['kind']} clearly better than champion {version.version} ({champion_kind}) on each of "
            f"{total} held-back stretch(es){short}, {events}: {verdicts}: promoted"
        )
    else:
        on = f"held-back stretch {decided['stretch']} of {total}" if total > 1 else "the held-back rows"
        reason = (
            f"kept the champion {version.version} ({champion_kind}): on {on}, {events}, "
            f"challenger {best['kind']} {_versus(decided)}"
        )
    first_entry = stretches[0]
    return {
        **decision,
        "promoted": promoted,
        "reason": reason,
        "planted_afresh": afresh,
        "stretches": stretches,
        "challenger_on_decision": first_entry.get("challenger"),
        "champion": {"version": version.version, "kind": champion_kind, **(first_entry.get("champion") or {"objective": float("-inf")})},
    }


def _unjudged(job: JobConfig, number: int, stretch: Holdout, why: str) -> str:
    remedy = (
        f"lower tune.holdout_fraction ({job.tune.holdout_fraction:g})" if number == 1
        else f"set tune.stretches to {number - 1} to compare on the later stretches only"
    )
    return (
        f"the champion cannot be refitted as it serves on the {len(stretch.head)} rows before held-back stretch {number} "
        f"({why}), so nothing shows the challenger is better there: widen training_window, or {remedy}"
    )


def _versus(entry: dict[str, Any]) -> str:
    if "challenger" not in entry or "champion" not in entry:
        return entry["verdict"]
    return f"{entry['challenger']['objective']:.4f} vs {entry['champion']['objective']:.4f}, {entry['verdict']}"


def _default_window(job: JobConfig, data: pd.DataFrame) -> Window:
    end = data.index.max()
    return Window(data.index.min().to_pydatetime(), (end + pd.Timedelta(job.frequency)).to_pydatetime())


def tune_series(
    job: JobConfig, series: str, data: pd.DataFrame, window: Window | None = None, *, run_id: str = "tune"
) -> dict[str, Any]:
    """Search, decide, record; register and promote the challenger only when it wins."""
    started = time.perf_counter()
    spaces = _spaces(job)
    labels = _series_labels(job, series, data)
    holdout = prepare_holdout(job, series, data, labels)
    spaces, left_out = _learnable(job, spaces, len(holdout.head))
    if left_out:
        log.info("job %s, series %s: not searched: %s", job.name, series, "; ".join(left_out))
    # The model registered is fitted on the whole window with people's confirmed anomalies left
    # out, as the trials' heads were and as train fits it.
    fitted, masking = leave_out_confirmed(data, label_verdicts(data.index, data.columns, labels))
    trials = _search(job, series, holdout, spaces)
    scored = [t for t in trials if "objective" in t]
    if not scored:
        reasons = "; ".join(f"{t['kind']}: {t['skipped']}" for t in trials) or f"none ran within tune.timeout {job.tune.timeout}"
        raise ModelError(f"job {job.name}, series {series}: no tuning trial could fit this series ({reasons})")
    best = max(scored, key=lambda t: t["objective"])  # max keeps the first of equals: defaults run first
    default = _default_trial(job, spaces, scored)

    decision = _decide(job, series, best, holdout)
    promoted, reason = decision["promoted"], decision["reason"]
    record: dict[str, Any] = {
        "job": job.name,
        "series": series,
        "run_id": run_id,
        "tuned_at": utcnow().isoformat(),
        "rows": len(data),
        # The job's model the search started from: train ignores tuned.json once the job file changes it.
        "configured_model": configured_model(job),
        # The grid it was tuned on: train ignores tuned.json once the job file changes it.
        "frequency": duration_text(job.frequency),
        "objective": holdout.describe(),
        "budget": {"trials": job.tune.trials, "timeout_seconds": job.tune.timeout.total_seconds()},
        "searched": {kind: sorted(space) for kind, space in spaces.items()},
        "not_searched": left_out,
        "trials": trials,
        "default": None if default is None else _scores(default),
        "decision": decision,
        "seconds": round(time.perf_counter() - started, 3),
    }
    registry = registry_for(job)
    version = None

    def tuning_section(final: dict[str, Any]) -> dict[str, Any]:
        # The version's copy of the decision says what became of it, as its own decision does:
        # a promotion that another run's overtook registers the version unpromoted.
        agreed = {**decision, "promoted": final["promoted"], "reason": final["reason"].removeprefix("tuning: ")}
        return {"tuning": {**{k: record[k] for k in ("objective", "budget", "trials")}, "decision": agreed}}

    if promoted:
        try:
            final = detector_for(job, best["params"], best["kind"]).fit(fitted)
        except Exception as exc:  # it fitted on every head, not always on the whole window (a numerical failure)
            serving = f" and champion {decision['champion']['version']} keeps serving" if decision["champion"] else ""
            # Raised bare, it named no job, series or trial, lost the run's trials, and stopped the other series.
            failure = ModelError(
                f"job {job.name}, series {series}: the tuned challenger (trial {best['number'] + 1}: {best['kind']} {best['params']}) "
                f"cannot be fitted on the whole window ({type(exc).__name__}: {exc}); nothing was promoted{serving}; leave these "
                "parameters out with tune.grid, or change tune.seed to search others"
            )
            decision.update(promoted=False, reason=f"{reason}; not promoted after all: {failure}")
            record["seconds"] = round(time.perf_counter() - started, 3)
            registry.record_tuning(job.name, series, record)
            raise failure from exc
        registered = register_model(
            job, series, final, fitted, window or _default_window(job, data),
            run_id=run_id, kind=best["kind"], tuned=best["params"],
            metrics={"tuning_objective": best["objective"]}, promoted=True, reason=f"tuning: {reason}",
            compared_with=(decision["champion"] or {}).get("version"), extra=tuning_section, masking=masking,
        )
        version = registered.version
        decision["version"] = version
        record["seconds"] = round(time.perf_counter() - started, 3)
        if registered.metadata["decision"]["promoted"]:
            registry.write_tuned_params(job.name, series, best["params"], record, kind=best["kind"], version=version)
        else:  # another run promoted a model while this one tuned: it was never compared with that one
            promoted = decision["promoted"] = False
            reason = decision["reason"] = registered.metadata["decision"]["reason"].removeprefix("tuning: ")
    record_name = registry.record_tuning(job.name, series, record)
    log.info(
        "job %s, series %s: %d trials (%s objective) in %.1fs; best %s %s objective %.4f; %s",
        job.name, series, len(trials), holdout.objective, record["seconds"], best["kind"], best["params"],
        best["objective"], reason,
    )
    return {
        "series": series,
        "objective_kind": holdout.objective,
        "kind": best["kind"],
        "params": best["params"],
        "objective": best["objective"],
        "f1": best["f1"],
        "default_objective": None if default is None else default["objective"],
        "champion_objective": (decision["champion"] or {}).get("objective"),
        "challenger_decision_objective": (decision.get("challenger_on_decision") or {}).get("objective"),
        "promoted": promoted,
        "version": version,
        "reason": reason,
        # Each stretch compared, in short (the record has both sides' scores).
        "stretches": [{k: e.get(k) for k in ("stretch", "gain", "p_value", "clearly_better")} for e in decision["stretches"]],
        "trials": len(trials),
        "record": record_name,
        "seconds": record["seconds"],
    }


def _default_trial(job: JobConfig, spaces: dict[str, dict[str, Space]], scored: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The baseline to beat: the trial of the configured model; for ``auto``, the best trial
    with default params (the kind auto's own choice would settle on); None if none ran."""
    kinds = list(spaces) if job.model.kind == "auto" else [job.model.kind] if job.model.kind in spaces else []
    baseline = [t for t in scored if t["kind"] in kinds and t["params"] == _defaults(job, t["kind"], spaces[t["kind"]])]
    return max(baseline, key=lambda t: t["objective"], default=None)


def _scores(trial: dict[str, Any]) -> dict[str, Any]:
    return {k: trial[k] for k in ("f1", "precision", "recall", "holdout_error", "objective") if k in trial}


def summarize_record(record: dict[str, Any]) -> dict[str, Any]:
    """One tuning record in short, for people (the API's ``GET .../tuning``): when, on what, the
    best trial, and the decision with each held-back stretch's comparison. Records written before
    stretches were compared have none."""
    decision = record.get("decision") or {}
    best = decision.get("challenger") or {}
    stretches = [
        {
            **{k: entry.get(k) for k in ("stretch", "held_back_rows", "held_back_start")},
            "challenger_objective": (entry.get("challenger") or {}).get("objective"),
            "champion_objective": (entry.get("champion") or {}).get("objective"),
            **{k: entry.get(k) for k in ("gain", "p_value", "clearly_better", "verdict")},
        }
        for entry in decision.get("stretches") or []
    ]
    return {
        "tuned_at": record.get("tuned_at"),
        "run_id": record.get("run_id"),
        "rows": record.get("rows"),
        "objective": (record.get("objective") or {}).get("kind"),
        "objective_reason": (record.get("objective") or {}).get("reason"),
        "trials": len(record.get("trials") or []),
        "best": {k: best.get(k) for k in ("kind", "params", "objective", "f1")},
        "promoted": bool(decision.get("promoted")),
        "reason": decision.get("reason"),
        "version": decision.get("version"),
        "stretches": stretches,
        "seconds": record.get("seconds"),
    }


def tuning_runs(job: JobConfig, series: str | None = None, limit: int = 10) -> list[dict[str, Any]]:
    """Each series' recorded tune runs in short (:func:`summarize_record`), newest first, at most
    ``limit`` per series: ``[{"series", "runs"}]``; series never tuned are left out. What the API's
    ``GET .../tuning``, the dashboard and ``anomaly-pipelines tuning`` show."""
    registry = registry_for(job)
    out = []
    for key in registry.series(job.name) if series is None else [series]:
        records = registry.tuning_history(job.name, key, newest=limit)[::-1]
        if records:
            out.append({"series": key, "runs": [summarize_record(record) for record in records]})
    return out
