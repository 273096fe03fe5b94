from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pipelines.detectors import load_detector
from pipelines.detectors.lstm import LSTMDetector

SPIKE_ROWS = [30, 77, 118, 151]


@pytest.fixture(scope="module")
def series() -> tuple[pd.DataFrame, pd.DataFrame]:
    from tests.pipelines.detectors.conftest import seasonal_frame

    frame = seasonal_frame(28, seed=4)
    return frame.iloc[: 24 * 21], frame.iloc[24 * 21 :]


@pytest.fixture(scope="module")
def detector(series) -> LSTMDetector:
    return LSTMDetector(hidden_size=16, max_epochs=30).fit(series[0])


def test_forecasts_the_cycle_and_stops_early(detector: LSTMDetector, series) -> None:
    train, test = series
    detection = detector.detect(test, history=train)
    # Unit noise: a forecast that learned the cycle misses by little more than the noise.
    assert np.abs(detection.values - detection.expected).mean() < 1.2
    assert detector.epochs_ < 30 or detector.validation_loss_ < 0.5


def test_quiet_on_clean_data(detector: LSTMDetector, series) -> None:
    train, test = series
    assert detector.detect(test, history=train).is_anomaly.mean() <= 0.02


def test_flags_spikes_level_shifts_and_variance_changes(detector: LSTMDetector, series) -> None:
    train, test = series
    disturbed = test.copy()
    disturbed.iloc[SPIKE_ROWS, 0] += 8.0
    disturbed.iloc[100:112, 1] += 6.0
    detection = detector.detect(disturbed, history=train)
    assert detection.is_anomaly[SPIKE_ROWS, 0].all()
    # A forecaster reading the last rows follows a new level soon: the shift's start is what it flags.
    assert detection.is_anomaly[100, 1] and detection.is_anomaly[100:103, 1].sum() >= 2
    noisy = test.copy()
    noisy.iloc[40:70, 0] += np.random.default_rng(1).normal(scale=5.0, size=30)
    assert detector.detect(noisy, history=train).is_anomaly[40:70, 0].mean() >= 0.3


def test_weights_round_trip_as_arrays(detector: LSTMDetector, series) -> None:
    train, test = series
    files = detector.to_files()
    assert set(files) == {"detector.json", "arrays.npz"}  # state dict as arrays, no pickle
    loaded = load_detector("lstm", files)
    np.testing.assert_array_equal(loaded.detect(test, history=train).score, detector.detect(test, history=train).score)


def test_without_torch_the_extra_is_named() -> None:
    code = (
        "import importlib.abc, sys\n"
        "class NoTorch(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ImportError(\"No module named 'torch'\")\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "from tests.pipelines.detectors.conftest import seasonal_frame\n"
        "from pipelines.detectors.lstm import LSTMDetector\n"
        "LSTMDetector().fit(seasonal_frame(10, seed=0))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0
    # The CPU build's index: plain `pip install torch` takes a CUDA build with GBs of nvidia-* packages on Linux.
    assert (
        "pip install --extra-index-url https://download.pytorch.org/whl/cpu -c constraints.txt -e '.[lstm]' "
        "in the anomaly-pipelines repository (the CPU-only build" in result.stderr
    )


# -- warm start ---------------------------------------------------------------------------------------


def test_warm_start_fine_tunes_the_champions_weights(detector: LSTMDetector, series, monkeypatch) -> None:
    import pipelines.detectors.lstm as lstm
    from tests.pipelines.detectors.conftest import seasonal_frame

    started_from = []
    real_train = lstm._train

    def recording_train(torch, network, *args):
        started_from.append({name: tensor.detach().numpy().copy() for name, tensor in network.state_dict().items()})
        return real_train(torch, network, *args)

    monkeypatch.setattr(lstm, "_train", recording_train)
    frame = seasonal_frame(28, seed=5)
    new, test = frame.iloc[: 24 * 21], frame.iloc[24 * 21 :]
    warm = LSTMDetector(hidden_size=16, max_epochs=30).fit(new, warm_start=detector)
    cold = LSTMDetector(hidden_size=16, max_epochs=30).fit(new)

    assert warm.warm_started_ and not cold.warm_started_
    # Training started from the champion's weights, not from a fresh initialisation.
    assert set(started_from[0]) == set(detector.state_dict_)
    for name, weights in detector.state_dict_.items():
        np.testing.assert_array_equal(started_from[0][name], weights)
        assert not np.array_equal(started_from[1][name], weights)
    assert warm.epochs_ <= 15  # half of max_epochs
    # As good as a cold fit: the forecast misses by about the unit noise.
    errors = [np.abs(d.detect(test, history=new).values - d.detect(test, history=new).expected).mean() for d in (warm, cold)]
    assert errors[0] < 1.2 and errors[0] < errors[1] * 1.1
    assert load_detector("lstm", warm.to_files()).warm_started_


def test_no_warm_start_across_different_parameters(detector: LSTMDetector, series) -> None:
    other = LSTMDetector(hidden_size=8, max_epochs=2).fit(series[0], warm_start=detector)
    assert not other.warm_started_ and other.state_dict_["head.weight"].shape == (2, 8)


def test_a_model_saved_asking_for_window_rows_of_history_asks_for_what_its_fill_reads(detector: LSTMDetector, series) -> None:
    import json

    train, test = series
    files = detector.to_files()
    meta = json.loads(files["detector.json"])
    meta["learned"]["lookback_"] = detector.window  # as saved before 2026-12-06
    old = load_detector("lstm", {**files, "detector.json": json.dumps(meta).encode()})
    # The forecaster reads window rows, and a missing one among them is carried from at most
    # window rows further back: scoring in pieces needs both as history.
    assert old.lookback_ == detector.lookback_ == 2 * detector.window
    np.testing.assert_array_equal(old.detect(test, history=train).score, detector.detect(test, history=train).score)


def test_a_feature_missing_from_the_held_back_rows_is_named_with_those_rows(series) -> None:
    # A sensor dead over the latest training rows left nothing to calibrate its errors on: the
    # calibration refused with "cannot calibrate scores from 0 finite training score(s)".
    from pipelines.errors import ModelError

    train = series[0].copy()
    train.iloc[-100:, 1] = np.nan
    message = (
        r"LSTMDetector: some features have fewer than 2 values in the latest 96 training rows "
        r"\(from 2024-01-18 00:00:00\+00:00 to 2024-01-21 23:00:00\+00:00\).*\{'b': 0\}; fix them at the source"
    )
    with pytest.raises(ModelError, match=message):
        LSTMDetector(hidden_size=8, max_epochs=1).fit(train)


def test_a_float32_no_data_marker_in_training_does_not_break_the_network(series) -> None:
    # 3.4e38 is finite (the base class takes only magnitudes from 1e154 as infinite), but on a series
    # of scale 0.01 it overflowed the network's float32 windows and targets: every weight turned NaN
    # and the fit failed on "missing" held-back values.
    train, test = (frame * 0.01 for frame in series)
    train.iloc[100, 0] = float(np.finfo(np.float32).max)
    detector = LSTMDetector(hidden_size=8, max_epochs=3).fit(train)
    assert all(np.isfinite(weights).all() for weights in detector.state_dict_.values())
    test = test.copy()
    test.iloc[20, 0] += 0.3  # thirty sigma
    detection = detector.detect(test, history=train)
    assert detection.is_anomaly[20, 0] and detection.is_anomaly.mean() < 0.02


def test_too_few_rows_for_the_window_names_the_parameter(series) -> None:
    from pipelines.errors import ModelError

    message = r"needs at least 240 training rows \(five windows at least, of window=48 rows; a smaller window needs fewer\); got 200"
    with pytest.raises(ModelError, match=message):
        LSTMDetector(window=48).fit(series[0].iloc[:200])
