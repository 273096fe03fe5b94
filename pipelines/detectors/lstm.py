"""An LSTM forecaster in PyTorch (CPU): each row predicted from the ``window`` rows before it,
scored by its standardised forecast error per feature."""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
import pandas as pd

from pipelines.detectors.base import BaseDetector, Detection, make_detection, unseen_values, with_history
from pipelines.detectors.calibration import ScoreCalibrator
from pipelines.detectors.params import LSTMParams
from pipelines.errors import MissingDependencyError, ModelError

log = logging.getLogger(__name__)

#: Scales the MAD to the standard deviation of normal noise.
_MAD_TO_SIGMA = 1.4826
_MIN_TRAINING_ROWS = 40
#: Share of the training windows (the latest) held back for early stopping and calibration.
_VALIDATION_SHARE = 0.2
#: Windows per forward pass when scoring (every pass has exactly this many; see _predict).
_SCORE_BATCH = 512
#: Largest standardised magnitude the network reads or learns (robust scales). The network runs
#: in float32: a value the base class lets through (below 1e154) overflowed it, e.g. a float32
#: "no data" marker (3.4e38) on a series of scale 0.01, and an infinite target turned every
#: weight into NaN. A million scales saturate the LSTM's gates anyway, and squared errors of that
#: size still sum finitely in float32.
_STANDARD_BOUND = 1e6


def _torch() -> Any:
    try:
        import torch
    except ImportError as exc:
        raise MissingDependencyError("torch", "lstm", "The lstm detector") from exc
    return torch


def _network(torch: Any, n_features: int, hidden: int, layers: int) -> Any:
    class Forecaster(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lstm = torch.nn.LSTM(n_features, hidden, num_layers=layers, batch_first=True)
            self.head = torch.nn.Linear(hidden, n_features)

        def forward(self, windows: Any) -> Any:
            output, _ = self.lstm(windows)
            return self.head(output[:, -1, :])

    return Forecaster()


class LSTMDetector(BaseDetector):
    """LSTM forecaster on sliding windows of all features, trained with early stopping.

    Features are standardised (median, robust scale). The network reads the ``window`` rows
    before a row and forecasts every feature of that row (``expected``). It trains with Adam
    on the earlier 80 % of the training windows and stops when the loss on the latest 20 % has
    not improved for ``patience`` epochs, keeping the best weights; the forecast errors on those
    held-back windows set each feature's error scale and score calibration, so scores reflect
    errors on data the network did not learn from. Training is deterministic for a seed
    (PyTorch's deterministic algorithms, seeded initialisation and shuffling, one thread).

    Parameters
    ----------
    window : int, default=24
        Rows the forecaster reads. :meth:`detect` uses twice that as history (``lookback_``):
        a missing input is carried forward from at most ``window`` rows before it.
    hidden_size, num_layers : int
        Size of the LSTM.
    max_epochs, patience : int
        Training length and early-stopping patience (epochs without improvement).
    learning_rate : float
    batch_size : int
    random_state : int
    threshold_kind, threshold_value :
        See :class:`~pipelines.config.ThresholdConfig`.

    Attributes
    ----------
    center_, scale_ : ndarray of shape (n_features_in_,)
        Standardisation of the inputs.
    constants_ : ndarray of shape (n_features_in_,)
        The value of each feature that had one value in every training row (NaN for the others):
        it is what is expected, and any other value scores 1 (beyond a relative 1e-9).
    error_scale_ : ndarray of shape (n_features_in_,)
        Robust scale of the held-back forecast errors (standard units).
    calibrators_ : list of ScoreCalibrator
    state_dict_ : dict of str to ndarray
        The network's weights (saved as arrays, never pickled).
    epochs_ : int
        Epochs trained before early stopping.
    validation_loss_ : float
        Best held-back mean squared error (standard units).
    """

    kind = "lstm"
    params_model = LSTMParams
    supports_warm_start = True

    def __init__(
        self,
        *,
        window: int = 24,
        hidden_size: int = 32,
        num_layers: int = 1,
        max_epochs: int = 40,
        patience: int = 5,
        learning_rate: float = 0.005,
        batch_size: int = 64,
        random_state: int = 0,
        threshold_kind: str = "contamination",
        threshold_value: float = 0.005,
    ):
        self.window = window
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.max_epochs = max_epochs
        self.patience = patience
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.random_state = random_state
        self.threshold_kind = threshold_kind
        self.threshold_value = threshold_value

    def _fit(self, X: pd.DataFrame, params: LSTMParams) -> np.ndarray:
        return self._train_network(X, params, None)

    def _fit_warm(self, X: pd.DataFrame, params: LSTMParams, champion: BaseDetector) -> np.ndarray:
        # The champion's weights already forecast this series: fine-tuning them on the new window
        # needs fewer epochs (half, early stopping still applies). The standardisation and the
        # error calibration follow the new window, as in a cold fit.
        fewer = params.model_copy(update={"max_epochs": max(1, params.max_epochs // 2)})
        return self._train_network(X, fewer, champion.state_dict_)

    def _train_network(self, X: pd.DataFrame, params: LSTMParams, initial: dict[str, np.ndarray] | None) -> np.ndarray:
        torch = _torch()
        # Names the parameter: a smaller window is often the fix when the history cannot grow.
        self._require_rows(
            X, max(_MIN_TRAINING_ROWS, 5 * params.window),
            f"five windows at least, of window={params.window} rows; a smaller window needs fewer",
        )
        # The forecaster reads window rows, and a missing one among them is carried from at most
        # window rows further back (_windows). Bounding the fill keeps a forecast a function of
        # the lookback_ rows before it, so scoring rows in pieces (each given lookback_ rows of
        # history) equals one call; an unbounded fill carried a value from before a long gap into
        # one call but not into a call whose history started inside the gap.
        self.lookback_ = 2 * params.window
        values = X.to_numpy()
        self.center_ = np.nanmedian(values, axis=0)
        spread = np.nanmedian(np.abs(values - self.center_), axis=0) * _MAD_TO_SIGMA
        std = np.nanstd(values, axis=0)
        self.scale_ = np.where(spread > 0, spread, np.where(std > 0, std, 1.0))
        # A feature with one value in every training row has no forecast error to learn a scale
        # from: the network's forecast missed it by a constant, so the band lay beside the
        # constant, and 5 - 1e-12 on a series of 5.0 scored 1 while 5.01 scored 0. Its constant
        # is what is expected, and any other value is beyond what training saw.
        varies = np.nanmax(values, axis=0) > np.nanmin(values, axis=0)
        self.constants_ = np.where(varies, np.nan, self.center_)
        standard = self._standard(values)
        windows, targets = _windows(standard, params.window)
        observed = ~np.isnan(targets)
        split = int(len(windows) * (1 - _VALIDATION_SHARE))
        with _deterministic(torch, params.random_state):
            network = _network(torch, X.shape[1], params.hidden_size, params.num_layers)
            if initial is not None:
                network.load_state_dict({name: torch.from_numpy(array.copy()) for name, array in initial.items()})
            self.epochs_, self.validation_loss_ = _train(
                torch, network, windows, targets, observed, split, params
            )
            self.state_dict_ = {name: tensor.detach().numpy().copy() for name, tensor in network.state_dict().items()}
        # Errors of every training row, computed exactly as detect() without history would.
        errors = values - self._forecast(torch, network, standard, n_history=0)
        held_back = errors[params.window + split :] / self.scale_
        counts = np.isfinite(held_back).sum(axis=0)
        sparse = {str(c): int(n) for c, n in zip(X.columns, counts.tolist(), strict=True) if n < 2}
        if sparse:  # the calibration refused them with a message naming no feature nor rows
            raise ModelError(
                f"LSTMDetector: some features have fewer than 2 values in the latest {len(held_back)} training rows "
                f"(from {X.index[params.window + split]} to {X.index[-1]}), which set their error scale and score "
                f"calibration (feature: values): {sparse}; fix them at the source, widen the training window, or "
                "leave them out of the job's features"
            )
        scale = np.nanmedian(np.abs(held_back - np.nanmedian(held_back, axis=0)), axis=0) * _MAD_TO_SIGMA
        self.error_scale_ = np.maximum(np.nan_to_num(scale, nan=1.0), 1e-6)
        raw = np.abs(errors) / (self.error_scale_ * self.scale_)
        # Calibrated on the held-back windows only: errors on windows it trained on are too small.
        self.calibrators_ = [ScoreCalibrator().fit(raw[params.window + split :, f]) for f in range(raw.shape[1])]
        log.info("LSTM trained %d epochs; held-back MSE %.4f", self.epochs_, self.validation_loss_)
        scores = self._calibrate(np.nan_to_num(raw))  # a missing value scores 0, as in detect()
        # Not the first window's rows: forecast from padding, as no scheduled run scores a row (runs
        # pass the rows before theirs as history), they took 11 of the 20 flags a contamination of
        # 0.5 % allows on a strong daily cycle, and new rows were flagged at 0.22 %.
        scores[: params.window] = np.nan
        # The threshold is taken from the features that vary: a constant one scores 0 or 1 (detect).
        return scores[:, varies] if varies.any() else np.zeros_like(scores)

    def training_anomaly_rate(self, X: pd.DataFrame) -> float:
        """As :meth:`BaseDetector.training_anomaly_rate`, over the rows after the first ``window``,
        each scored with the rows before it, as served rows are (the threshold comes from them)."""
        if len(X) <= self.window:
            return super().training_anomaly_rate(X)
        return float(self.detect(X.iloc[self.window :], history=X.iloc[: self.window]).is_anomaly.any(axis=1).mean())

    def _forecast(self, torch: Any, network: Any, standard: np.ndarray, n_history: int) -> np.ndarray:
        """Forecasts, in original units, of the rows after the first ``n_history`` of ``standard``."""
        # Rows before the first one given are unknown: they stand at the median (0 in standard units).
        padded = np.vstack([np.zeros((self.window, standard.shape[1])), standard])
        windows = _windows(padded, self.window)[0][n_history:]
        forecast = _predict(torch, network, windows) if len(windows) else np.zeros((0, standard.shape[1]))
        return forecast * self.scale_ + self.center_

    def _standard(self, values: np.ndarray) -> np.ndarray:
        return (values - self.center_) / self.scale_

    def _calibrate(self, raw: np.ndarray) -> np.ndarray:
        return np.column_stack([c.transform(raw[:, f]) for f, c in enumerate(self.calibrators_)])

    def _loaded_network(self) -> Any:
        # Rebuilt per call (milliseconds) rather than cached on the detector: scoring must not
        # change the detector, and a torch module is no learned state of ours (the weights are).
        torch = _torch()
        network = _network(torch, self.n_features_in_, self.hidden_size, self.num_layers)
        network.load_state_dict({name: torch.from_numpy(array) for name, array in self.state_dict_.items()})
        return network.eval()

    def _detect(self, X: pd.DataFrame, history: pd.DataFrame | None) -> Detection:
        torch = _torch()
        values = X.to_numpy()
        frame, n_history = with_history(X, history)
        standard = self._standard(frame.to_numpy())
        constant = ~np.isnan(self.constants_)
        # The network only ever read a constant feature at its constant (0): its weights for that
        # input never trained, and a change of it (a setting switched) moved the forecasts of the
        # other features, flagging them. The change itself is flagged below.
        standard[:, constant] = 0.0
        expected = self._forecast(torch, self._loaded_network(), standard, n_history=n_history)
        score = self._calibrate(np.abs(values - expected) / (self.error_scale_ * self.scale_))
        beyond = np.array([float(c.inverse(self.threshold_)) for c in self.calibrators_])
        half_width = np.broadcast_to(beyond * self.error_scale_ * self.scale_, values.shape)
        is_anomaly = score >= self.threshold_
        if constant.any():
            moved = unseen_values(values, self.constants_)
            expected[:, constant] = self.constants_[constant]
            half_width = np.where(constant, 0.0, half_width)
            score[:, constant] = moved[:, constant]
            is_anomaly = np.where(constant, moved, is_anomaly)
        return make_detection(X.index, self._feature_list(), values, expected, half_width, score, score, is_anomaly)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, bytes]]:
        state = {
            "calibrators_": [c.to_dict() for c in self.calibrators_],
            "epochs_": self.epochs_,
            "validation_loss_": self.validation_loss_,
            "state_names_": list(self.state_dict_),
        }
        arrays = {"center_": self.center_, "scale_": self.scale_, "error_scale_": self.error_scale_, "constants_": self.constants_}
        arrays.update({f"state_dict.{name}": array for name, array in self.state_dict_.items()})
        return state, arrays, {}

    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray], files: dict[str, bytes]) -> None:
        self.calibrators_ = [ScoreCalibrator.from_dict(c) for c in state["calibrators_"]]
        self.epochs_ = int(state["epochs_"])
        self.validation_loss_ = float(state["validation_loss_"])
        _check_arrays(arrays, state["state_names_"], self.n_features_in_, self.hidden_size, self.num_layers, len(self.calibrators_))
        self.state_dict_ = {name: arrays[f"state_dict.{name}"] for name in state["state_names_"]}
        self.center_, self.scale_, self.error_scale_ = arrays["center_"], arrays["scale_"], arrays["error_scale_"]
        # Saved before 2026-12-07: its constant features were scored as forecasts, as then.
        self.constants_ = arrays.get("constants_", np.full(self.n_features_in_, np.nan))
        # A model saved before 2026-12-06 asked for window rows of history, too few for the
        # bounded forward fill to score rows in pieces as in one call.
        self.lookback_ = max(self.lookback_, 2 * self.window)

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "epochs": self.epochs_, "validation_mse": self.validation_loss_}


def _weight_shapes(n_features: int, hidden: int, layers: int) -> dict[str, tuple[int, ...]]:
    """The shape of every weight of :func:`_network` (torch's names), known without torch."""
    shapes: dict[str, tuple[int, ...]] = {}
    for layer in range(layers):
        shapes[f"lstm.weight_ih_l{layer}"] = (4 * hidden, n_features if layer == 0 else hidden)
        shapes[f"lstm.weight_hh_l{layer}"] = (4 * hidden, hidden)
        shapes[f"lstm.bias_ih_l{layer}"] = shapes[f"lstm.bias_hh_l{layer}"] = (4 * hidden,)
    return {**shapes, "head.weight": (n_features, hidden), "head.bias": (n_features,)}


def _check_arrays(
    arrays: dict[str, np.ndarray], names: list[str], n_features: int, hidden: int, layers: int, n_calibrators: int
) -> None:
    """Refuse an artifact whose arrays do not make the model its detector.json describes.

    Such an artifact loaded, then scoring failed inside torch ("Error(s) in loading state_dict for
    Forecaster"), past the loading step that names the model version and says to retrain; a
    standardisation of the wrong length was broadcast into scores, and NaN weights scored NaN.
    """
    problems = []
    weights = _weight_shapes(n_features, hidden, layers)
    if sorted(names) != sorted(weights):
        problems.append(f"detector.json names the weights {sorted(names)}, not {sorted(weights)}")
    wanted = {f"state_dict.{name}": shape for name, shape in weights.items()}
    wanted.update({name: (n_features,) for name in ("center_", "scale_", "error_scale_")})
    if "constants_" in arrays:  # NaN where a feature varies; absent from models saved before 2026-12-07
        wanted["constants_"] = (n_features,)
    for name, shape in wanted.items():
        array = arrays.get(name)
        if array is None:
            problems.append(f"arrays.npz lacks {name}")
        elif array.shape != shape or array.dtype.kind != "f":
            problems.append(f"arrays.npz holds {name} as {array.dtype} of shape {array.shape}, not floats of shape {shape}")
        elif not np.isfinite(array).all() and name != "constants_":
            problems.append(f"arrays.npz holds {name} with {int((~np.isfinite(array)).sum())} NaN or infinite value(s)")
    if n_calibrators != n_features:
        problems.append(f"detector.json has {n_calibrators} score calibrators, not one per feature")
    if problems:
        raise ModelError(
            f"the lstm model artifact is damaged: for {n_features} feature(s), hidden_size={hidden} and "
            f"num_layers={layers} (detector.json), {'; '.join(problems[:3])}"
            f"{f' (and {len(problems) - 3} more)' if len(problems) > 3 else ''}; retrain the model"
        )


#: Held through a training: torch's seed (which initialises the weights) and its deterministic
#: mode belong to the process, so two trainings in threads of one process seeded each other's
#: weights and restored each other's mode. One at a time is what determinism costs there; across
#: processes (Airflow's mapped tasks, the benchmarks' workers) nothing is shared.
_TRAINING = threading.Lock()


class _deterministic:
    """Seeded, single-threaded, deterministic PyTorch for the duration of a training, one
    training of the process at a time (:data:`_TRAINING`)."""

    def __init__(self, torch: Any, seed: int) -> None:
        self.torch, self.seed = torch, seed

    def __enter__(self) -> None:
        _TRAINING.acquire()
        torch = self.torch
        self.saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
        try:
            torch.set_num_threads(1)  # parallel reductions may add in another order
            torch.use_deterministic_algorithms(True)
            torch.manual_seed(self.seed)
        except BaseException:
            self.__exit__()
            raise

    def __exit__(self, *exc: object) -> None:
        try:
            threads, deterministic = self.saved
            self.torch.set_num_threads(threads)
            self.torch.use_deterministic_algorithms(deterministic)
        finally:
            _TRAINING.release()


def _windows(standard: np.ndarray, window: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows - window) input windows and the row after each; a missing input is carried forward
    at most ``window`` rows (see ``lookback_``), then stands at the median (0)."""
    filled = pd.DataFrame(standard).ffill(limit=window).fillna(0.0).clip(-_STANDARD_BOUND, _STANDARD_BOUND).to_numpy(dtype="float32")
    views = np.lib.stride_tricks.sliding_window_view(filled, window, axis=0)[:-1]
    return np.ascontiguousarray(views.transpose(0, 2, 1)), standard[window:]


def _train(
    torch: Any,
    network: Any,
    windows: np.ndarray,
    targets: np.ndarray,
    observed: np.ndarray,
    split: int,
    params: LSTMParams,
) -> tuple[int, float]:
    inputs = torch.from_numpy(windows)
    goal = torch.from_numpy(np.clip(np.nan_to_num(targets), -_STANDARD_BOUND, _STANDARD_BOUND).astype("float32"))
    weight = torch.from_numpy(observed.astype("float32"))  # missing targets teach nothing
    optimizer = torch.optim.Adam(network.parameters(), lr=params.learning_rate)
    generator = torch.Generator().manual_seed(params.random_state)
    best, best_state, stale, epochs = float("inf"), None, 0, 0

    def loss_of(rows: Any) -> Any:
        error = (network(inputs[rows]) - goal[rows]) ** 2 * weight[rows]
        return error.sum() / weight[rows].sum().clamp(min=1.0)

    held_back = torch.arange(split, len(windows))
    for epochs in range(1, params.max_epochs + 1):
        network.train()
        for rows in torch.randperm(split, generator=generator).split(params.batch_size):
            optimizer.zero_grad()
            loss_of(rows).backward()
            optimizer.step()
        network.eval()
        with torch.no_grad():
            validation = float(loss_of(held_back))
        if validation < best - 1e-6:
            best, stale = validation, 0
            best_state = {name: tensor.clone() for name, tensor in network.state_dict().items()}
        else:
            stale += 1
            if stale >= params.patience:
                break
    if best_state is not None:
        network.load_state_dict(best_state)
    network.eval()
    return epochs, best


def _predict(torch: Any, network: Any, windows: np.ndarray) -> np.ndarray:
    """Forecasts of ``windows``, in blocks of exactly ``_SCORE_BATCH`` windows on one thread.

    A row's forecast must not depend on which other rows are scored with it: matrix kernels
    round differently for other batch shapes and thread splits, and a window scored in two
    calls must equal one call. So every block is padded to the same size.
    """
    parts = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad():
            for start in range(0, len(windows), _SCORE_BATCH):
                block = windows[start : start + _SCORE_BATCH]
                padded = np.zeros((_SCORE_BATCH, *block.shape[1:]), dtype=block.dtype)
                padded[: len(block)] = block
                parts.append(network(torch.from_numpy(padded)).numpy()[: len(block)])
    finally:
        torch.set_num_threads(threads)
    return np.vstack(parts).astype("float64")
