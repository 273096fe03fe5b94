from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest

from pipelines import schema
from pipelines.series import parse_series_key, series_key

MakeFrame = Callable[..., pd.DataFrame]


@pytest.fixture
def make_frame() -> MakeFrame:
    """A valid output frame: features x and y of two series every ``freq`` in [start, end)."""

    def make(job: str, start: str, end: str, *, run: str = "r1", dimensions: tuple[str, ...] = (), freq: str = "6h"):
        times = pd.date_range(pd.Timestamp(start, tz="UTC"), pd.Timestamp(end, tz="UTC"), freq=freq, inclusive="left")
        keys = [series_key(dimensions, [value] * len(dimensions)) for value in ("a", "b")] if dimensions else ["all"]
        rows = [
            {
                "job": job,
                "series": key,
                "timestamp": ts,
                "feature": feature,
                "value": float(i),
                "expected": 1.0,
                "lower": None,
                "upper": 2.0,
                "score": 0.5,
                "feature_score": 0.25,
                "is_anomaly": i % 3 == 0,
                "model": "iforest",
                "model_version": "v1",
                "run_id": run,
                "interval_start": pd.Timestamp(start, tz="UTC"),
                "interval_end": pd.Timestamp(end, tz="UTC"),
                "scored_at": pd.Timestamp("2024-06-01", tz="UTC"),
                **parse_series_key(key, dimensions),
            }
            for i, (key, ts, feature) in enumerate((k, t, f) for k in keys for t in times for f in ("x", "y"))
        ]
        return schema.conform(pd.DataFrame(rows), list(dimensions))

    return make

