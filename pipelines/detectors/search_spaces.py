"""What ``<job>__tune`` searches: per detector kind, each tuned parameter and its range.

Plain data, importing only the parameter models: job files are checked against these spaces
while Airflow parses DAG files, and :mod:`pipelines.tuning` turns them into Optuna
distributions. Every range lies inside what :mod:`pipelines.detectors.params` accepts (both ends of
every range are checked when this module is imported); parameters left out (seeds, floors, ``calendar`` and the
like) keep the job's value or the detector's default.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pipelines.detectors.params import AUTO_CANDIDATES, MODEL_PARAMS


@dataclass(frozen=True)
class FloatRange:
    """Numbers from ``low`` to ``high``; sampled on a log scale when ``log``."""

    low: float
    high: float
    log: bool = False

    def _kind_ok(self, value: Any) -> bool:
        return isinstance(value, int | float)

    def contains(self, value: Any) -> bool:
        return self._kind_ok(value) and not isinstance(value, bool) and self.low <= value <= self.high

    def describe(self) -> str:
        return f"{self.low:g}–{self.high:g}{' (log)' if self.log else ''}"


@dataclass(frozen=True)
class IntRange(FloatRange):
    """Integers from ``low`` to ``high``."""

    def _kind_ok(self, value: Any) -> bool:
        return isinstance(value, int)

    def describe(self) -> str:
        return "integer " + super().describe()


@dataclass(frozen=True)
class Choice:
    values: tuple[Any, ...]

    def contains(self, value: Any) -> bool:
        # bool is an int in Python: True must not match a choice of 1.
        return any(value == v and type(value) is type(v) for v in self.values)

    def describe(self) -> str:
        return "one of " + ", ".join("null" if v is None else str(v) for v in self.values)


Space = IntRange | FloatRange | Choice

_SEASONAL = {"season": Choice(("1d", "1w", None)), "level_window": IntRange(3, 168, log=True)}

#: Kind -> parameter -> range. Documented as a table in docs/MODELS.md ("Tuning").
SEARCH_SPACES: dict[str, dict[str, Space]] = {
    "seasonal_mad": dict(_SEASONAL),
    "level_shift": {
        **_SEASONAL,
        "shift_window": IntRange(4, 96, log=True),
        "drift": FloatRange(0.5, 5.0, log=True),
    },
    "iforest": {
        "n_estimators": IntRange(50, 400, log=True),
        "max_features": FloatRange(0.5, 1.0),
        "window": IntRange(6, 168, log=True),
        "lags": IntRange(0, 6),
    },
    "mset": {
        "memory_size": IntRange(64, 512, log=True),
        "sprt_window": IntRange(3, 48, log=True),
        "drift": FloatRange(0.5, 3.0),
        "variance_ratio": FloatRange(2.0, 10.0, log=True),
    },
    # The memory's resolution (levels), how specific its contexts are, and how long one report
    # mutes the rest of its event. rest_above is left out: it is also the floor of the threshold,
    # so searching it would move the threshold rather than the model. value_bits stops at 4 (16
    # levels): each bit multiplied a trial's time by about 5 (three weeks hourly: 0.8, 4.9, 22 s
    # at 3, 4, 5 bits), and the default is 3.
    "context": {
        "value_bits": IntRange(2, 4),
        "max_left_facts": IntRange(3, 12),
        "max_active": IntRange(8, 32, log=True),
        "rest": Choice(("1h", "6h", "12h", "1d")),
    },
    # Prophet and the LSTM cost seconds per fit: few, coarse dimensions, and every trial counts
    # against tune.timeout.
    "prophet": {
        "changepoint_prior_scale": FloatRange(0.001, 0.5, log=True),
        "seasonality_prior_scale": FloatRange(0.01, 10.0, log=True),
        "interval_width": FloatRange(0.8, 0.99),
    },
    "lstm": {
        "window": IntRange(12, 96, log=True),
        "hidden_size": Choice((16, 32, 64)),
        "max_epochs": IntRange(5, 40),
        "learning_rate": FloatRange(0.001, 0.01, log=True),
    },
}

#: ``auto`` is itself a search over kinds; tuning searches the kinds directly instead.
TUNABLE_KINDS = tuple(kind for kind in AUTO_CANDIDATES if kind in SEARCH_SPACES)


def default_detectors(model_kind: str, model_params: dict[str, Any] | None = None) -> list[str]:
    """What tuning searches when ``tune.detectors`` is not set: the model's kind, or for ``auto``
    its ``candidates`` (every tunable kind when it names none), since a job that left a kind out
    of ``auto`` (a slow or uninstalled one) does not want it tuned either."""
    if model_kind != "auto":
        return [model_kind]
    return list((model_params or {}).get("candidates") or TUNABLE_KINDS)


def restricted_space(kind: str, grid: dict[str, list[Any]]) -> dict[str, Space]:
    """What is searched for ``kind``: exactly the ``grid`` parameters of this kind, with those
    values, when the grid names any (the other parameters keep the job's values, as the grid
    search before Optuna did); else the whole space of the kind."""
    own = {name: Choice(tuple(values)) for name, values in grid.items() if name in SEARCH_SPACES[kind]}
    return own or dict(SEARCH_SPACES[kind])


def check_tune_settings(detectors: list[str], grid: dict[str, list[Any]]) -> None:
    """Raise ``ValueError`` naming the offending kind, parameter or value, and what is allowed."""
    for kind in detectors:
        if kind not in SEARCH_SPACES:
            raise ValueError(
                f"tune.detectors: {kind!r} cannot be tuned; choose among {', '.join(TUNABLE_KINDS)} "
                "(for 'auto' list the kinds to search instead)"
            )
    for name, values in grid.items():
        owners = [kind for kind in detectors if name in SEARCH_SPACES[kind]]
        if not owners:
            raise ValueError(
                f"tune.grid.{name}: no searched detector ({', '.join(detectors)}) tunes {name!r}; "
                f"tunable parameters: {', '.join(sorted({p for k in detectors for p in SEARCH_SPACES[k]}))}"
            )
        if not values:
            raise ValueError(f"tune.grid.{name}: give at least one value")
        for kind in owners:
            space = SEARCH_SPACES[kind][name]
            outside = [v for v in values if not space.contains(v)]
            if outside:
                raise ValueError(
                    f"tune.grid.{name}: {outside} outside the search space of {kind!r} ({space.describe()}); "
                    "use values in that range"
                )


def _check_spaces_fit_params() -> None:
    # Import-time guard: a range the parameter model refuses would fail every trial at fit.
    for kind, space in SEARCH_SPACES.items():
        model = MODEL_PARAMS[kind]
        for name, dist in space.items():
            ends = dist.values if isinstance(dist, Choice) else (dist.low, dist.high)
            for value in ends:
                model(**{name: value})


_check_spaces_fit_params()
