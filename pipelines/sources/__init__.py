"""Where a job's rows come from: one reader per source ``kind``, found through :data:`SOURCES`.

A new backend is one module implementing :class:`Source` and one line in :data:`SOURCES`.
"""

from __future__ import annotations

from datetime import datetime

import pandas as pd

from pipelines.config import JobConfig
from pipelines.sources.base import Source
from pipelines.sources.bigquery import BigQueryReader
from pipelines.sources.file import FileReader
from pipelines.sources.python import PythonReader
from pipelines.sources.sql import SqlReader

SOURCES: dict[str, type[Source]] = {"file": FileReader, "sql": SqlReader, "bigquery": BigQueryReader, "python": PythonReader}


def make_source(job: JobConfig) -> Source:
    return SOURCES[job.source.kind](job)


def read_window(job: JobConfig, start: datetime | None, end: datetime | None) -> pd.DataFrame:
    """The job's rows in ``[start, end)`` (UTC-aware; ``None`` is unbounded), raw as stored."""
    return make_source(job).read(start, end)


__all__ = ["SOURCES", "BigQueryReader", "FileReader", "PythonReader", "Source", "SqlReader", "make_source", "read_window"]
