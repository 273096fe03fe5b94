"""Parameter models of every detector, kept apart from the detectors themselves.

Job files are validated while Airflow parses DAG files; these models import only pydantic,
so that validation never pulls scikit-learn or pandas into the parser.
Each detector checks its own parameters in ``fit`` through the same model.
"""

from __future__ import annotations

import re
import sys
from difflib import get_close_matches
from functools import cache
from numbers import Real
from typing import Annotated, Any, Literal, get_args, get_origin
from zoneinfo import available_timezones

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, ValidationInfo, field_validator, model_validator

from pipelines.durations import parse_duration


class DetectorParams(BaseModel):
    # Infinite or NaN numbers pass bounds like gt=0 (min_scale: inf muted seasonal_mad; bandwidth:
    # nan muted mset); no parameter has a use for them.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_numbers_or_booleans_as_text(cls, value: Any, info: ValidationInfo) -> Any:
        # Detectors keep their parameters as given (scikit-learn's convention) and compute with
        # them, while pydantic reads the text "24" as 24 and "no" as False: a quoted window then
        # failed deep inside a fit, and calendar: "no" turned the calendar on. Text is taken only
        # where the parameter is text (a duration, a country) or one of its named choices.
        if info.field_name is None or not isinstance(value, (str, bool, int, float)):
            return value
        text, choices, others = _accepted(cls.model_fields[info.field_name].annotation)
        if isinstance(value, bool):
            # pydantic takes true for 1 in a number (lags: true became one lag): a slip, not a count.
            if others and bool not in others:
                raise ValueError(f"must be a number, not {str(value).lower()}")
            return value
        if not isinstance(value, str):
            return _number_of_the_right_kind(value, text, choices, others)
        if text or value in choices or not others:  # a wrong choice alone: pydantic lists the choices
            return value
        kinds = [repr(choice) for choice in choices] + [
            kind for kind, types in (("a number", (int, float)), ("true or false", (bool,))) if others & set(types)
        ]
        raise ValueError(f"must be {' or '.join(kinds)} written without quotes, not the text {value!r}")


def _number_of_the_right_kind(value: float, text: bool, choices: tuple[str, ...], others: set[type]) -> float:
    """``value`` unless it is a number where the parameter takes none, or a float where it takes
    only whole numbers."""
    # The parameters that take a whole number or text (season, rest) take a duration as text.
    named = [repr(choice) for choice in choices] + (["a duration such as '1d'"] if text else [])
    if others and not others & {int, float}:
        # pydantic takes 1 for true: Prophet's daily_seasonality: 1 (its own API reads a number as
        # a Fourier order) silently became the default seasonality.
        raise ValueError(f"must be {' or '.join([*named, 'true or false'])}, not the number {value!r}")
    if isinstance(value, float) and int in others and float not in others:
        # pydantic takes 24.0 for 24, but detectors compute with the value as given: a window of
        # 24.0 failed inside pandas' rolling at scoring, lags of 2.0 and value_bits of 3.0 inside Python.
        hint = f": write {int(value)}, without the decimal point" if value.is_integer() else ""
        raise ValueError(f"must be {' or '.join([*named, 'a whole number'])}, not {value!r}{hint}")
    return value


def _accepted(annotation: Any) -> tuple[bool, tuple[str, ...], set[type]]:
    """What a parameter of type ``annotation`` takes: any text, its named text choices, and
    its other scalar types (int, float, bool)."""
    origin = get_origin(annotation)
    if annotation is str or origin in (list, tuple):  # items of a list or pair are checked by type
        return True, (), set()
    if origin is Literal:
        return False, tuple(a for a in get_args(annotation) if isinstance(a, str)), set()
    if annotation in (int, float, bool):
        return False, (), {annotation}
    text, choices, others = False, (), set()
    for arg in get_args(annotation):
        arg_text, arg_choices, arg_others = _accepted(arg)
        text, choices, others = text or arg_text, choices + arg_choices, others | arg_others
    return text, choices, others


#: What every random generator used takes (scikit-learn's and NumPy's refuse a negative seed or
#: one of 2**32 or more): such a seed passed the job file and failed every fit.
_Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
#: A bound of a range: true read as 1 and "100" as 100, a slip hidden in the job file.
_Bound = Annotated[float, Strict()]
#: Magnitudes the detectors take as infinite, no measurement: their squares overflow float64
#: (see ``base._TOO_LARGE``).
LARGEST_VALUE = sys.float_info.max ** 0.5


class _WallClock(DetectorParams):
    """Parameters of a detector that follows a local clock (seasons, holidays)."""

    time_zone: str = Field(
        "UTC",
        description=(
            "IANA time zone (e.g. 'Europe/Berlin') whose wall-clock time the seasons, calendar parts and "
            "holidays follow across daylight-saving changes; the rows keep their UTC timestamps."
        ),
    )

    @field_validator("time_zone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        return known_time_zone(value)


class IsolationForestParams(_WallClock):
    """Isolation Forest on windowed features (value, change, deviation from a rolling median)."""

    n_estimators: int = Field(200, ge=10, le=5000, description="Number of trees.")
    max_samples: int | Literal["auto"] = Field("auto", description="Rows drawn to build each tree.")
    max_features: float = Field(1.0, gt=0.0, le=1.0, description="Share of features drawn per tree.")
    window: int = Field(24, ge=2, le=10_000, description="Rows in the rolling window of the features.")
    lags: int = Field(0, ge=0, le=48, description="Past values of each feature added as features.")
    calendar: bool = Field(True, description="Add hour of day and day of week (timestamped data only).")
    random_state: _Seed = Field(0, description="Seed; a fixed seed makes training reproducible.")

    @field_validator("max_samples")
    @classmethod
    def _positive_samples(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 2:
            raise ValueError("must be 'auto' or an integer >= 2")
        return value


class SeasonalMADParams(_WallClock):
    """Seasonal median profile plus a rolling level, with a robust (MAD) scale."""

    season: int | str | None = Field(
        "1d",
        description=(
            "Length of one season: a duration ('1d', '1w') for timestamped data, a number of rows, "
            "or null for no seasonality."
        ),
    )
    level_window: int = Field(
        24, ge=1, le=100_000, description="Rows of recent residuals whose median tracks level changes."
    )
    min_scale: float = Field(1e-9, gt=0, description=(
        "Floor of the robust scale, for flat series, as a share of the series' typical magnitude "
        "(median absolute training value)."
    ))

    @field_validator("season")
    @classmethod
    def _season_is_duration_or_rows(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, str):
            parse_duration(value)
        elif isinstance(value, int) and value < 2:
            raise ValueError("a season in rows must be at least 2")
        return value


#: Widest bandwidth of MSET's kernel, in standard units. Memory states of a signal's whole operating
#: range lie within some hundreds of units of each other, so a kernel this wide already weighs them
#: all alike (states 1,000 units apart within 5e-7 of each other) and every estimate is the memory's
#: mean: a wider one is the same flat kernel, given by a slip (1e9 for 1e-9) rather than by choice.
MAX_MSET_BANDWIDTH = 1e6


class MSETParams(DetectorParams):
    """Multivariate state estimation: every signal estimated from the others by similarity to a
    memory of training states, residuals judged by a sequential probability ratio test."""

    memory_size: int = Field(256, ge=8, le=5000, description="Training states kept in the memory matrix.")
    lags: int | Literal["auto"] = Field(
        "auto",
        description=(
            "Past values of every signal added to the state; 'auto' is 0 with two or more signals "
            "and 3 with one (a lone signal is then estimated from its own recent past)."
        ),
    )
    bandwidth: float | Literal["auto"] = Field(
        "auto", description="Width of the similarity kernel in robust standard units; 'auto' picks it on training data."
    )
    sprt_window: int = Field(12, ge=1, le=10_000, description="Rows of evidence the sequential test accumulates.")
    drift: float = Field(1.0, gt=0.0, le=20.0, description="Mean shift (in residual sigmas) the test looks for.")
    variance_ratio: float = Field(4.0, gt=1.0, le=100.0, description="Variance growth the test looks for.")
    max_missing: float = Field(0.5, ge=0.0, lt=1.0, description="Signals missing more often than this are dropped.")

    @field_validator("lags")
    @classmethod
    def _lags_in_range(cls, value: int | str) -> int | str:
        if isinstance(value, int) and not 0 <= value <= 48:
            raise ValueError("must be 'auto' or an integer from 0 to 48")
        return value

    @field_validator("bandwidth", mode="before")
    @classmethod
    def _bandwidth_in_range(cls, value: Any) -> Any:
        # Before pydantic's own checks: they said of nan and inf only "should be a finite number;
        # should be 'auto'", not which numbers would do; and any positive number passed (1e200: a
        # flat kernel, no signal estimated from the others at all).
        if isinstance(value, Real) and not isinstance(value, bool) and not 0 < value <= MAX_MSET_BANDWIDTH:
            raise ValueError(
                f"must be 'auto' or a positive number up to {MAX_MSET_BANDWIDTH:.0e} (a finite number: the kernel's width "
                "in robust standard units); 'auto' picks it on the training data"
            )
        return value


#: What ``holidays_country`` takes: a code of the holidays package (alpha-2 or alpha-3) or of a market (ECB).
_COUNTRY_CODE = r"^[A-Z]{2,3}$"


class ProphetParams(_WallClock):
    """Prophet per feature; an anomaly is an actual outside the forecast interval."""

    interval_width: float = Field(0.95, ge=0.5, le=0.999, description="Coverage of the forecast interval.")
    changepoint_prior_scale: float = Field(0.05, gt=0.0, le=10.0, description="Flexibility of the trend.")
    n_changepoints: int = Field(25, ge=0, le=500, description="Potential trend changepoints, spread over the history.")
    changepoint_range: float = Field(
        0.8, gt=0.0, le=1.0, description="Share of the training rows, from the start, where the trend may change."
    )
    seasonality_prior_scale: float = Field(10.0, gt=0.0, le=100.0, description="Flexibility of the seasonalities.")
    seasonality_mode: Literal["additive", "multiplicative"] = "additive"
    daily_seasonality: bool | Literal["auto"] = "auto"
    weekly_seasonality: bool | Literal["auto"] = "auto"
    yearly_seasonality: bool | Literal["auto"] = "auto"
    holidays_country: str | None = Field(
        None, pattern=_COUNTRY_CODE, description="Country code whose public holidays are modelled, e.g. 'US'."
    )
    growth: Literal["linear", "flat"] = "linear"

    @field_validator("holidays_country", mode="before")
    @classmethod
    def _code_not_name(cls, value: Any) -> Any:
        # Before the pattern: Prophet's own API calls it country_name, and "Germany" or "us" was
        # refused with only "String should match pattern '^[A-Z]{2,3}$'", no code nor where to find one.
        if not isinstance(value, str) or re.fullmatch(_COUNTRY_CODE, value):
            return value
        what = f"should match pattern '{_COUNTRY_CODE}', a country code such as 'US' or 'DE'"
        try:
            import holidays
        except ImportError:
            raise ValueError(what) from None
        code = _country_codes(holidays).get(re.sub(r"[^a-z]", "", value.lower()))
        if code is not None:
            raise ValueError(f"{what}: write {code!r} for {value}")
        raise ValueError(f"{what}; choose one of {_two_letter_codes(holidays)}")

    @field_validator("holidays_country")
    @classmethod
    def _known_country(cls, value: str | None) -> str | None:
        # The pattern lets any code through; an unknown one failed only at the fit, hours after the
        # job file was accepted. Checked here as Prophet looks it up (prophet.make_holidays), through
        # the holidays package alone (pure Python), so the parse of DAG files imports no Prophet.
        if value is None:
            return value
        try:
            import holidays
        except ImportError:  # without the prophet extra the fit names the package to install
            return value
        # Callable, as Prophet builds it: the package also exports calendar constants (MON = 0,
        # JAN = 1) whose names pass the pattern and failed the fit with "'int' object is not callable".
        if not callable(getattr(holidays, {"TU": "TR"}.get(value, value), None)):
            raise ValueError(f"no public holidays are known for it; choose one of {_two_letter_codes(holidays)}")
        return value


def _two_letter_codes(holidays: Any) -> str:
    return ", ".join(sorted(code for code in holidays.list_supported_countries() if len(code) == 2))


def _country_codes(holidays: Any) -> dict[str, str]:
    """Country codes of the holidays package by folded name, alias or code ('unitedstates',
    'usa', 'us' -> 'US', or 'USA' for its own alpha-3 code); empty if its registry moved."""
    codes: dict[str, str] = {}
    for module, (class_name, alpha2, alpha3, *aliases) in getattr(getattr(holidays, "registry", None), "COUNTRIES", {}).items():
        for name in (module, class_name, *aliases):
            codes.setdefault(re.sub(r"[^a-z]", "", name.lower()), alpha2)
        codes[alpha2.lower()], codes[alpha3.lower()] = alpha2, alpha3
    return codes


def known_time_zone(value: str) -> str:
    """``value`` if it is an IANA time zone name, else a ValueError with the closest names.

    Checked with the job file rather than at the fit: an unknown zone would otherwise fail inside
    pandas hours after the job file was accepted. 'localtime' is the worker's own zone, not a
    name: the same job would model another day on another machine.
    """
    zones = _time_zones()
    if value in zones:
        return value
    folded = {zone.lower(): zone for zone in zones}
    key = value.strip().lower()
    close = [folded[key]] if key in folded else get_close_matches(value, zones, n=3, cutoff=0.85)
    hint = f" (did you mean {' or '.join(repr(zone) for zone in close)}?)" if close else ""
    raise ValueError(f"not an IANA time zone name such as 'America/New_York', 'Europe/Paris' or 'UTC'{hint}")


@cache
def _time_zones() -> frozenset[str]:
    return frozenset(available_timezones() - {"localtime"})


class LSTMParams(DetectorParams):
    """LSTM forecaster (PyTorch, CPU) on sliding windows; needs the `lstm` extra."""

    window: int = Field(24, ge=2, le=2000, description="Rows the forecaster reads before each row.")
    hidden_size: int = Field(32, ge=2, le=1024)
    num_layers: int = Field(1, ge=1, le=4)
    max_epochs: int = Field(40, ge=1, le=1000)
    patience: int = Field(5, ge=1, le=100, description="Epochs without improvement before stopping.")
    learning_rate: float = Field(0.005, gt=0.0, le=1.0)
    batch_size: int = Field(64, ge=1, le=65_536)
    random_state: _Seed = Field(0, description="Seed; a fixed seed makes training reproducible.")


class LevelShiftParams(SeasonalMADParams):
    """Seasonal median/MAD baseline scored by a sequential test that accumulates sustained shifts."""

    shift_window: int = Field(24, ge=1, le=10_000, description="Rows of evidence the sequential test accumulates.")
    drift: float = Field(1.5, gt=0.0, le=20.0, description="Shift size (robust scales) the test is tuned to.")


class ContextParams(DetectorParams):
    """Contextual sequence memory (after CAD OSE): how new is each step's quantised value in the
    context of the steps before it."""

    value_bits: int = Field(3, ge=1, le=8, description="Bits of the quantised value: 2**value_bits levels.")
    margin: float = Field(
        0.0, ge=0.0, le=10.0,
        description=(
            "Room left below and above the range of the values seen, in ranges, inside the levels "
            "(the levels widen by themselves when a value leaves them)."
        ),
    )
    rest: int | str = Field(
        "12h",
        description=(
            "How long scores stay 0 after a raw score of rest_above or more: a duration ('12h') for "
            "timestamped data, or a number of rows (0: no rest); a value beyond every level is scored even then."
        ),
    )
    rest_above: float = Field(0.75, gt=0.0, le=1.0, description="Raw score that starts a rest.")
    max_left_facts: int = Field(7, ge=1, le=64, description="Largest overlap a derived context may have.")
    max_active: int = Field(15, ge=1, le=256, description="Most active contexts carried to the next step.")
    value_range: tuple[_Bound, _Bound] | None = Field(
        None,
        description=(
            "Values the levels span, when known in advance (e.g. [0, 100] for a percentage): used "
            "as given, for every feature, instead of the training range widened by margin; they still widen "
            "if a value leaves them."
        ),
    )

    widen_headroom: float = Field(
        0.25, ge=0.0, le=10.0,
        description=(
            "When a value leaves the levels, how far past it the new levels reach, in ranges: "
            "room for the next values of a new level, each of which would otherwise widen them again."
        ),
    )
    warm_start: bool = Field(
        False,
        description=(
            "Retraining continues the serving model's memory (cold when the new rows leave its levels); "
            "off, each training starts a fresh memory on the training window."
        ),
    )

    @model_validator(mode="before")
    @classmethod
    def _rest_rows_renamed(cls, values: Any) -> Any:
        if isinstance(values, dict) and "rest_rows" in values:
            raise ValueError(
                f"'rest_rows' is now 'rest' (a duration such as '12h', or a number of rows): "
                f"write rest: {values['rest_rows']!r} to keep {values['rest_rows']!r} rows"
            )
        return values

    @field_validator("rest")
    @classmethod
    def _rest_is_duration_or_rows(cls, value: int | str) -> int | str:
        if isinstance(value, str):
            parse_duration(value)
        elif value < 0:
            raise ValueError("a rest in rows must be 0 (no rest) or more")
        return value

    @field_validator("value_range")
    @classmethod
    def _increasing_range(cls, value: tuple[float, float] | None) -> tuple[float, float] | None:
        if value is not None and not value[0] < value[1]:
            raise ValueError("must be [low, high] with low < high")
        if value is not None and max(map(abs, value)) >= LARGEST_VALUE:
            # A span past float64's largest number ([-1e308, 1e308]) made every level NaN and the
            # fit crashed; the detectors take values that large as infinite anyway.
            raise ValueError(f"bounds must lie within +-{LARGEST_VALUE:.3g}: larger values are taken as infinite")
        return value


#: What ``model: auto`` tries, cheapest first.
AUTO_CANDIDATES = ("seasonal_mad", "level_shift", "iforest", "context", "mset", "prophet", "lstm")
_Candidate = Literal["seasonal_mad", "level_shift", "iforest", "context", "mset", "prophet", "lstm"]


class AutoParams(DetectorParams):
    """Chooses the detector per series by how well each finds anomalies planted in held-back data."""

    candidates: list[Literal["seasonal_mad", "level_shift", "iforest", "context", "mset", "prophet", "lstm"]] | None = Field(
        None, min_length=1, description="Detector kinds to try; null tries all."
    )
    holdout_fraction: float = Field(0.25, ge=0.1, le=0.5, description="Share of training rows held back.")
    random_state: _Seed = Field(0, description="Seed of the first planting of anomalies.")
    plantings: int = Field(
        5, ge=1, le=50, description="Times anomalies are planted in the held-back rows; candidates rank by mean event F1."
    )
    prefer: Literal["seasonal_mad", "level_shift", "iforest", "context", "mset", "prophet", "lstm"] | None = Field(
        "context",
        description="Candidate kept unless another finds the planted anomalies clearly better "
        "(a one-sided paired t-test over the plantings at 5 %); null: the best mean F1 wins.",
    )
    stretches: int = Field(
        3, ge=1, le=5,
        description="Held-back stretches, latest first (a rolling origin): another candidate replaces the preferred one "
        "only if clearly better on each.",
    )
    candidate_params: dict[_Candidate, dict[str, Any]] | None = Field(
        None,
        description="Parameters of candidates by kind, e.g. {prophet: {time_zone: America/New_York, holidays_country: US}}; "
        "a candidate not named takes its defaults.",
    )

    @model_validator(mode="after")
    def _candidate_params_are_theirs(self) -> AutoParams:
        # Checked here, with the job file: a candidate's parameter misspelt or out of range would
        # otherwise only skip that candidate at every training, its reason buried in the trials.
        problems = []
        for kind, params in (self.candidate_params or {}).items():
            if self.candidates is not None and kind not in self.candidates:
                problems.append(
                    f"candidate_params.{kind}: {kind} is not among the candidates {self.candidates}: add it to them, "
                    "or remove its parameters"
                )
                continue
            try:
                MODEL_PARAMS[kind](**params)
            except ValidationError as exc:
                known = ", ".join(sorted(MODEL_PARAMS[kind].model_fields))
                for err in exc.errors():
                    where = ".".join(["candidate_params", kind, *map(str, err["loc"])])
                    if err["type"] == "extra_forbidden":
                        problems.append(f"{where}: unknown parameter (check its spelling; {kind}'s parameters are {known})")
                    else:
                        message, given = err["msg"].removeprefix("Value error, "), repr(err.get("input"))
                        problems.append(f"{where}: {message}" + ("" if given in message else f" (got {given})"))
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @model_validator(mode="after")
    def _candidates_and_preference_agree(self) -> AutoParams:
        if self.candidates is None:
            return self
        repeated = sorted({kind for kind in self.candidates if self.candidates.count(kind) > 1})
        if repeated:
            raise ValueError(f"candidates name {', '.join(repeated)} more than once; list each kind once")
        # The default preference (context) simply does not apply when context is left out; another
        # one left out of the candidates is a slip. (Whether it was written cannot be told: a
        # detector hands every parameter over, defaults included.)
        default = type(self).model_fields["prefer"].default
        if self.prefer not in (None, default) and self.prefer not in self.candidates:
            raise ValueError(
                f"prefer {self.prefer!r} is not among the candidates {self.candidates}: add it to them, or set prefer: null"
            )
        return self


MODEL_PARAMS: dict[str, type[DetectorParams]] = {
    "auto": AutoParams,
    "context": ContextParams,
    "iforest": IsolationForestParams,
    "level_shift": LevelShiftParams,
    "lstm": LSTMParams,
    "mset": MSETParams,
    "prophet": ProphetParams,
    "seasonal_mad": SeasonalMADParams,
}
