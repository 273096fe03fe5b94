from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.detectors import load_detector
from pipelines.detectors.mset import MSETDetector
from pipelines.errors import ModelError

TRAIN_ROWS = 24 * 21
TEST_ROWS = 24 * 7


def plant(rows: int, seed: int, signals: int = 4) -> pd.DataFrame:
    """Hourly signals of one machine: a daily load drives every signal (each with its own gain
    and offset), plus independent noise, so each signal is predictable from the others."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2024-01-01", periods=rows, freq="h", tz="UTC")
    load = np.sin(2 * np.pi * index.hour.to_numpy() / 24) + 0.3 * rng.normal(size=rows)
    return pd.DataFrame(
        {f"s{i}": 10.0 * (i + 1) + (2.0 + i) * load + 0.2 * rng.normal(size=rows) for i in range(signals)},
        index=index,
    )


@pytest.fixture(scope="module")
def data() -> tuple[pd.DataFrame, pd.DataFrame]:
    frame = plant(TRAIN_ROWS + TEST_ROWS, seed=11)
    return frame.iloc[:TRAIN_ROWS], frame.iloc[TRAIN_ROWS:]


@pytest.fixture(scope="module")
def detector(data) -> MSETDetector:
    return MSETDetector().fit(data[0])


def test_estimates_each_signal_from_the_others(detector: MSETDetector, data) -> None:
    train, test = data
    detection = detector.detect(test, history=train)
    error = np.abs(detection.values - detection.expected)
    # The shared load is most of each signal's swing; the estimate recovers it from the others.
    swing = test.std().to_numpy()
    assert (np.median(error, axis=0) < 0.25 * swing).all()


def test_quiet_on_clean_data(detector: MSETDetector, data) -> None:
    train, test = data
    assert detector.detect(test, history=train).is_anomaly[:, 0].mean() <= 0.02


@pytest.mark.parametrize(
    ("disturb", "rows"),
    [
        ("spike", [30, 80, 130]),
        ("level shift", list(range(60, 90))),
        ("variance", list(range(100, 130))),
    ],
)
def test_finds_disturbances_and_names_the_signal(detector: MSETDetector, data, disturb: str, rows: list[int]) -> None:
    train, test = data
    disturbed = test.copy()
    noise = np.random.default_rng(5).normal(size=len(rows))
    change = {"spike": 3.0, "level shift": 1.5, "variance": 2.0 * noise}[disturb]
    disturbed.iloc[rows, 2] += change  # s2 only; its normal noise is 0.2
    detection = detector.detect(disturbed, history=train)
    flagged = detection.is_anomaly[rows, 0]
    # The test restarts after each alarm (Wald's SPRT, as MSET2 runs it), so a lasting disturbance
    # alarms every few rows rather than on every row: a row is flagged on its own evidence since.
    assert flagged.mean() >= {"spike": 1.0, "level shift": 0.5, "variance": 0.35}[disturb]
    # The disturbed signal carries the largest contribution on the flagged rows.
    contributions = detection.feature_score[np.asarray(rows)[flagged]]
    assert (contributions.argmax(axis=1) == 2).mean() >= 0.9
    elsewhere = np.setdiff1d(np.arange(len(test)), np.arange(min(rows), max(rows) + detector.lookback_ + 1))
    assert detection.is_anomaly[elsewhere, 0].mean() <= 0.02


def test_a_signal_that_drops_out_leaves_the_others_estimated_from_the_rest(detector: MSETDetector, data) -> None:
    # s1 stops reporting for the whole week: the other signals are estimated from what is still
    # observed (a stale stand-in for s1 flagged them), and a spike on s2 is still found.
    train, test = data
    dropped = test.copy()
    dropped["s1"] = np.nan
    quiet = detector.detect(dropped, history=train)
    assert quiet.is_anomaly.any(axis=1).mean() <= 0.02
    clean = detector.detect(test, history=train)
    others = [0, 2, 3]
    assert np.abs(quiet.expected[:, others] - clean.expected[:, others]).max() < 1.0  # the noise is 0.2, the gains 2-5
    assert np.isnan(quiet.expected[:, 1]).sum() == 0  # s1 itself is still estimated from the others
    dropped.iloc[[40, 100], 2] += 3.0
    flagged = detector.detect(dropped, history=train)
    assert flagged.is_anomaly[[40, 100], 0].all() and (flagged.feature_score[[40, 100]].argmax(axis=1) == 2).all()


def test_correlation_break_is_found_when_each_value_is_in_range(detector: MSETDetector, data) -> None:
    """s0 keeps its normal range but stops following the load: only a multivariate model sees it."""
    train, test = data
    broken = test.copy()
    rows = slice(50, 80)
    broken.iloc[rows, 0] = test.iloc[rows, 0].to_numpy()[::-1]
    detection = detector.detect(broken, history=train)
    flagged = detection.is_anomaly[50:80, 0]
    assert flagged.mean() >= 0.35 and flagged[:5].any()  # found at once, then every few rows (the test restarts)
    assert (detection.feature_score[50:80][flagged].argmax(axis=1) == 0).mean() >= 0.8


def test_flat_and_mostly_missing_signals_are_dropped_with_a_reason(data) -> None:
    train, test = data
    train, test = train.copy(), test.copy()
    train["flat"], test["flat"] = 5.0, 5.0
    train["gappy"] = np.where(np.arange(len(train)) % 3 == 0, 1.0, np.nan)
    test["gappy"] = 1.0
    detector = MSETDetector().fit(train)
    assert set(detector.dropped_signals_) == {"flat", "gappy"}
    assert "constant" in detector.dropped_signals_["flat"]
    assert "missing in 67%" in detector.dropped_signals_["gappy"]
    assert detector.summary()["dropped_signals"] == detector.dropped_signals_
    detection = detector.detect(test, history=train)
    assert (detection.feature_score[:, 4:] == 0).all() and (detection.expected[:, 4] == 5.0).all()


def test_a_lone_signal_is_estimated_from_its_own_past() -> None:
    frame = plant(TRAIN_ROWS + TEST_ROWS, seed=3, signals=1)
    train, test = frame.iloc[:TRAIN_ROWS], frame.iloc[TRAIN_ROWS:].copy()
    detector = MSETDetector().fit(train)
    assert detector.lags_ == 3 and detector.lookback_ == detector.sprt_window + 3
    test.iloc[[40, 100], 0] += 4.0
    flagged = detector.detect(test, history=train).is_anomaly[:, 0]
    assert flagged[[40, 100]].all() and flagged.mean() <= 0.05


def test_a_lone_signal_needs_its_lags_on_top_of_the_fewest_rows() -> None:
    # The first 3 rows only give lags: 32 rows make 29 states, and the error says so (it blamed gaps).
    frame = plant(33, seed=4, signals=1)
    with pytest.raises(ModelError, match=r"needs at least 33 training rows \(30 states after its 3 lags\); got 32"):
        MSETDetector().fit(frame.iloc[:32])
    assert MSETDetector().fit(frame).memory_.shape[0] > 0


def test_three_hundred_signals() -> None:
    rng = np.random.default_rng(0)
    rows, signals = 600, 300
    index = pd.date_range("2024-01-01", periods=rows, freq="h", tz="UTC")
    drivers = rng.normal(size=(rows, 3))
    gains = rng.normal(size=(3, signals))
    frame = pd.DataFrame(drivers @ gains + 0.1 * rng.normal(size=(rows, signals)), index=index)
    frame.columns = [f"sensor_{i:03d}" for i in range(signals)]
    train, test = frame.iloc[:500], frame.iloc[500:].copy()
    detector = MSETDetector(memory_size=128).fit(train)
    test.iloc[60, 123] += 10 * train.iloc[:, 123].std()
    detection = detector.detect(test, history=train)
    assert detection.is_anomaly[60, 0]
    assert detection.feature_score[60].argmax() == 123


def test_round_trip_keeps_dropped_signals_and_scores(data) -> None:
    train, test = data
    train = train.assign(flat=1.0)
    detector = MSETDetector(memory_size=64).fit(train)
    loaded = load_detector("mset", detector.to_files())
    assert loaded.dropped_signals_ == detector.dropped_signals_
    a, b = detector.detect(test.assign(flat=1.0), history=train), loaded.detect(test.assign(flat=1.0), history=train)
    np.testing.assert_array_equal(a.score, b.score)
    np.testing.assert_array_equal(a.expected, b.expected)


def test_nothing_to_model_is_explained() -> None:
    frame = pd.DataFrame({"a": 1.0, "b": 2.0}, index=pd.date_range("2024-01-01", periods=100, freq="h", tz="UTC"))
    with pytest.raises(ModelError, match=r"no signal left to model \(a: constant \(1\.0\) .*b: constant \(2\.0\)"):
        MSETDetector().fit(frame)


@pytest.fixture(scope="module")
def three_signals() -> dict[int, tuple[MSETDetector, pd.DataFrame, pd.DataFrame]]:
    fitted = {}
    for seed in (1, 3):
        frame = plant(2500, seed=seed, signals=3)
        train, test = frame.iloc[:2000], frame.iloc[2000:]
        fitted[seed] = (MSETDetector().fit(train), train, test)
    return fitted


@pytest.mark.parametrize("seed", [1, 3])
@pytest.mark.parametrize("sigmas", [10, 30])
def test_a_spike_is_not_charged_to_the_rows_after_it(three_signals, seed: int, sigmas: int) -> None:
    # The sequential test restarts after an alarm: a normal row after a spike that adds a little
    # evidence (any |z| > drift / 2) was charged the spike's whole evidence while the spike was in
    # the window, so a 10-sigma spike also flagged the row 3 rows later and a 30-sigma one more.
    detector, train, test = three_signals[seed]
    clean = detector.detect(test, history=train).is_anomaly[:, 0]
    spiked = test.copy()
    spiked.iloc[250, 1] += sigmas * 0.2  # s1's own noise is 0.2
    detection = detector.detect(spiked, history=train)
    added = np.flatnonzero(detection.is_anomaly[:, 0] & ~clean)
    assert added.tolist() == [250]
    if sigmas == 10:  # at 30 sigmas the spill-over into the others' estimates also scores 1.0
        assert detection.feature_score[250].argmax() == 1


@pytest.mark.parametrize("seed", [1, 3])
def test_a_sustained_shift_raises_an_alarm_every_few_rows(three_signals, seed: int) -> None:
    detector, train, test = three_signals[seed]
    shifted = test.copy()
    rows = np.arange(200, 248)
    shifted.iloc[rows, 1] += 3 * 0.2
    detection = detector.detect(shifted, history=train)
    flagged = detection.is_anomaly[rows, 0]
    assert flagged.mean() >= 0.25
    assert (detection.feature_score[rows[flagged]].argmax(axis=1) == 1).mean() >= 0.9
    assert not detection.is_anomaly[248 : 248 + detector.lookback_, 0].any()
