"""A copy of the project's configuration for tests: the demo jobs read the shipped data but write
their models, outputs and SQLite tables under the copy."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def copy_project(base: Path) -> Path:
    """The repo's ``config`` copied under ``base``, and a link to its ``data``."""
    shutil.copytree(REPO / "config", base / "config", dirs_exist_ok=True)
    if not (base / "data").exists():
        (base / "data").symlink_to(REPO / "data")
    return base


@contextmanager
def using_project(base: Path) -> Iterator[Path]:
    """:func:`copy_project`, with the environment pointing at it while the block runs (for
    fixtures of a wider scope than ``monkeypatch``'s)."""
    copy_project(base)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ANOMALY_PIPELINES_BASE_DIR", str(base))
        patch.setenv("ANOMALY_PIPELINES_HOME", str(base / "var"))
        yield base
