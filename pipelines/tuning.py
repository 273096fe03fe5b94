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
from pipelines.detectors.synthetic import inject_spikes
from pipelines.errors import ModelError
from pipelines.training import detector_for, feature_scale, holdout_error, registry_for
from pipelines.workspace import utcnow

log = logging.getLogger(__name__)

DEFAULT_GRIDS: dict[str, dict[str, list[Any]]] = {
    "iforest": {"window": [12, 24, 48], "n_estimators": [100, 200]},
    "seasonal_mad": {"season": ["1d", "1w", None], "level_window": [6, 24, 72]},
}
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
    planted = inject_spikes(tail, scale)
    spiked, truth = planted.frame, planted.rows
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
