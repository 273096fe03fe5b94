"""Parameter models of every detector, kept apart from the detectors themselves.

Job files are validated while Airflow parses DAG files; these models import only pydantic,
so that validation never pulls scikit-learn or pandas into the parser.
Each detector checks its own parameters in ``fit`` through the same model.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from pipelines.durations import parse_duration


class DetectorParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class IsolationForestParams(DetectorParams):
    """Isolation Forest on windowed features (value, change, deviation from a rolling median)."""

    n_estimators: int = Field(200, ge=10, le=5000, description="Number of trees.")
    max_samples: int | Literal["auto"] = Field("auto", description="Rows drawn to build each tree.")
    max_features: float = Field(1.0, gt=0.0, le=1.0, description="Share of features drawn per tree.")
    window: int = Field(24, ge=2, le=10_000, description="Rows in the rolling window of the features.")
    random_state: int = Field(0, description="Seed; a fixed seed makes training reproducible.")

    @field_validator("max_samples")
    @classmethod
    def _positive_samples(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 2:
            raise ValueError("must be 'auto' or an integer >= 2")
        return value


class SeasonalMADParams(DetectorParams):
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
    min_scale: float = Field(1e-9, gt=0, description="Floor of the robust scale, for flat series.")

    @field_validator("season")
    @classmethod
    def _season_is_duration_or_rows(cls, value: int | str | None) -> int | str | None:
        if isinstance(value, str):
            parse_duration(value)
        elif isinstance(value, int) and value < 2:
            raise ValueError("a season in rows must be at least 2")
        return value


MODEL_PARAMS: dict[str, type[DetectorParams]] = {
    "iforest": IsolationForestParams,
    "seasonal_mad": SeasonalMADParams,
}
