"""Grid search of a detector's parameters per series, without labels.

Objective: detectors are fitted on the head of the training window; the held-back tail gets
synthetic spikes injected at seeded positions; a candidate scores the F1 of flagging exactly
those rows, with the normalised forecast error breaking ties. The chosen parameters are written
to the registry, where the next training picks them up. (A real search over detectors and
labeled objectives is its own issue; this keeps the contract: tune writes, train uses.)
"""

from __future__ import annotations

import itertools
import logging
from typing import Any

import numpy as np
import pandas as pd

from pipelines.config import JobConfig
from pipelines.errors import ModelError
from pipelines.training import detector_for, feature_scale, holdout_error, registry_for
from pipelines.workspace import utcnow

log = logging.getLogger(__name__)

DEFAULT_GRIDS: dict[str, dict[str, list[Any]]] = {
    "iforest": {"window": [12, 24, 48], "n_estimators": [100, 200]},
    "seasonal_mad": {"season": ["1d", "1w", None], "level_window": [6, 24, 72]},
}
SPIKE_SIZE = 6.0  # in robust standard deviations: clearly anomalous, yet not trivial for every model


def inject_spikes(frame: pd.DataFrame, scale: np.ndarray, *, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """A copy of ``frame`` with spikes on about 2% of rows; returns it and the spiked row mask."""
    rng = np.random.default_rng(seed)
    count = max(3, len(frame) // 50)
    rows = rng.choice(np.arange(1, len(frame)), size=min(count, len(frame) - 1), replace=False)
    columns = rng.integers(0, frame.shape[1], size=len(rows))
    signs = rng.choice([-1.0, 1.0], size=len(rows))
    values = frame.to_numpy(dtype="float64", copy=True)
    values[rows, columns] += signs * SPIKE_SIZE * scale[columns]
    mask = np.zeros(len(frame), dtype=bool)
    mask[rows] = True
    return pd.DataFrame(values, index=frame.index, columns=frame.columns), mask


def _f1(flagged: np.ndarray, truth: np.ndarray) -> float:
    tp = int((flagged & truth).sum())
    if tp == 0:
        return 0.0
    precision, recall = tp / flagged.sum(), tp / truth.sum()
    return float(2 * precision * recall / (precision + recall))


def tune_series(job: JobConfig, series: str, data: pd.DataFrame) -> dict[str, Any]:
    """Try every combination of the grid; write and return the best parameters with all trials."""
    grid = job.tune.grid or DEFAULT_GRIDS.get(job.model.kind, {})
    split = int(len(data) * (1 - job.tune.holdout_fraction))
    head, tail = data.iloc[:split], data.iloc[split:]
    if len(head) < 10 or len(tail) < 10:
        raise ModelError(
            f"job {job.name}, series {series}: {len(data)} rows are too few to tune "
            "(at least 10 in the head and 10 in the held-back tail); widen training_window"
        )
    scale = feature_scale(head)
    spiked, truth = inject_spikes(tail, scale)
    names = sorted(grid)
    trials = []
    for combination in itertools.product(*(grid[name] for name in names)):
        params = dict(zip(names, combination, strict=True))
        detector = detector_for(job, params).fit(head)
        flagged = detector.detect(spiked, history=head).is_anomaly.any(axis=1)
        trials.append(
            {
                "params": params,
                "f1": _f1(flagged, truth),
                "holdout_error": holdout_error(detector, tail, head, scale),
            }
        )
    best = max(trials, key=lambda t: (t["f1"], -t["holdout_error"]))
    report = {
        "tuned_at": utcnow().isoformat(),
        "objective": "F1 on injected spikes in the held-back tail; ties by normalised forecast error",
        "rows": len(data),
        "trials": trials,
        "best": best,
    }
    registry_for(job).write_tuned_params(job.name, series, best["params"], report)
    log.info("job %s, series %s: tuned %d trials, best %s (F1 %.3f)", job.name, series, len(trials), best["params"], best["f1"])
    return {"series": series, "params": best["params"], "f1": best["f1"], "trials": len(trials)}
