"""Prophet forecasts per feature; an anomaly is an actual outside the forecast's interval."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

from pipelines.config import ThresholdConfig
from pipelines.detectors.base import BaseDetector, Detection, make_detection
from pipelines.detectors.calibration import ScoreCalibrator, held_back_rows
from pipelines.detectors.params import ProphetParams, _two_letter_codes
from pipelines.errors import ConfigError, MissingDependencyError, ModelError

_MIN_TRAINING_ROWS = 20
log = logging.getLogger(__name__)


def _prophet() -> Any:
    """Prophet, imported on first use and with its chatter silenced.

    It logs a failed plotly import (plots are not used here) and cmdstanpy logs every chain
    start and end at INFO, which would drown a task's log with one fit per feature.
    """
    logging.getLogger("prophet.plot").disabled = True
    try:
        import prophet
        from prophet import serialize
    except ImportError as exc:
        raise MissingDependencyError("prophet", "prophet", "The prophet detector") from exc
    from cmdstanpy.utils import get_logger

    # cmdstanpy gives its logger a handler at DEBUG on first use when nothing above it has
    # one (a plain script); set that up now, then raise the bar.
    # Its ERROR for a failed optimisation only repeats the RuntimeError it raises, which the fit
    # turns into a Newton fit or a ModelError naming the feature.
    get_logger().setLevel(logging.CRITICAL)
    logging.getLogger("prophet").setLevel(logging.WARNING)
    return prophet, serialize


class ProphetDetector(BaseDetector):
    """Prophet (trend + seasonalities + holidays) per feature, scored outside its interval.

    ``expected`` is Prophet's forecast ``yhat``. The forecast interval is Prophet's own
    predictive interval at ``interval_width`` — observation noise ``sigma_obs`` plus, beyond the
    training data, the trend's uncertainty from future changepoints (as often as in the history,
    Laplace-sized like the fitted ones) — computed in closed form (Gaussian approximation)
    rather than from Monte Carlo samples: the same timestamp always gets the same interval, so a
    window scored in pieces equals one call, and scoring is many times faster.

    The raw score is the distance outside the interval relative to its width (0 inside),
    calibrated per feature on the training rows' scores plus out-of-sample scores of the latest
    rows (:func:`~pipelines.detectors.calibration.held_back_rows`): a second model per feature,
    fitted on the rows before, forecasts those. An in-sample calibration alone let the fixed
    threshold flag many times the share of new rows asked for. ``score`` and
    ``feature_score`` are the same, and ``lower``/``upper`` are where the score reaches the
    threshold.

    Parameters
    ----------
    interval_width : float, default=0.95
        Coverage of the forecast interval.
    changepoint_prior_scale, seasonality_prior_scale : float
        Prophet's flexibility of the trend and of the seasonalities.
    n_changepoints : int, default=25
    changepoint_range : float, default=0.8
        Prophet's potential changepoints of the trend and the share of the history they are
        spread over (a trend change in the latest 20 % of the rows is missed with the default).
    seasonality_mode : {"additive", "multiplicative"}
    daily_seasonality, weekly_seasonality, yearly_seasonality : bool or "auto"
    holidays_country : str or None
        Country code whose public holidays Prophet models (the ``holidays`` package; offline).
    growth : {"linear", "flat"}
    time_zone : str, default="UTC"
        IANA time zone whose wall-clock time Prophet fits and forecasts on: the daily and weekly
        seasonalities and the holidays follow local time (a holiday is the local day; a daily
        cycle keeps its local hour across daylight-saving changes). The rows keep their UTC
        timestamps.
    threshold_kind, threshold_value :
        See :class:`~pipelines.config.ThresholdConfig`.

    Attributes
    ----------
    models_ : list of prophet.Prophet
        One fitted model per feature.
    calibrators_ : list of ScoreCalibrator
        Calibration of each feature's raw score.
    calibration_rows_ : int
        Held-back rows scored out of sample for the calibration (0: the fitted rows only).
    """

    kind = "prophet"
    params_model = ProphetParams
    requires_timestamps = True
    supports_warm_start = True

    def __init__(
        self,
        *,
        interval_width: float = 0.95,
        changepoint_prior_scale: float = 0.05,
        n_changepoints: int = 25,
        changepoint_range: float = 0.8,
        seasonality_prior_scale: float = 10.0,
        seasonality_mode: str = "additive",
        daily_seasonality: bool | str = "auto",
        weekly_seasonality: bool | str = "auto",
        yearly_seasonality: bool | str = "auto",
        holidays_country: str | None = None,
        growth: str = "linear",
        time_zone: str = "UTC",
        threshold_kind: str = "contamination",
        threshold_value: float = 0.005,
    ):
        self.interval_width = interval_width
        self.changepoint_prior_scale = changepoint_prior_scale
        self.n_changepoints = n_changepoints
        self.changepoint_range = changepoint_range
        self.seasonality_prior_scale = seasonality_prior_scale
        self.seasonality_mode = seasonality_mode
        self.daily_seasonality = daily_seasonality
        self.weekly_seasonality = weekly_seasonality
        self.yearly_seasonality = yearly_seasonality
        self.holidays_country = holidays_country
        self.growth = growth
        self.time_zone = time_zone
        self.threshold_kind = threshold_kind
        self.threshold_value = threshold_value

    def _check_params(self) -> tuple[ProphetParams, ThresholdConfig]:
        params, policy = super()._check_params()
        if params.holidays_country:
            _check_country(params.holidays_country)
        return params, policy

    def _fit(self, X: pd.DataFrame, params: ProphetParams) -> np.ndarray:
        return self._fit_models(X, params, None)

    def _fit_warm(self, X: pd.DataFrame, params: ProphetParams, champion: BaseDetector) -> np.ndarray:
        # Prophet's documented warm start ("Updating fitted models"): the optimiser starts from
        # the champion's fitted trend, changepoints, seasonalities and noise of each feature.
        return self._fit_models(X, params, champion.models_)

    def _fit_models(self, X: pd.DataFrame, params: ProphetParams, previous: list[Any] | None) -> np.ndarray:
        if not self.time_indexed_:
            raise ModelError(
                "ProphetDetector needs timestamps (a UTC DatetimeIndex): Prophet models time of day, "
                "week and year. Give the job a timestamp column, or use another model."
            )
        self._require_rows(X, _MIN_TRAINING_ROWS, "to fit a trend and calibrate its scores")
        counts = np.isfinite(X.to_numpy()).sum(axis=0)
        sparse = {str(c): int(n) for c, n in zip(X.columns, counts.tolist(), strict=True) if n < 2}
        if sparse:  # Prophet refused them with a bare ValueError naming no feature
            raise ModelError(
                f"ProphetDetector: some features have fewer than 2 values in the {len(X)} training rows from "
                f"{X.index[0]} to {X.index[-1]}, too few to fit a trend (feature: values): {sparse}; fix them at the "
                "source, widen the training window, or leave them out of the job's features"
            )
        prophet, _ = _prophet()
        self.lookback_ = 1  # forecasts depend on timestamps only; no history is needed
        self.models_ = []
        def new_model() -> Any:
            model = prophet.Prophet(
                growth=params.growth,
                interval_width=params.interval_width,
                changepoint_prior_scale=params.changepoint_prior_scale,
                n_changepoints=params.n_changepoints,
                changepoint_range=params.changepoint_range,
                seasonality_prior_scale=params.seasonality_prior_scale,
                seasonality_mode=params.seasonality_mode,
                daily_seasonality=params.daily_seasonality,
                weekly_seasonality=params.weekly_seasonality,
                yearly_seasonality=params.yearly_seasonality,
                uncertainty_samples=0,  # the interval is computed in closed form (see the class doc)
            )
            if params.holidays_country:
                model.add_country_holidays(country_name=params.holidays_country)
            return model

        def optimise(frame: pd.DataFrame, column: Any, init: dict[str, Any]) -> Any:
            # Prophet's own fallback to Newton when L-BFGS stops abnormally (common where a series
            # varies little around a large level, such as a counter near 1e9), done here: Prophet
            # announced it with a cmdstanpy ERROR and a warning, both naming no feature, in the
            # log of a training that then succeeded.
            for algorithm in ("LBFGS", "Newton"):
                model = new_model()
                model.stan_backend.set_options(newton_fallback=False)
                try:
                    return model.fit(frame, algorithm=algorithm, **init)
                except RuntimeError as exc:
                    if algorithm == "Newton":
                        raise
                    log.info("prophet: L-BFGS stopped on feature %s (%s); fitting it with Newton", column, _stan_reason(exc))

        def fit(rows: pd.DataFrame, starts: list[Any] | None, why: str) -> list[Any]:
            models = []
            for f, column in enumerate(rows.columns):
                frame = _prophet_frame(rows.index, params.time_zone, rows[column].to_numpy())
                model = None
                if starts is not None:
                    from prophet.utilities import warm_start_params

                    try:
                        model = optimise(frame, column, {"init": warm_start_params(starts[f])})
                    except (RuntimeError, ValueError) as exc:
                        # "auto" seasonalities depend on the span of the data, so the starting
                        # parameters may not fit this window's model: then that feature fits cold.
                        log.warning("prophet: cannot warm-start feature %s from %s (%s); fitting it cold", column, why, exc)
                try:
                    model = optimise(frame, column, {}) if model is None else model
                except (RuntimeError, ValueError) as exc:  # Stan's failure named neither the feature nor the rows
                    raise ModelError(
                        f"ProphetDetector: Stan could not fit feature {column!r} on the {len(rows)} rows from "
                        f"{rows.index[0]} to {rows.index[-1]} (L-BFGS, then Newton): {_stan_reason(exc)}. Look for "
                        "values far out of line with the rest of the feature, fix or leave them out, or use another model"
                    ) from exc
                models.append(model)
            return models

        self.models_ = fit(X, previous, "the champion")
        raw = _outside(X.to_numpy(), *self._forecast(X.index))
        held_back = held_back_rows(len(X), _MIN_TRAINING_ROWS)
        if held_back:
            head, tail = X.iloc[:-held_back], X.iloc[-held_back:]
            # A feature with fewer than 2 values before the held-back rows (a sensor added lately)
            # has no model to forecast them from: it calibrates on its fitted rows alone.
            fitted = np.flatnonzero(np.isfinite(head.to_numpy()).sum(axis=0) >= 2)
            out_of_sample = np.full(tail.shape, np.nan)
            if fitted.size:
                # Started from the whole window's optimum only to converge sooner: the MAP fit on the
                # head is the head's own, so the tail stays out of sample.
                starts = [self.models_[f] for f in fitted]
                expected, half = self._forecast(tail.index, fit(head.iloc[:, fitted], starts, "the whole window's fit"))
                out_of_sample[:, fitted] = _outside(tail.iloc[:, fitted].to_numpy(), expected, half)
            raw = np.vstack([raw, out_of_sample])
        self.calibration_rows_ = held_back
        self.calibrators_ = [ScoreCalibrator().fit(raw[:, f]) for f in range(raw.shape[1])]
        return self._calibrate(raw)

    def _forecast(self, index: pd.DatetimeIndex, models: list[Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``yhat`` and the half-width of the interval, per row and feature (of ``models``, else the fitted ones)."""
        ds = _prophet_frame(index, self.time_zone)["ds"]
        # Prophet returns its forecast sorted by ds, and local wall-clock times repeat when the
        # clocks go back (01:45 EDT, then 01:00 EST for quarter-hourly rows): each distinct time
        # is forecast once and the rows take theirs, in their own order.
        times, rows = np.unique(ds.to_numpy(), return_inverse=True)
        frame = pd.DataFrame({"ds": times})
        z = float(norm.ppf(0.5 + self.interval_width / 2))
        expected, half = [], []
        for model in self.models_ if models is None else models:
            forecast = model.predict(frame)
            expected.append(forecast["yhat"].to_numpy()[rows])
            half.append(z * _predictive_sd(model, forecast)[rows])
        return np.column_stack(expected), np.column_stack(half)

    def _calibrate(self, raw: np.ndarray) -> np.ndarray:
        return np.column_stack([c.transform(raw[:, f]) for f, c in enumerate(self.calibrators_)])

    def _detect(self, X: pd.DataFrame, history: pd.DataFrame | None) -> Detection:
        values = X.to_numpy()
        if not len(X):
            empty = np.zeros(values.shape)
            return make_detection(X.index, self._feature_list(), values, empty, empty, empty, empty, empty.astype(bool))
        expected, half = self._forecast(X.index)
        score = self._calibrate(_outside(values, expected, half))
        beyond = np.array([float(c.inverse(self.threshold_)) for c in self.calibrators_])
        return make_detection(
            X.index,
            self._feature_list(),
            values,
            expected,
            half + beyond * 2 * half,
            score,
            score,
            score >= self.threshold_,
        )

    def summary(self) -> dict[str, Any]:
        return {**super().summary(), "calibration_rows": self.calibration_rows_}

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray], dict[str, bytes]]:
        _, serialize = _prophet()
        files = {f"prophet_{f}.json": serialize.model_to_json(m).encode() for f, m in enumerate(self.models_)}
        return {"calibrators_": [c.to_dict() for c in self.calibrators_], "calibration_rows_": self.calibration_rows_}, {}, files

    def _restore(self, state: dict[str, Any], arrays: dict[str, np.ndarray], files: dict[str, bytes]) -> None:
        _, serialize = _prophet()
        names = [f"prophet_{f}.json" for f in range(len(state["calibrators_"]))]
        missing = [name for name in names if name not in files]
        if missing:
            raise ModelError(f"the prophet artifact lacks {missing}; it was not written by to_files(): retrain")
        self.models_ = []
        for name in names:
            try:
                self.models_.append(serialize.model_from_json(files[name].decode()))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                # A damaged file raised JSONDecodeError, UnicodeDecodeError or KeyError: 'seasonality_mode',
                # naming neither the file nor what to do.
                raise ModelError(
                    f"cannot load the prophet model from {name}: {type(exc).__name__}: {exc}; the artifact is damaged: retrain"
                ) from exc
        self.calibrators_ = [ScoreCalibrator.from_dict(c) for c in state["calibrators_"]]
        self.calibration_rows_ = int(state.get("calibration_rows_", 0))  # absent before held-back calibration


def _check_country(country: str) -> None:
    """Refuse a country whose holidays Prophet cannot model, as a parameter error: the pattern of
    :class:`ProphetParams` lets any code through, and Prophet refused it only inside the fit, with
    an AttributeError that named neither the parameter nor the known codes."""
    try:
        _prophet()
        import holidays
        from prophet.make_holidays import get_country_holidays_class
    except (ImportError, MissingDependencyError):
        return  # the fit says which package to install
    try:
        # Built once, as the fit would: the holidays package also exports calendar constants
        # (MON, JAN, SUN...) that pass the code's pattern and Prophet's lookup, then failed the
        # fit with "'int' object is not callable". Built for no year: for 2000, India's warned at
        # every check that its holidays are "available only from 2001".
        get_country_holidays_class(country)()
    except (AttributeError, TypeError):
        raise ConfigError(
            f"invalid ProphetDetector ('prophet') parameters: parameter 'holidays_country': no public holidays are "
            f"known for it; choose one of {_two_letter_codes(holidays)} (got {country!r}). Fix them in the job's model settings."
        ) from None


def _stan_reason(exc: Exception) -> str:
    """The last line of a Stan failure (cmdstanpy's message holds the whole console log)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip(" )")]
    return lines[-1] if lines else type(exc).__name__


def _prophet_frame(index: pd.DatetimeIndex, zone: str, values: np.ndarray | None = None) -> pd.DataFrame:
    """Prophet's frame of the UTC ``index`` on the wall clock of ``zone``.

    Prophet refuses time-zone-aware dates and reads days, hours and holidays off naive ones.
    A UTC instant has exactly one local time, so converting from UTC neither fails nor drops a
    row: the hour skipped when the clocks go forward simply has no rows, and the hour repeated
    when they go back holds the rows of both (Prophet fits repeated ds like any others).
    """
    frame = pd.DataFrame({"ds": index.tz_convert(zone).tz_localize(None)})
    if values is not None:
        frame["y"] = values
    return frame


def _predictive_sd(model: Any, forecast: pd.DataFrame) -> np.ndarray:
    """Standard deviation of Prophet's predictive distribution at each forecast row.

    Observation noise ``sigma_obs``; beyond the history (scaled time t > 1), Prophet samples new
    changepoints as often as in the history (S per unit of scaled time) with Laplace-distributed
    slope changes of scale b (the mean fitted |delta|): the trend's variance at t is then
    ``S * 2 b^2 (t - 1)^3 / 3``. Multiplicative seasonality scales the trend's part.
    """
    params = model.params
    sigma = float(np.asarray(params["sigma_obs"]).ravel()[0])
    t = ((forecast["ds"] - model.start) / model.t_scale).to_numpy(dtype="float64")
    ahead = np.maximum(t - 1.0, 0.0)
    variance = np.full(len(t), sigma**2)
    if model.growth == "linear" and len(model.changepoints_t):
        b = float(np.mean(np.abs(np.asarray(params["delta"]).ravel()))) + 1e-8
        trend_variance = len(model.changepoints_t) * 2 * b**2 * ahead**3 / 3
        factor = 1.0 + forecast["multiplicative_terms"].to_numpy() if model.seasonality_mode == "multiplicative" else 1.0
        variance = variance + trend_variance * np.square(factor)
    return np.sqrt(variance) * model.y_scale


def _outside(values: np.ndarray, expected: np.ndarray, half: np.ndarray) -> np.ndarray:
    """Distance outside the interval in interval widths; 0 inside; NaN where missing."""
    width = np.maximum(2 * half, 1e-12)
    return np.maximum(np.abs(values - expected) - half, 0.0) / width
