"""The many-series training benchmark trains and registers real models (its timing is not tested)."""

from __future__ import annotations

import numpy as np

from benchmarks import train_many
from pipelines.registry import ModelRegistry


def test_each_series_is_trained_and_registered_as_a_mapped_task_would(tmp_path, monkeypatch) -> None:
    # The worker function points the library at its own home; monkeypatch restores the variable.
    monkeypatch.setenv("ANOMALY_PIPELINES_HOME", str(tmp_path))
    seconds = train_many._train_one(("seasonal_mad", 3, 400, str(tmp_path)))
    assert seconds > 0
    champion = ModelRegistry(str(tmp_path / "models")).champion("train_many", "sensor=3")
    assert champion is not None and champion.metadata["rows"] == 400


def test_series_differ_but_are_reproducible() -> None:
    a, b = train_many.series_frame(1, 100), train_many.series_frame(2, 100)
    assert not np.allclose(a["value"], b["value"])
    np.testing.assert_array_equal(a["value"], train_many.series_frame(1, 100)["value"])
