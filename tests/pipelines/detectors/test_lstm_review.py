from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from pipelines.detectors import load_detector
from pipelines.detectors.lstm import LSTMDetector, _network, _weight_shapes
from pipelines.errors import ModelError


@pytest.fixture(scope="module")
def series() -> tuple[pd.DataFrame, pd.DataFrame]:
    from tests.pipelines.detectors.conftest import seasonal_frame

    frame = seasonal_frame(12, seed=1)
    return frame.iloc[:240], frame.iloc[240:]


@pytest.fixture(scope="module")
def detector(series) -> LSTMDetector:
    return LSTMDetector(window=12, hidden_size=8, max_epochs=2).fit(series[0])


def _with_arrays(files: dict[str, bytes], change) -> dict[str, bytes]:
    with np.load(io.BytesIO(files["arrays.npz"])) as npz:
        arrays = {name: npz[name] for name in npz.files}
    change(arrays)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return {**files, "arrays.npz": buffer.getvalue()}


def _with_meta(files: dict[str, bytes], change) -> dict[str, bytes]:
    meta = json.loads(files["detector.json"])
    change(meta)
    return {**files, "detector.json": json.dumps(meta).encode()}


def _set(arrays: dict[str, np.ndarray], name: str, value: np.ndarray) -> None:
    arrays[name] = value


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda f: _with_arrays(f, lambda a: _set(a, "state_dict.head.weight", a["state_dict.head.weight"][:1])),
            r"arrays.npz holds state_dict.head.weight as float32 of shape \(1, 8\), not floats of shape \(2, 8\)",
        ),
        (
            lambda f: _with_arrays(f, lambda a: a.pop("state_dict.lstm.bias_hh_l0")),
            r"arrays.npz lacks state_dict.lstm.bias_hh_l0",
        ),
        (
            lambda f: _with_arrays(f, lambda a: _set(a, "center_", a["center_"][:1])),
            r"arrays.npz holds center_ as float64 of shape \(1,\), not floats of shape \(2,\)",
        ),
        (
            lambda f: _with_arrays(f, lambda a: _set(a, "state_dict.head.bias", np.full(2, np.nan, dtype="float32"))),
            r"arrays.npz holds state_dict.head.bias with 2 NaN or infinite value\(s\)",
        ),
        (
            lambda f: _with_meta(f, lambda m: m["params"].update(hidden_size=16)),
            r"hidden_size=16 and num_layers=1 \(detector.json\), arrays.npz holds state_dict.lstm.weight_ih_l0 as "
            r"float32 of shape \(32, 2\), not floats of shape \(64, 2\)",
        ),
        (
            lambda f: _with_meta(f, lambda m: m["params"].update(num_layers=2)),
            r"num_layers=2 \(detector.json\), detector.json names the weights \[",
        ),
    ],
    ids=["weight-shape", "weight-missing", "center-length", "nan-weights", "hidden-size", "num-layers"],
)
def test_a_damaged_artifact_is_refused_when_loaded_naming_its_file(detector: LSTMDetector, series, damage, message) -> None:
    # It loaded, then scoring failed inside torch ("Error(s) in loading state_dict for Forecaster"),
    # past the loading step that names the model version and says to retrain; a short
    # standardisation was broadcast into scores, and NaN weights scored NaN.
    damaged = damage(detector.to_files())
    with pytest.raises(ModelError, match=rf"the lstm model artifact is damaged: .*{message}.*; retrain the model"):
        load_detector("lstm", damaged).detect(series[1], history=series[0])


@pytest.mark.parametrize("layers", [1, 3])
def test_the_weight_shapes_checked_at_loading_are_the_networks(layers: int) -> None:
    import torch

    network = _network(torch, 3, 5, layers)
    assert {name: tuple(t.shape) for name, t in network.state_dict().items()} == _weight_shapes(3, 5, layers)


def test_an_intact_artifact_scores_as_the_fitted_detector(detector: LSTMDetector, series) -> None:
    train, test = series
    loaded = load_detector("lstm", detector.to_files())
    np.testing.assert_array_equal(loaded.detect(test, history=train).score, detector.detect(test, history=train).score)


# -- a feature constant in training ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def with_constant(series) -> tuple[LSTMDetector, pd.DataFrame, pd.DataFrame]:
    train, test = (frame.assign(a=5.0) for frame in series)
    return LSTMDetector(window=12, hidden_size=8, max_epochs=3).fit(train), train, test


@pytest.mark.parametrize(
    ("value", "flagged"),
    [(5.0 - 1e-12, False), (5.0 + 1e-12, False), (4.99, True), (5.01, True), (50.0, True)],
)
def test_a_feature_constant_in_training_expects_its_constant(with_constant, value: float, flagged: bool) -> None:
    # The network's forecast of it missed by a constant (5.0099), and its error scale was the floor:
    # the band lay beside the constant, so 5 - 1e-12 (an aggregation's rounding) scored 1 while
    # 5.01 scored 0.
    detector, train, test = with_constant
    test = test.copy()
    test.iloc[10, 0] = value
    detection = detector.detect(test, history=train)
    np.testing.assert_array_equal(detection.expected[:, 0], 5.0)
    np.testing.assert_array_equal(detection.lower[:, 0], 5.0)
    np.testing.assert_array_equal(detection.upper[:, 0], 5.0)
    assert detection.is_anomaly[10, 0] == flagged and detection.score[10, 0] == float(flagged)
    assert not detection.is_anomaly[np.arange(len(test)) != 10, 0].any()
    # The other feature is forecast as before: quiet on clean rows.
    assert detection.is_anomaly[:, 1].mean() <= 0.02


def test_the_constant_survives_saving_and_a_model_saved_without_it_scores_as_then(with_constant) -> None:
    detector, train, test = with_constant
    files = detector.to_files()
    loaded = load_detector("lstm", files)
    np.testing.assert_array_equal(loaded.detect(test, history=train).score, detector.detect(test, history=train).score)
    old = load_detector("lstm", _with_arrays(files, lambda a: a.pop("constants_")))
    assert np.isnan(old.constants_).all()
    assert not np.array_equal(old.detect(test, history=train).expected[:, 0], 5.0)



def test_a_constant_feature_that_moves_does_not_move_the_other_features_forecasts(with_constant) -> None:
    # The network only ever read it at its constant, so its weights for that input never trained:
    # a switched setting (5 -> 50) moved the other feature's forecasts and flagged them.
    detector, train, test = with_constant
    moved = test.copy()
    moved.iloc[40:80, 0] = 50.0
    clean, detection = detector.detect(test, history=train), detector.detect(moved, history=train)
    assert detection.is_anomaly[40:80, 0].all()
    np.testing.assert_array_equal(detection.expected[:, 1], clean.expected[:, 1])
    np.testing.assert_array_equal(detection.is_anomaly[:, 1], clean.is_anomaly[:, 1])


def test_the_threshold_leaves_out_the_rows_forecast_from_padding() -> None:
    # The first window's rows, forecast from padding (a scheduled run always passes history), took
    # 11 of the 20 flags a 0.5 % contamination allows on a strong daily cycle: new rows were then
    # flagged at 0.22 %, and training_anomaly_rate (0.85 %) was not the served rate (0.44 %).
    from tests.pipelines.detectors.conftest import seasonal_frame

    frame = seasonal_frame(300, seed=7, amplitude=20.0)
    train, new = frame.iloc[:2000], frame.iloc[2000:7000]
    detector = LSTMDetector(max_epochs=15).fit(train)
    flagged = detector.detect(new, history=train).is_anomaly
    assert 0.0035 <= flagged.mean() <= 0.0075, flagged.mean()  # of the cells, as contamination counts them
    assert abs(detector.training_anomaly_rate(train) - flagged.any(axis=1).mean()) <= 0.002  # of the rows
