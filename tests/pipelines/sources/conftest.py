from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import pytest

from pipelines.config import JobConfig, parse_job

MakeJob = Callable[..., JobConfig]


@pytest.fixture
def make_job() -> MakeJob:
    """A job watching ``value`` per ``host`` with timestamps in ``ts``, reading ``source``."""

    def make(source: dict[str, Any]) -> JobConfig:
        return parse_job(
            {
                "name": "cpu_load",
                "source": source,
                "timestamp": "ts",
                "frequency": "1h",
                "dimensions": ["host"],
                "features": ["value"],
                "model": {"kind": "iforest"},
            }
        )

    return make


@pytest.fixture
def hourly() -> pd.DataFrame:
    """Six hourly rows as text timestamps, with a column the job does not use."""
    return pd.DataFrame(
        {
            "note": [f"n{i}" for i in range(6)],
            "ts": [f"2024-01-01 {hour:02d}:00:00" for hour in range(6)],
            "host": ["a", "b"] * 3,
            "value": [float(i) for i in range(6)],
        }
    )
