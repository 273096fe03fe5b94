"""SqlSink.read returns a job's dimension columns as the Parquet sink does, empty ones included."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from pipelines.series import series_key
from pipelines.sinks import ParquetSink, SqlSink

WINDOW = {"start": pd.Timestamp("2024-01-05", tz="UTC"), "end": pd.Timestamp("2024-01-06", tz="UTC")}


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), pytest.param("mysql", marks=pytest.mark.mysql)]
)
def sink(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[SqlSink]:
    url = f"sqlite:///{tmp_path / 'out.db'}" if request.param == "sqlite" else request.getfixturevalue(f"{request.param}_url")
    engine = sa.create_engine(url)
    # The PostgreSQL and MariaDB databases live for the whole session: each test gets its own table.
    yield SqlSink(engine, f"anomalies_{uuid.uuid4().hex[:8]}")
    engine.dispose()


def without(make_frame, job: str, dimensions: list[str], empty: list[str]) -> pd.DataFrame:
    """Output of ``job`` whose dimensions ``empty`` have no value in any row."""
    frame = make_frame(job, "2024-01-05", "2024-01-06", dimensions=tuple(dimensions))
    frame[empty] = pd.NA
    frame["series"] = [series_key(dimensions, [row[d] for d in dimensions]) for _, row in frame.iterrows()]
    # Series left without a value in every dimension became one.
    return frame.astype({"series": "string"}).drop_duplicates(["series", "timestamp", "feature"], ignore_index=True)


def both(sink: SqlSink, parquet: ParquetSink, frame: pd.DataFrame, job: str, dimensions: list[str]) -> None:
    for each in (sink, parquet):
        each.write(frame, job=job, dimensions=dimensions, **WINDOW)


@pytest.mark.parametrize(
    ("dimensions", "empty"),
    [(["region", "host"], ["host"]), (["region", "host"], ["region"]), (["host"], ["host"]), (["Host", "share%,="], ["share%,="])],
)
def test_a_dimension_empty_in_every_row_is_read_back(
    sink: SqlSink, make_frame, tmp_path: Path, dimensions: list[str], empty: list[str]
) -> None:
    # Every empty column was taken for another job's dimension and dropped; Parquet kept it.
    parquet = ParquetSink(str(tmp_path / "parquet"))
    both(sink, parquet, make_frame("sales", "2024-01-05", "2024-01-06", dimensions=("zone",)), "sales", ["zone"])
    frame = without(make_frame, "costs", dimensions, empty)
    both(sink, parquet, frame, "costs", dimensions)

    read = sink.read(job="costs")

    assert list(read.columns)[-len(dimensions) :] == dimensions
    assert "zone" not in read.columns
    assert read[empty].isna().all().all()
    pd.testing.assert_frame_equal(read, parquet.read(job="costs"))
    pd.testing.assert_frame_equal(sink.read(job="sales"), parquet.read(job="sales"))


def test_dimensions_come_back_in_the_jobs_order(sink: SqlSink, make_frame, tmp_path: Path) -> None:
    # The table adds a job's dimension columns after those of earlier jobs: a job of
    # [region, host] after one of [host] read back as [host, region].
    parquet = ParquetSink(str(tmp_path / "parquet"))
    both(sink, parquet, make_frame("sales", "2024-01-05", "2024-01-06", dimensions=("host",)), "sales", ["host"])
    frame = make_frame("costs", "2024-01-05", "2024-01-06", dimensions=("region", "host"))
    both(sink, parquet, frame, "costs", ["region", "host"])

    assert list(sink.read(job="costs").columns)[-2:] == ["region", "host"]
    pd.testing.assert_frame_equal(sink.read(job="costs"), parquet.read(job="costs"))


def test_an_empty_read_has_no_dimension_of_other_jobs(sink: SqlSink, make_frame) -> None:
    sink.write(make_frame("sales", "2024-01-05", "2024-01-06", dimensions=("zone",)), job="sales", dimensions=["zone"], **WINDOW)

    assert "zone" not in sink.read(job="costs").columns
