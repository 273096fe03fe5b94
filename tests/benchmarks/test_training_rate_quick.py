"""The training-rate benchmark measures real fits and rates (its timing is not tested)."""

from __future__ import annotations

from benchmarks import training_rate
from benchmarks.train_many import series_frame


def test_a_series_is_fitted_rescored_and_served() -> None:
    result = training_rate.measure(series_frame(3, 800), 400)
    assert result["fit_s"] > 0 and result["rescore_s"] > 0
    assert 0.0 <= result["rescored"] <= 1.0 and 0.0 <= result["served"] <= 1.0
    # The rate from the fit is the model's own figure, not the rescored one.
    from pipelines.detectors.context import ContextDetector

    model = ContextDetector().fit(series_frame(3, 800).iloc[:400])
    assert result["from_fit"] == model.calibration_rate_


def test_the_quick_section_has_a_row_per_nab_series_and_the_synthetic_median() -> None:
    section = training_rate.run(quick=True)
    assert "2 synthetic series (median)" in section
    assert ("nyc_taxi.csv" in section) == (training_rate.nab_frame(training_rate.NAB_SERIES[0]) is not None)
