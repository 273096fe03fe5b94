"""Review findings for the seasonal baselines: slots the training rows leave empty or nearly so."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.detectors import make_detector


def _daily_cycle(days: int, seed: int, freq: str = "15min") -> pd.DataFrame:
    """A daily swing of +-30 around 100 plus unit noise."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2024-01-01", periods=days * pd.Timedelta("1D") // pd.Timedelta(freq), freq=freq, tz="UTC")
    hours = (index.hour + index.minute / 60).to_numpy()
    return pd.DataFrame({"value": 100 + 30 * np.sin(2 * np.pi * hours / 24) + rng.normal(size=len(index))}, index=index)


@pytest.mark.parametrize("kind", ["seasonal_mad", "level_shift"])
def test_an_outage_in_one_of_two_seasons_hides_no_spike(kind: str) -> None:
    # The training rows of the other season at the outage's slots were compared with the median of
    # the whole series, off by the daily swing: their huge errors set the threshold, and no 6-sigma
    # spike was found afterwards (0 of 20; 19 or 20 without the outage).
    frame = _daily_cycle(4, seed=0)
    train, later = frame.iloc[: 96 * 2].copy(), frame.iloc[96 * 2 :].copy()
    train.iloc[30:42] = np.nan  # three hours missing on the first day
    detector = make_detector(kind, {"season": "1d"}).fit(train)
    assert detector.season_fallback_ is None
    rows = np.arange(5, len(later), 10)
    later.iloc[rows, 0] += 8.0
    detection = detector.detect(later, history=train)
    assert detection.is_anomaly[rows, 0].mean() >= 0.6
    assert np.delete(detection.is_anomaly[:, 0], rows).mean() <= 0.03


@pytest.mark.parametrize("kind", ["seasonal_mad", "level_shift"])
def test_a_slot_without_training_values_expects_what_its_neighbours_do(kind: str) -> None:
    # Every 03:xx row missing in training (a nightly maintenance window): its slots expected the
    # median of the whole series, and every 03:xx row alarmed once the data came.
    frame = _daily_cycle(21, seed=1)
    train, later = frame.iloc[: 96 * 14].copy(), frame.iloc[96 * 14 :]
    train.loc[train.index.hour == 3, "value"] = np.nan
    detection = make_detector(kind, {"season": "1d"}).fit(train).detect(later, history=train)
    at_three = later.index.hour == 3
    assert detection.is_anomaly[at_three, 0].mean() <= 0.05
    true_cycle = 100 + 30 * np.sin(2 * np.pi * (later.index.hour + later.index.minute / 60).to_numpy() / 24)
    assert np.abs(detection.expected[at_three, 0] - true_cycle[at_three]).max() < 3.0


def test_neighbours_interpolate_around_the_end_of_the_season() -> None:
    from pipelines.detectors.seasonal_mad import from_neighbours

    nan = np.nan
    np.testing.assert_allclose(from_neighbours(np.array([4.0, nan, nan, 8.0]), -1.0), [8.0, 16 / 3, 20 / 3, 4.0])
    np.testing.assert_allclose(from_neighbours(np.array([0.0, 1.0, 2.0, 3.0]), -1.0), [2.0, 1.0, 2.0, 1.0])
    np.testing.assert_allclose(from_neighbours(np.array([nan, 5.0, nan]), -1.0), [5.0, -1.0, 5.0])
    np.testing.assert_allclose(from_neighbours(np.array([7.0]), -1.0), [-1.0])


@pytest.mark.parametrize("kind", ["seasonal_mad", "level_shift"])
def test_float_rounding_of_a_flat_gauge_is_no_anomaly(kind: str) -> None:
    # A flat gauge of 0.7 averaged per bucket from 4 scrapes; a bucket with 3 (a missed scrape)
    # averages to 0.6999999999999998, which seasonal_mad flagged with score 1.
    index = pd.date_range("2024-01-01", periods=288 * 21, freq="5min", tz="UTC")
    frame = pd.DataFrame({"gauge": np.full(len(index), pd.Series([0.7] * 4).mean())}, index=index)
    train, later = frame.iloc[: 288 * 14], frame.iloc[288 * 14 :].copy()
    later.iloc[100, 0] = pd.Series([0.7] * 3).mean()
    later.iloc[200, 0] = 0.7 * (1 + 1e-9)  # a real change, however small, is still one
    assert later.iloc[100, 0] != 0.7
    detection = make_detector(kind, {}).fit(train).detect(later, history=train)
    assert not detection.is_anomaly[100, 0] and detection.score[100, 0] == 0.0
    assert detection.is_anomaly[200, 0]
    assert np.flatnonzero(detection.is_anomaly[:, 0]).tolist() == [200]
    inside = (detection.lower[:, 0] <= later["gauge"].to_numpy()) & (later["gauge"].to_numpy() <= detection.upper[:, 0])
    np.testing.assert_array_equal(~inside, detection.is_anomaly[:, 0])
