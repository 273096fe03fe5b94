from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest

from pipelines.config import JobConfig, parse_job

MakeJob = Callable[..., JobConfig]


@pytest.fixture
def make_job() -> MakeJob:
    """A job over ``timestamp``, dimension ``region`` and features ``requests``, ``latency_ms``."""

    def make(**overrides: Any) -> JobConfig:
        settings = {
            "name": "web",
            "source": {"kind": "file", "path": "web.csv"},
            "timestamp": "timestamp",
            "frequency": "1h",
            "dimensions": ["region"],
            "features": ["requests", "latency_ms"],
            "model": {"kind": "iforest"},
            **overrides,
        }
        return parse_job(settings)

    return make


@pytest.fixture
def clean_frame() -> pd.DataFrame:
    """Six valid raw rows, as read from a CSV: three hours of the series eu and us."""
    return pd.DataFrame(
        {
            "timestamp": [f"2024-02-01T0{hour}:00:00Z" for hour in (0, 0, 1, 1, 2, 2)],
            "region": ["eu", "us"] * 3,
            "requests": [732, 1869, 701, 1790, 690, 1801],
            "latency_ms": [109.9, 120.4, 111.2, 118.0, 108.7, 121.3],
        }
    )
