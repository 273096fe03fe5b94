"""A Python callable as a source, for anything the other kinds cannot reach.

``source: {kind: python, callable: "package.module:function", params: {...}}`` calls
``function(start, end, **params)`` with UTC-aware datetimes (``None`` for an unbounded side)
and expects a pandas DataFrame. The module must be importable by the worker (installed, or on
``PYTHONPATH``); it is imported at read time, never while Airflow parses the DAGs.

The callable should return only the window's rows; rows outside it are dropped here all the
same (and counted in the log), and text timestamps are parsed as for every other source.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from datetime import datetime
from functools import partial
from typing import Any

import pandas as pd

from pipelines.config import JobConfig, PythonSource
from pipelines.errors import ConfigError, SourceError
from pipelines.sources.base import job_columns, source_error, utc_bound
from pipelines.sources.file import in_window

log = logging.getLogger(__name__)


class PythonReader:
    """Reads a job's :class:`~pipelines.config.PythonSource` by calling its function."""

    def __init__(self, job: JobConfig) -> None:
        if not isinstance(job.source, PythonSource):
            raise TypeError(f"PythonReader reads python sources, not {job.source.kind!r}")
        self.job = job
        self.config = job.source

    def read(self, start: datetime | None, end: datetime | None) -> pd.DataFrame:
        lo, hi = utc_bound(start), utc_bound(end)
        fail = partial(source_error, self.job, self.config.describe(), lo, hi)
        function = self._resolve(fail)
        log.info("job %s: calling %s for %s .. %s", self.job.name, self.config.callable, lo, hi)
        try:
            result = function(
                None if lo is None else lo.to_pydatetime(),
                None if hi is None else hi.to_pydatetime(),
                **self.config.params,
            )
        except Exception as exc:
            raise fail(
                f"the callable raised {type(exc).__name__}: {exc}",
                "Fix the function or the data it reads (the traceback above shows where it failed).",
            ) from exc
        if not isinstance(result, pd.DataFrame):
            raise fail(
                f"the callable returned {type(result).__module__}.{type(result).__qualname__}, not a pandas DataFrame",
                "Return a pandas.DataFrame with the job's timestamp, dimension and feature columns.",
            )
        frame = result
        # A frame indexed by the timestamp, or by timestamp and dimensions as groupby().agg()
        # returns it: a MultiIndex's levels were dropped, and validation reported the job's
        # columns missing from a frame that held them.
        levels = [name for name in frame.index.names if name in self.job.columns and name not in frame.columns]
        if levels:
            frame = frame.reset_index(level=levels)
        twice = sorted({name for name in frame.columns[frame.columns.duplicated()] if name in self.job.columns})
        if twice:
            # Each would read as a frame where one column is expected, failing far from here.
            raise fail(
                f"the callable returned more than one column named {', '.join(map(repr, twice))}",
                "Return each of the job's columns once (rename or drop the duplicates).",
            )
        frame = job_columns(frame, self.job)
        inside = in_window(frame, self.job, lo, hi, fail)
        if not inside.all():
            log.warning(
                "job %s: %s returned %d row(s) outside the window; they are dropped",
                self.job.name,
                self.config.callable,
                int((~inside).sum()),
            )
        return frame[inside].reset_index(drop=True)

    def _resolve(self, fail: Callable[[str, str], SourceError]) -> Callable[..., Any]:
        """The configured function; a ConfigError when it cannot be found, since a retry
        cannot make a missing module or function appear."""
        module_name, _, attribute = self.config.callable.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(
                *fail(
                    f"cannot import module {module_name!r} ({type(exc).__name__}: {exc})",
                    "Install the package that holds it on every worker, or put its folder on PYTHONPATH.",
                ).args
            ) from exc
        function = getattr(module, attribute, None)
        if function is None:
            raise ConfigError(
                *fail(
                    f"module {module_name!r} has no attribute {attribute!r}",
                    "Check the name after ':' in `callable`.",
                ).args
            )
        if not callable(function):
            raise ConfigError(
                *fail(
                    f"{attribute!r} is not callable (its type is {type(function).__name__!r})",
                    "Point `callable` at a function taking (start, end, **params).",
                ).args
            )
        return function
