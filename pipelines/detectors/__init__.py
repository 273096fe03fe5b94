"""Anomaly detectors and their registry: a model ``kind`` in a job file names one of ``DETECTORS``.

Job files are validated while Airflow parses DAG files, through :mod:`pipelines.detectors.params`,
which imports this package first: so the detectors (pandas, scikit-learn) are imported only when
``DETECTORS``, ``BaseDetector``, ``Detection`` or a function below is first used.
"""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING, Any

from pipelines.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from pipelines.detectors.base import BaseDetector, Detection

__all__ = ["DETECTORS", "BaseDetector", "Detection", "load_detector", "make_detector"]


@cache
def _registry() -> dict[str, type[BaseDetector]]:
    from pipelines.detectors.auto import AutoDetector
    from pipelines.detectors.context import ContextDetector
    from pipelines.detectors.iforest import IsolationForestDetector
    from pipelines.detectors.level_shift import LevelShiftDetector
    from pipelines.detectors.lstm import LSTMDetector
    from pipelines.detectors.mset import MSETDetector
    from pipelines.detectors.prophet import ProphetDetector
    from pipelines.detectors.seasonal_mad import SeasonalMADDetector

    return {
        "auto": AutoDetector,
        "context": ContextDetector,
        "iforest": IsolationForestDetector,
        "level_shift": LevelShiftDetector,
        "lstm": LSTMDetector,
        "mset": MSETDetector,
        "prophet": ProphetDetector,
        "seasonal_mad": SeasonalMADDetector,
    }


def __getattr__(name: str) -> Any:
    if name == "DETECTORS":
        return _registry()
    if name in ("BaseDetector", "Detection"):
        from pipelines.detectors import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _detector_class(kind: str) -> type[BaseDetector]:
    detectors = _registry()
    if kind not in detectors:
        raise ConfigError(f"unknown model kind {kind!r}; choose one of {', '.join(sorted(detectors))}")
    return detectors[kind]


def make_detector(
    kind: str,
    params: dict[str, Any],
    *,
    threshold_kind: str = "contamination",
    threshold_value: float = 0.005,
) -> BaseDetector:
    """An unfitted detector of ``kind``; its parameters are checked now (and again in ``fit``)."""
    cls = _detector_class(kind)
    allowed = set(cls().get_params()) - {"threshold_kind", "threshold_value"}
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise ConfigError(
            f"unknown parameters {unknown} for model {kind!r}; its parameters are {', '.join(sorted(allowed))}"
        )
    detector = cls(**params, threshold_kind=threshold_kind, threshold_value=threshold_value)
    detector._check_params()
    return detector


def load_detector(kind: str, files: dict[str, bytes]) -> BaseDetector:
    """The fitted detector stored by ``to_files()`` of a ``kind`` detector."""
    return _detector_class(kind).from_files(files)
