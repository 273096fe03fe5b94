"""Binary dimension values (a Parquet binary column, an SQL BLOB/VARBINARY) are named one way
from extraction on: decoded when valid UTF-8, else 0x and upper-case hex."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa

from pipelines import storage
from pipelines.config import FileSource, JobConfig, SqlSource, get_job
from pipelines.errors import DataValidationError
from pipelines.extraction import extract, extract_chunks, read_parquet, validate
from pipelines.workspace import Window, to_utc

DAY = Window(to_utc("2024-03-03T00:00:00Z"), to_utc("2024-03-04T00:00:00Z"))
REGIONS = [b"eu", b"\xff\xfe"]  # the second is no UTF-8


def _rows(repeat_last: bool = False) -> list[tuple[str, bytes, float, float]]:
    times = pd.date_range(DAY.start, periods=24, freq="h")
    rows = [(t.strftime("%Y-%m-%d %H:%M:%S"), region, 10.0 + i, 1.5) for i, t in enumerate(times) for region in REGIONS]
    return rows + [rows[-1]] if repeat_last else rows


def _job(source: FileSource | SqlSource) -> JobConfig:
    job = get_job("demo_web_metrics")
    return job.model_copy(update={"source": source, "validation": job.validation.model_copy(update={"suite": None})})


def parquet_job(project: Path, repeat_last: bool = False) -> JobConfig:
    rows = _rows(repeat_last)
    table = pa.table(
        {
            "timestamp": pa.array([row[0] for row in rows]),
            "region": pa.array([row[1] for row in rows], pa.binary()),
            "requests": pa.array([row[2] for row in rows]),
            "latency_ms": pa.array([row[3] for row in rows]),
        }
    )
    pq.write_table(table, project / "binary.parquet")
    return _job(FileSource(kind="file", path=str(project / "binary.parquet"), format="parquet"))


def sqlite_job(project: Path, repeat_last: bool = False) -> JobConfig:
    engine = sa.create_engine(f"sqlite:///{project / 'binary.db'}")
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE metrics (timestamp TEXT, region BLOB, requests REAL, latency_ms REAL)"))
        connection.execute(
            sa.text("INSERT INTO metrics VALUES (:t, :r, :q, :l)"),
            [{"t": t, "r": r, "q": q, "l": lat} for t, r, q, lat in _rows(repeat_last)],
        )
    engine.dispose()
    query = "SELECT * FROM metrics WHERE timestamp >= :start AND timestamp < :end"
    return _job(SqlSource(kind="sql", connection={"url": f"sqlite:///{project / 'binary.db'}"}, query=query))


SOURCES = pytest.mark.parametrize("make", [parquet_job, sqlite_job], ids=["parquet-binary", "sqlite-blob"])


@SOURCES
def test_binary_dimension_values_are_named_as_text_or_hex_alike_everywhere(project: Path, make) -> None:
    job = make(project)

    extracted = extract(job, DAY, run_id="binary")
    keys = validate(job, DAY, run_id="binary", purpose="predict", raw_path=extracted.paths[0])

    assert sorted(read_parquet(extracted.paths[0])["region"].unique()) == ["0xFFFE", "eu"]
    assert keys == ["region=0xFFFE", "region=eu"]


@SOURCES
def test_a_duplicate_in_a_binary_series_is_reported_by_validation_naming_the_rows(project: Path, make) -> None:
    job = make(project, repeat_last=True)
    extracted = extract(job, DAY, run_id="binary")

    with pytest.raises(DataValidationError, match=r"2024-03-03 23:00:00\+00:00 at rows \[48, 49\]"):
        validate(job, DAY, run_id="binary", purpose="predict", raw_path=extracted.paths[0])


def test_a_one_off_inputs_manifest_names_binary_series_as_their_batches_do(project: Path) -> None:
    job = parquet_job(project)

    extracted = extract_chunks(job, run_id="one-off", input_path=str(project / "binary.parquet"), chunk_rows=30)

    manifest = json.loads(storage.read_bytes(str(Path(extracted.paths[0]).with_name("manifest.json"))))  # beside the chunks
    assert manifest == [{"region=eu": 15, "region=0xFFFE": 15}, {"region=eu": 9, "region=0xFFFE": 9}]
    assert sorted(read_parquet(extracted.paths[0])["region"].unique()) == ["0xFFFE", "eu"]
