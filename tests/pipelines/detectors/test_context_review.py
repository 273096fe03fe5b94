from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from pipelines.detectors.context import ContextDetector
from pipelines.errors import ConfigError


@pytest.fixture
def series(split_series: Callable) -> tuple[pd.DataFrame, pd.DataFrame]:
    return split_series(seed=7)


@pytest.mark.parametrize("value_range", [(-1e308, 1e308), (0.0, 1e155)])
def test_a_value_range_beyond_measurable_values_is_refused_by_name(series, value_range) -> None:
    # [-1e308, 1e308] spans more than float64 holds: every level was NaN and the fit crashed with
    # "cannot convert float NaN to integer".
    with pytest.raises(ConfigError, match=r"parameter 'value_range': .*bounds must lie within \+-1.34e\+154"):
        ContextDetector(value_range=value_range).fit(series[0])


def test_a_rest_passes_while_values_are_missing(series) -> None:
    train, test = series
    model = ContextDetector().fit(train)  # a 12-hour rest: 12 hourly rows
    assert model.rest_rows_ == 12
    test = test.copy()
    test.iloc[20, 0] += 12.0  # reported; a rest starts
    test.iloc[24:69, 0] = np.nan  # the sensor is silent for two days
    test.iloc[70, 0] += 12.0  # a new event, long after the rest
    flagged = np.flatnonzero(model.detect(test, history=train).is_anomaly[:, 0]).tolist()
    assert flagged[:1] == [20] and 70 in flagged


def test_a_history_cut_to_the_lookback_is_warned_of(series, caplog) -> None:
    train, test = series
    model = ContextDetector(rest=12).fit(train)
    # Scoring 10,000 rows takes about 15 s; a shorter lookback shows the same cut.
    model.lookback_ = 48

    def warnings_of(rows: slice, history_rows: int) -> list[str]:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="pipelines.detectors.context"):
            model.detect(test.iloc[rows], history=pd.concat([train, test.iloc[:history_rows]]))
        return [r.getMessage() for r in caplog.records if r.name == "pipelines.detectors.context" and r.levelno >= logging.WARNING]

    assert not warnings_of(slice(40, 50), 40)  # every row since training is in the history
    assert warnings_of(slice(60, 70), 60) == [
        "ContextDetector: the history after the last training row (2024-01-21 23:00:00+00:00) fills the 48 rows it "
        "reads, so rows before 2024-01-22 12:00:00+00:00 may be missing from it: the memory goes on without them and "
        "the scores depend on how the rows are split into runs; retrain at least every 48 rows"
    ]


def test_a_warm_start_with_a_value_range_continues_a_model_read_from_its_files(series) -> None:
    # JSON gives the range back as a list: against the tuple a job's detector was made with, the
    # parameters differed and every warm start from the served (stored) model was cold.
    train, test = series
    frame = pd.concat([train, test])
    champion = ContextDetector(value_range=(0.0, 40.0), warm_start=True, rest=12).fit(frame.iloc[:300])
    served = ContextDetector.from_files(champion.to_files())
    retrained = ContextDetector(value_range=(0.0, 40.0), warm_start=True, rest=12).fit(frame.iloc[100:500], warm_start=served)
    assert retrained.warm_started_
    from_memory = ContextDetector(value_range=(0.0, 40.0), warm_start=True, rest=12).fit(frame.iloc[100:500], warm_start=champion)
    later, before = frame.iloc[500:], frame.iloc[:500]
    np.testing.assert_array_equal(retrained.detect(later, history=before).score, from_memory.detect(later, history=before).score)


def test_a_value_range_beyond_measurable_values_is_refused_with_the_job_file() -> None:
    from pipelines.config import parse_job
    from tests.pipelines.detectors.test_params import _job

    with pytest.raises(ConfigError, match=r"(?s)web.yaml.*value_range: bounds must lie within"):
        parse_job(_job("context", {"value_range": [-1e308, 1e308]}), source="web.yaml")
