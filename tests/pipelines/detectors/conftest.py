"""Synthetic series for the detector tests: an hourly daily cycle plus Gaussian noise."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

TRAIN_DAYS = 21
SCORE_DAYS = 7


def seasonal_frame(
    days: int, seed: int, *, amplitude: float = 3.0, features: tuple[str, ...] = ("a", "b")
) -> pd.DataFrame:
    """``days`` of hourly rows from 2024-01-01 UTC. Feature ``i`` is ``10 * (i + 1)`` plus a
    daily sine of ``amplitude`` peaking at hour ``6 + 3 * i``, plus unit noise (a spike of ``k``
    is ``k`` sigma)."""
    rng = np.random.default_rng(seed)
    index = pd.date_range("2024-01-01", periods=24 * days, freq="h", tz="UTC")
    hours = index.hour.to_numpy()
    return pd.DataFrame(
        {
            name: 10.0 * (i + 1) + amplitude * np.sin(2 * np.pi * (hours - 3 * i) / 24) + rng.normal(size=len(index))
            for i, name in enumerate(features)
        },
        index=index,
    )


@pytest.fixture
def split_series() -> Callable[..., tuple[pd.DataFrame, pd.DataFrame]]:
    """Factory: (training rows, scoring rows right after them) of one synthetic series."""

    def make(seed: int = 0, train_days: int = TRAIN_DAYS, **kwargs) -> tuple[pd.DataFrame, pd.DataFrame]:
        frame = seasonal_frame(train_days + SCORE_DAYS, seed, **kwargs)
        return frame.iloc[: 24 * train_days], frame.iloc[24 * train_days :]

    return make


def spiked(frame: pd.DataFrame, rows: list[int], column: int = 0, size: float = 8.0) -> pd.DataFrame:
    """A copy of ``frame`` with ``size`` added to ``column`` at ``rows``."""
    out = frame.copy()
    out.iloc[rows, column] += size
    return out
