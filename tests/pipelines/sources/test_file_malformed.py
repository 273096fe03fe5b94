"""Malformed text files: the error names the file and the line, and says what to do."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import pandas as pd
import pytest

from pipelines.errors import DataValidationError, SourceError
from pipelines.sources import FileReader, read_window

START, END = pd.Timestamp("2024-01-01", tz="UTC"), pd.Timestamp("2024-01-02", tz="UTC")
HEADER = "ts,host,value\n"
ROWS = [f"2024-01-01 0{hour}:00:00,a,{hour}\n" for hour in range(4)]


def _read(job, chunked: bool) -> pd.DataFrame:
    return pd.concat(FileReader(job).iter_chunks(2)) if chunked else read_window(job, START, END)


@pytest.mark.parametrize("chunked", [False, True], ids=["window", "chunks"])
@pytest.mark.parametrize(
    ("rows", "line", "fields"),
    [
        # pandas took the first field of such rows as the index: the hosts read as timestamps.
        ([ROWS[0].replace(",0\n", ",0,extra\n"), *ROWS[1:]], 2, 4),
        # A delimiter at the end of every row, but not of the header.
        ([row.replace("\n", ",\n") for row in ROWS], 2, 4),
        ([ROWS[0].replace(",a,", ",a,b,c,"), *ROWS[1:]], 2, 5),
    ],
    ids=["first-row", "trailing-delimiter", "two-extra"],
)
def test_csv_rows_longer_than_the_header_name_the_line(make_job, tmp_path: Path, rows, line: int, fields: int, chunked: bool) -> None:
    path = tmp_path / "m.csv.gz"
    path.write_bytes(gzip.compress((HEADER + "".join(rows)).encode()))
    job = make_job({"kind": "file", "path": str(path)})

    with pytest.raises(DataValidationError) as caught:
        _read(job, chunked)

    message = str(caught.value)
    assert f"{path} has rows with more fields than its header (line {line} has {fields} fields, the header 3)" in message
    assert "Quote the fields that hold the delimiter" in message
    assert "timestamp" not in message


@pytest.mark.parametrize("chunked", [False, True], ids=["window", "chunks"])
@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_later_csv_row_longer_than_the_header_is_refused(make_job, tmp_path: Path, request, where: str, chunked: bool) -> None:
    # The job picks its columns from the header: pandas then dropped the fields beyond it, so an
    # unquoted delimiter in a value moved that row's fields into other columns without a word
    # (here host "a,b" made the value "b" and the note 3).
    rows = [f"2024-01-01 0{hour}:00:00,a,{hour},n\n" for hour in range(4)]
    rows[2] = "2024-01-01 02:00:00,a,b,2,n\n"
    text = "ts,host,value,note\n" + "".join(rows)
    if where == "s3":
        bucket, options = request.getfixturevalue("s3_bucket")
        import fsspec

        path = f"s3://{bucket}/m.csv"
        with fsspec.open(path, "w", **options) as handle:
            handle.write(text)
        job = make_job({"kind": "file", "path": path, "storage_options": options})
    else:
        path = str(tmp_path / "m.csv")
        Path(path).write_text(text)
        job = make_job({"kind": "file", "path": path})

    with pytest.raises(DataValidationError) as caught:
        _read(job, chunked)

    message = str(caught.value)
    assert message.startswith("job 'cpu_load': cannot read file source")
    assert f"{path} has rows with more fields than its header (line 4 has 5 fields, the header 4)" in message
    assert "Quote the fields that hold the delimiter" in message


def test_csv_rows_of_the_header_length_still_read(make_job, tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text(HEADER + "".join(ROWS))

    assert read_window(make_job({"kind": "file", "path": str(tmp_path / "m.csv")}), START, END)["value"].tolist() == [0, 1, 2, 3]


JSONL = [f'{{"ts": "2024-01-01 0{hour}:00:00", "host": "a", "value": {hour}}}\n' for hour in range(4)]


@pytest.mark.parametrize("chunked", [False, True], ids=["window", "chunks"])
def test_a_jsonl_line_that_is_not_json_is_named(make_job, tmp_path: Path, chunked: bool) -> None:
    lines = [*JSONL[:2], '{"ts": "2024-01-01 02:00:00", "host": "a" "value": 2}\n', JSONL[3]]
    (tmp_path / "m.jsonl").write_text("".join(lines))
    job = make_job({"kind": "file", "path": str(tmp_path / "m.jsonl")})

    with pytest.raises(DataValidationError) as caught:
        _read(job, chunked)

    message = str(caught.value)
    assert re.search(rf"{re.escape(str(tmp_path / 'm.jsonl'))} is not valid jsonl: line 3, column \d+: Expecting ',' delimiter", message)
    assert "Fix or remove line 3" in message
    assert "position" not in message


def test_a_jsonl_file_cut_short_may_still_be_written(make_job, tmp_path: Path) -> None:
    (tmp_path / "m.jsonl").write_text("".join(JSONL[:3]) + JSONL[3][:20])
    job = make_job({"kind": "file", "path": str(tmp_path / "m.jsonl")})

    with pytest.raises(SourceError, match=r"line 4, column \d+: .*Check that the file is complete: its last line \(4\)") as caught:
        read_window(job, START, END)
    assert not isinstance(caught.value, DataValidationError)  # a retry may find it complete


def test_jsonl_read_in_parts_keeps_the_types_of_the_whole_file(make_job, tmp_path: Path, monkeypatch) -> None:
    # A file is parsed a part at a time (memory); a part whose values are all null must not turn
    # the numbers of the others into objects.
    from pipelines.sources import file

    monkeypatch.setattr(file, "JSONL_ROWS", 2)
    nulls = [f'{{"ts": "2024-01-01 0{hour}:00:00", "host": "a", "value": null, "note": "x"}}\n' for hour in (2, 3)]
    lines = [*JSONL[:2], *nulls]  # the second part: nulls only
    (tmp_path / "m.jsonl").write_text("".join(lines))

    frame = read_window(make_job({"kind": "file", "path": str(tmp_path / "m.jsonl")}), START, END)

    assert frame["value"].dtype == "float64" and frame["value"].isna().sum() == 2
    assert list(frame.columns) == ["ts", "host", "value"]
