from __future__ import annotations

from typing import get_args

import pandas as pd
import pytest

from pipelines.config import JobConfig
from pipelines.sources import SOURCES, BigQueryReader, FileReader, SqlReader, make_source, read_window
from pipelines.sources.python import PythonReader

SOURCE_CONFIGS = {
    "file": {"kind": "file", "path": "m.csv"},
    "sql": {"kind": "sql", "connection": {"url": "sqlite://"}, "query": "SELECT 1 WHERE :start < :end"},
    "bigquery": {"kind": "bigquery", "query": "SELECT 1 WHERE @start < @end"},
    "python": {"kind": "python", "callable": "tests.pipelines.sources.test_python:six_hours"},
}


def test_every_configurable_kind_has_a_source() -> None:
    models = get_args(JobConfig.model_fields["source"].annotation)
    kinds = {get_args(model.model_fields["kind"].annotation)[0] for model in models}

    assert set(SOURCES) == kinds == set(SOURCE_CONFIGS)


@pytest.mark.parametrize(
    ("kind", "reader"),
    [("file", FileReader), ("sql", SqlReader), ("bigquery", BigQueryReader), ("python", PythonReader)],
)
def test_make_source_builds_the_reader_of_the_job_kind(make_job, kind: str, reader: type) -> None:
    source = make_source(make_job(SOURCE_CONFIGS[kind]))

    assert type(source) is reader


def test_read_window_reads_through_the_source(make_job, tmp_path) -> None:
    (tmp_path / "m.csv").write_text("ts,host,value\n2024-01-01 00:00:00,a,1\n2024-01-01 01:00:00,a,2\n")
    job = make_job({"kind": "file", "path": str(tmp_path / "m.csv")})

    frame = read_window(job, pd.Timestamp("2024-01-01 01:00", tz="UTC"), None)

    assert frame["value"].tolist() == [2]
