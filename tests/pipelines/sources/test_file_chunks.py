"""Chunk sizes of one-off scoring's reads (FileReader.iter_chunks): memory is bounded by one chunk."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.sources import FileReader

ROWS = 1000


def frame(first: int, rows: int) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "ts": pd.date_range("2024-01-01", periods=ROWS, freq="h")[first : first + rows].strftime("%Y-%m-%d %H:%M:%S"),
            "host": [f"h{i % 3}" for i in range(first, first + rows)],
            "value": [float(i) for i in range(first, first + rows)],
            "note": "not read",
        }
    )


def write_parquet(path: Path, part: pd.DataFrame, row_group: int) -> None:
    pq.write_table(pa.Table.from_pandas(part, preserve_index=False), path, row_group_size=row_group)
    assert pq.ParquetFile(path).num_row_groups == -(-len(part) // row_group)


@pytest.mark.parametrize(
    ("files", "row_group", "rows", "sizes"),
    [
        # Row groups smaller than a chunk: whole batches gathered made chunks of 400 rows.
        ([1000], 200, 250, [250, 250, 250, 250]),
        ([1000], 200, 300, [300, 300, 300, 100]),
        # Row groups larger than a chunk.
        ([1000], 400, 300, [300, 300, 300, 100]),
        # Chunks run on across files.
        ([500, 500], 200, 300, [300, 300, 300, 100]),
        ([500, 1, 499], 200, 250, [250, 250, 250, 250]),
    ],
)
def test_parquet_chunks_hold_exactly_the_rows_asked(
    make_job, tmp_path: Path, files: list[int], row_group: int, rows: int, sizes: list[int]
) -> None:
    first = 0
    for number, length in enumerate(files):
        write_parquet(tmp_path / f"part-{number}.parquet", frame(first, length), row_group)
        first += length

    chunks = list(FileReader(make_job({"kind": "file", "path": str(tmp_path)})).iter_chunks(rows))

    assert [len(chunk) for chunk in chunks] == sizes
    whole = pd.concat([pd.read_parquet(tmp_path / f"part-{n}.parquet") for n in range(len(files))], ignore_index=True)
    pd.testing.assert_frame_equal(pd.concat(chunks, ignore_index=True), whole[["ts", "host", "value"]])
    assert all(chunk.index.equals(pd.RangeIndex(len(chunk))) for chunk in chunks)


def test_csv_chunks_hold_exactly_the_rows_asked(make_job, tmp_path: Path) -> None:
    frame(0, ROWS).to_csv(tmp_path / "m.csv", index=False)

    chunks = list(FileReader(make_job({"kind": "file", "path": str(tmp_path / "m.csv")})).iter_chunks(300))

    assert [len(chunk) for chunk in chunks] == [300, 300, 300, 100]
    pd.testing.assert_frame_equal(
        pd.concat(chunks, ignore_index=True), pd.read_csv(tmp_path / "m.csv")[["ts", "host", "value"]]
    )
