from __future__ import annotations

from datetime import datetime

import pandas as pd
import pytest

from pipelines import schema, storage
from pipelines.errors import SinkError, StorageError
from pipelines.sinks import ParquetSink
from tests.pipelines.test_storage import gcs_emulator, plain_gcsfs  # noqa: F401 (fixtures)


def at(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def expected(*frames: pd.DataFrame) -> pd.DataFrame:
    return pd.concat(frames).sort_values(["series", "timestamp", "feature"], ignore_index=True)


def test_same_window_twice_gives_the_same_rows(tmp_path, make_frame) -> None:
    sink = ParquetSink(str(tmp_path))
    frame = make_frame("sales", "2024-01-05", "2024-01-06")
    for _ in range(2):
        paths = sink.write(frame, job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))
    assert paths == [str(tmp_path / "job=sales" / "date=2024-01-05" / "part-0.parquet")]
    pd.testing.assert_frame_equal(sink.read(job="sales"), expected(frame))


def test_overlapping_later_window_replaces_only_its_rows(tmp_path, make_frame) -> None:
    sink = ParquetSink(str(tmp_path))
    first = make_frame("sales", "2024-01-05", "2024-01-06", run="r1")
    later = make_frame("sales", "2024-01-05 12:00", "2024-01-06 12:00", run="r2")
    sink.write(first, job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))
    sink.write(later, job="sales", dimensions=[], start=at("2024-01-05 12:00"), end=at("2024-01-06 12:00"))

    rows = sink.read(job="sales")
    kept = first[first["timestamp"] < at("2024-01-05 12:00")]
    pd.testing.assert_frame_equal(rows, expected(kept, later))
    assert set(rows.loc[rows["timestamp"] < at("2024-01-05 12:00"), "run_id"]) == {"r1"}
    assert set(rows.loc[rows["timestamp"] >= at("2024-01-05 12:00"), "run_id"]) == {"r2"}


def test_window_spanning_two_dates_writes_one_file_per_date(tmp_path, make_frame) -> None:
    sink = ParquetSink(str(tmp_path))
    frame = make_frame("sales", "2024-01-05 18:00", "2024-01-06 12:00", dimensions=("region",))
    window = {"start": at("2024-01-05 18:00"), "end": at("2024-01-06 12:00")}
    paths = sink.write(frame, job="sales", dimensions=["region"], **window)

    assert [p.split("/")[-2] for p in paths] == ["date=2024-01-05", "date=2024-01-06"]
    first_day = pd.read_parquet(paths[0])
    assert list(first_day.columns) == schema.output_columns(["region"])[1:]  # the job is in the folder name
    assert set(first_day["timestamp"]) == {at("2024-01-05 18:00")}
    assert set(first_day["region"]) == {"a", "b"}
    pd.testing.assert_frame_equal(sink.read(job="sales"), expected(frame))
    # Hive-aware readers see the whole dataset with the job and date taken from the folders.
    dataset = pd.read_parquet(tmp_path)
    assert len(dataset) == len(frame)
    assert set(dataset["job"].astype(str)) == {"sales"}
    assert set(dataset["date"].astype(str)) == {"2024-01-05", "2024-01-06"}


def test_a_job_whose_dimensions_changed_keeps_the_old_dimension_on_its_old_rows(tmp_path, make_frame) -> None:
    sink = ParquetSink(str(tmp_path))
    by_region = make_frame("sales", "2024-01-05", "2024-01-06", dimensions=("region",))
    by_host = make_frame("sales", "2024-01-05 12:00", "2024-01-06", run="r2", dimensions=("host",))
    sink.write(by_region, job="sales", dimensions=["region"], start=at("2024-01-05"), end=at("2024-01-06"))
    sink.write(by_host, job="sales", dimensions=["host"], start=at("2024-01-05 12:00"), end=at("2024-01-06"))

    rows = sink.read(job="sales")
    kept = by_region[by_region["timestamp"] < at("2024-01-05 12:00")]
    assert len(rows) == len(kept) + len(by_host)
    old_rows = rows[rows["run_id"] == "r1"]
    new_rows = rows[rows["run_id"] == "r2"]
    assert set(old_rows["region"]) == {"a", "b"} and old_rows["host"].isna().all()
    assert set(new_rows["host"]) == {"a", "b"} and new_rows["region"].isna().all()
    day_file = pd.read_parquet(tmp_path / "job=sales" / "date=2024-01-05" / "part-0.parquet")
    assert list(day_file.columns)[-2:] == ["host", "region"]


def test_window_without_new_rows_removes_the_old_ones(tmp_path, make_frame) -> None:
    sink = ParquetSink(str(tmp_path))
    frame = make_frame("sales", "2024-01-05", "2024-01-07")
    sink.write(frame, job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-07"))

    written = sink.write(frame.iloc[:0], job="sales", dimensions=[], start=at("2024-01-05 12:00"), end=at("2024-01-07"))

    assert [p.split("/")[-2] for p in written] == ["date=2024-01-05"]
    assert storage.find(str(tmp_path)) == ["job=sales/date=2024-01-05/part-0.parquet"]
    pd.testing.assert_frame_equal(sink.read(job="sales"), expected(frame[frame["timestamp"] < at("2024-01-05 12:00")]))


def test_read_prunes_date_partitions_then_filters(tmp_path, make_frame) -> None:
    sink = ParquetSink(str(tmp_path))
    frame = make_frame("sales", "2024-01-04", "2024-01-07")
    sink.write(frame, job="sales", dimensions=[], start=at("2024-01-04"), end=at("2024-01-07"))
    other = make_frame("other", "2024-01-05", "2024-01-06")
    sink.write(other, job="other", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))
    # Files outside the asked range must not even be opened.
    for day in ("2024-01-04", "2024-01-06"):
        (tmp_path / "job=sales" / f"date={day}" / "part-0.parquet").write_bytes(b"not parquet")

    rows = sink.read(job="sales", start=at("2024-01-05 06:00"), end=at("2024-01-06"))

    inside = (frame["timestamp"] >= at("2024-01-05 06:00")) & (frame["timestamp"] < at("2024-01-06"))
    pd.testing.assert_frame_equal(rows, expected(frame[inside]))
    with pytest.raises(SinkError, match=r"date=2024-01-04/part-0.parquet is not a readable Parquet file"):
        sink.read(job="sales")


def test_read_skips_a_folder_that_is_not_a_day(tmp_path, make_frame, caplog) -> None:
    sink = ParquetSink(str(tmp_path))
    frame = make_frame("sales", "2024-01-05", "2024-01-06")
    (written,) = sink.write(frame, job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))
    copy = tmp_path / "job=sales" / "date=2024-01-05 (copy)"
    copy.mkdir()
    (copy / "part-0.parquet").write_bytes(storage.read_bytes(written))

    pd.testing.assert_frame_equal(sink.read(job="sales"), expected(frame))
    assert "ignoring" in caplog.text and "date=2024-01-05 (copy)" in caplog.text


def test_read_of_nothing_is_an_empty_frame_in_the_output_schema(tmp_path) -> None:
    rows = ParquetSink(str(tmp_path)).read(job="sales", start=at("2024-01-01"), end=at("2024-01-02"))
    assert rows.empty
    assert list(rows.columns) == schema.output_columns([])
    assert str(rows["timestamp"].dtype) == "datetime64[us, UTC]"


def test_s3_round_trip(s3_bucket, make_frame) -> None:
    bucket, options = s3_bucket
    sink = ParquetSink(f"s3://{bucket}/outputs", options)
    frame = make_frame("sales", "2024-01-05 12:00", "2024-01-06 12:00", dimensions=("region",))
    for _ in range(2):
        paths = sink.write(
            frame, job="sales", dimensions=["region"], start=at("2024-01-05 12:00"), end=at("2024-01-06 12:00")
        )

    assert paths == [f"s3://{bucket}/outputs/job=sales/date=2024-01-0{d}/part-0.parquet" for d in (5, 6)]
    pd.testing.assert_frame_equal(sink.read(job="sales"), expected(frame))
    only_day = sink.read(job="sales", start=at("2024-01-06"))
    assert set(only_day["timestamp"].dt.date.astype(str)) == {"2024-01-06"}


def test_rows_outside_the_window_are_refused(tmp_path, make_frame) -> None:
    sink = ParquetSink(str(tmp_path))
    frame = make_frame("sales", "2024-01-05", "2024-01-06")
    with pytest.raises(SinkError, match=r"job 'sales'.*8 of 8 rows .* outside the window"):
        sink.write(frame, job="sales", dimensions=[], start=at("2024-01-06"), end=at("2024-01-07"))
    with pytest.raises(SinkError, match="another job"):
        sink.write(frame, job="other", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))
    assert storage.find(str(tmp_path)) == []


def test_naive_window_is_refused(tmp_path, make_frame) -> None:
    frame = make_frame("sales", "2024-01-05", "2024-01-06")
    with pytest.raises(ValueError, match="no time zone"):
        ParquetSink(str(tmp_path)).write(
            frame, job="sales", dimensions=[], start=datetime(2024, 1, 5), end=at("2024-01-06")
        )


def failing_on_second_call(real, message: str):
    calls = []

    def fake(*args, **kwargs):
        calls.append(args[0])
        if len(calls) == 2:
            raise OSError(message)
        return real(*args, **kwargs)

    return fake


@pytest.mark.parametrize("where", ["local", "s3", "gs"])
@pytest.mark.parametrize(
    "step, doing",
    [("atomic_write", r"writing \S*date=2024-01-06/part-0.parquet \(as "), ("move", r"replacing \S*date=2024-01-06/part-0.parquet failed")],
    ids=["staging", "replacing"],
)
def test_failure_on_a_later_day_file_leaves_every_day_file_old(
    tmp_path, make_frame, monkeypatch, request, where, step, doing
) -> None:
    # The window spans two day files: the second one fails once the first is staged or replaced.
    if where == "s3":
        bucket, options = request.getfixturevalue("s3_bucket")
        sink = ParquetSink(f"s3://{bucket}/outputs", options)
    elif where == "gs":
        request.getfixturevalue("plain_gcsfs")
        emulator = request.getfixturevalue("gcs_emulator")
        sink = ParquetSink(f"gs://{emulator.bucket}/{tmp_path.name}/outputs", emulator.options)
    else:
        sink = ParquetSink(str(tmp_path))
    window = {"job": "sales", "dimensions": [], "start": at("2024-01-05 12:00"), "end": at("2024-01-06 12:00")}
    before = make_frame("sales", "2024-01-05", "2024-01-05 12:00", run="kept")
    sink.write(before, job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-05 12:00"))
    old = make_frame("sales", "2024-01-05 12:00", "2024-01-06 12:00", run="old")
    sink.write(old, **window)
    files = {url: storage.read_bytes(url, sink.storage_options) for url in sink.write(old, **window)}

    real = getattr(storage, step)
    monkeypatch.setattr(storage, step, failing_on_second_call(real, "disk full"))
    new = make_frame("sales", "2024-01-05 12:00", "2024-01-06 12:00", run="new")
    message = rf"job 'sales', window \[2024-01-05 12:00:00\+00:00, 2024-01-06 12:00:00\+00:00\): {doing}.*disk full; every day file of the window keeps its previous rows"
    with pytest.raises(SinkError, match=message):
        sink.write(new, **window)
    monkeypatch.setattr(storage, step, real)  # not undo(): that would undo plain_gcsfs too

    assert {url: storage.read_bytes(url, sink.storage_options) for url in files} == files
    pd.testing.assert_frame_equal(sink.read(job="sales"), expected(before, old))
    # No staged file is left behind.
    assert storage.find(sink.root, sink.storage_options) == [
        "job=sales/date=2024-01-05/part-0.parquet",
        "job=sales/date=2024-01-06/part-0.parquet",
    ]


def test_failed_write_removes_the_day_files_it_created(tmp_path, make_frame, monkeypatch) -> None:
    sink = ParquetSink(str(tmp_path))
    window = {"job": "sales", "dimensions": [], "start": at("2024-01-05 12:00"), "end": at("2024-01-06 12:00")}
    monkeypatch.setattr(storage, "move", failing_on_second_call(storage.move, "network error"))
    with pytest.raises(SinkError, match=r"network error; every day file of the window keeps its previous rows"):
        sink.write(make_frame("sales", "2024-01-05 12:00", "2024-01-06 12:00"), **window)
    assert storage.find(str(tmp_path)) == []


def test_unrestorable_file_is_named(tmp_path, make_frame, monkeypatch) -> None:
    sink = ParquetSink(str(tmp_path))
    window = {"job": "sales", "dimensions": [], "start": at("2024-01-05 12:00"), "end": at("2024-01-06 12:00")}
    sink.write(make_frame("sales", "2024-01-05 12:00", "2024-01-06 12:00", run="old"), **window)
    monkeypatch.setattr(storage, "move", failing_on_second_call(storage.move, "network error"))
    real_write = storage.atomic_write

    def no_restore(url, data, storage_options=None) -> None:
        # Staging and the write's journal work, restoring the target does not.
        if not url.rpartition("/")[2].startswith(".") and "/_pending/" not in url:
            raise OSError("read-only file system")
        real_write(url, data, storage_options)

    monkeypatch.setattr(storage, "atomic_write", no_restore)
    first = tmp_path / "job=sales" / "date=2024-01-05" / "part-0.parquet"
    with pytest.raises(SinkError, match=rf"network error; could not restore {first}, .*rerun"):
        sink.write(make_frame("sales", "2024-01-05 12:00", "2024-01-06 12:00", run="new"), **window)


def test_a_corrupt_day_file_is_named_with_what_to_do_on_write_and_read(tmp_path, make_frame) -> None:
    sink = ParquetSink(str(tmp_path))
    window = {"job": "sales", "dimensions": [], "start": at("2024-01-05"), "end": at("2024-01-06")}
    sink.write(make_frame("sales", "2024-01-05", "2024-01-06"), **window)
    day_file = tmp_path / "job=sales" / "date=2024-01-05" / "part-0.parquet"
    day_file.write_bytes(b"not parquet")

    with pytest.raises(SinkError, match=rf"could not read or rebuild {day_file}: .*no file was changed\. Fix or remove that file"):
        sink.write(make_frame("sales", "2024-01-05", "2024-01-06"), **window)
    # Reading (alerts, plots, monitoring) names the file too, instead of Arrow's "<Buffer>".
    with pytest.raises(SinkError, match=rf"^job 'sales': {day_file} is not a readable Parquet file .*Fix or remove that file"):
        sink.read(job="sales")
    assert day_file.read_bytes() == b"not parquet"


def test_missing_s3_credentials_say_where_to_set_them_not_to_remove_the_file(s3_without_credentials, make_frame) -> None:
    bucket, no_keys = s3_without_credentials
    sink = ParquetSink(f"s3://{bucket}/outputs", no_keys)

    with pytest.raises(StorageError, match=r"^job 'sales', window .*: no credentials to reach s3://.*Give this worker credentials \(AWS_ACCESS_KEY_ID") as caught:
        sink.write(make_frame("sales", "2024-01-05", "2024-01-06"), job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))
    assert "No file was changed" in str(caught.value)
    assert "remove that file" not in str(caught.value)


def test_a_day_file_that_cannot_be_read_is_no_reason_to_remove_it(tmp_path, make_frame, monkeypatch) -> None:
    sink = ParquetSink(str(tmp_path))
    window = {"job": "sales", "dimensions": [], "start": at("2024-01-05"), "end": at("2024-01-06")}
    sink.write(make_frame("sales", "2024-01-05", "2024-01-06", run="old"), **window)
    before = storage.read_bytes(sink.write(make_frame("sales", "2024-01-05", "2024-01-06", run="old"), **window)[0])

    def refused(url, storage_options=None):
        raise PermissionError(13, "Permission denied", url)

    monkeypatch.setattr(storage, "read_bytes", refused)
    with pytest.raises(SinkError, match=r"could not read \S*part-0.parquet: .*Permission denied.*Check that the storage is reachable") as caught:
        sink.write(make_frame("sales", "2024-01-05", "2024-01-06", run="new"), **window)
    assert "remove that file" not in str(caught.value)
    monkeypatch.undo()
    assert storage.read_bytes(str(tmp_path / "job=sales" / "date=2024-01-05" / "part-0.parquet")) == before


def test_reading_from_a_missing_bucket_names_the_job_and_what_to_check(s3_bucket) -> None:
    # A mistyped bucket gave alerts, plots and monitoring a bare "The specified bucket does not exist".
    bucket, options = s3_bucket
    sink = ParquetSink(f"s3://{bucket}-missing/outputs", options)

    with pytest.raises(
        SinkError,
        match=rf"^job 'sales': .*bucket that does not exist .*: 's3://{bucket}-missing/outputs/job=sales'\. Check `outputs.parquet`",
    ):
        sink.read(job="sales")


@pytest.mark.parametrize("column", ["series", "timestamp", "feature"])
def test_rows_without_a_key_are_refused_naming_the_column_and_a_row(tmp_path, make_frame, column: str) -> None:
    # Parquet took them; the BigQuery table (REQUIRED keys) then refused the window, naming no row.
    sink = ParquetSink(str(tmp_path))
    frame = make_frame("sales", "2024-01-05", "2024-01-06")
    frame.loc[3, column] = None

    with pytest.raises(
        SinkError, match=rf"^job 'sales', window .*: 1 of 8 rows have no {column} \(first: series .*\); .*nothing was written"
    ):
        sink.write(frame, job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))
    assert storage.find(str(tmp_path)) == []


# Run in a child process that SIGKILLs itself right after the first day file of the window was
# replaced: nothing in the sink gets to undo anything.
_KILLED_WRITE = """
import json, os, signal, sys
import pandas as pd
from pipelines import storage
from pipelines.sinks import ParquetSink, parquet

root, options, frame, start, end = json.loads(sys.argv[1])
parquet.LEASE_SECONDS = 3.0  # the lease this process leaves on an object store: the next write waits for it
if root.startswith("gs://"):  # as the plain_gcsfs fixture does
    import types

    import fsspec
    import gcsfs.core
    import gcsfs.retry

    async def no_pause(seconds):
        return None

    fsspec.register_implementation("gs", gcsfs.core.GCSFileSystem, clobber=True)
    gcsfs.retry.asyncio = types.SimpleNamespace(sleep=no_pause)
real = storage.move

def move(*args, **kwargs):
    real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)

storage.move = move
window = {"start": pd.Timestamp(start), "end": pd.Timestamp(end)}
ParquetSink(root, options).write(pd.read_parquet(frame), job="sales", dimensions=[], **window)
"""


@pytest.mark.parametrize("where", ["local", "s3", "gs"])
@pytest.mark.parametrize("then", ["same window", "another window"])
def test_a_write_killed_between_day_files_is_finished_by_the_next_write(
    tmp_path, make_frame, request, where: str, then: str
) -> None:
    import json
    import subprocess
    import sys

    if where == "s3":
        bucket, options = request.getfixturevalue("s3_bucket")
        sink = ParquetSink(f"s3://{bucket}/outputs", options)
    elif where == "gs":
        request.getfixturevalue("plain_gcsfs")
        emulator = request.getfixturevalue("gcs_emulator")
        sink = ParquetSink(f"gs://{emulator.bucket}/{tmp_path.name}/outputs", emulator.options)
    else:
        sink = ParquetSink(str(tmp_path / "outputs"))
    sink.write(make_frame("sales", "2024-01-04", "2024-01-09", run="old"), job="sales", dimensions=[], start=at("2024-01-04"), end=at("2024-01-09"))
    window = {"start": at("2024-01-05 12:00"), "end": at("2024-01-07 12:00")}
    new = make_frame("sales", "2024-01-05 12:00", "2024-01-07 12:00", run="new")
    new.to_parquet(tmp_path / "new.parquet")
    arguments = json.dumps([sink.root, sink.storage_options, str(tmp_path / "new.parquet"), *map(str, window.values())])
    killed = subprocess.run([sys.executable, "-c", _KILLED_WRITE, arguments], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    # Killed half-way: some days replaced, others not; readers (dashboard, alerts, plots) read the
    # staged files in place of the days not replaced yet, so they see the whole write, and change nothing.
    left = storage.find(sink.root, sink.storage_options)
    pd.testing.assert_frame_equal(sink.read(job="sales", **window), expected(new))
    assert set(sink.read(job="sales")["run_id"]) == {"old", "new"}
    assert storage.find(sink.root, sink.storage_options) == left
    assert any("/_pending/" in f"/{path}" for path in left)

    if then == "same window":
        sink.write(new, job="sales", dimensions=[], **window)
    else:  # e.g. the next interval: the killed one is finished all the same
        sink.write(make_frame("sales", "2024-01-08", "2024-01-09", run="next"), job="sales", dimensions=[], start=at("2024-01-08"), end=at("2024-01-09"))

    rows = sink.read(job="sales")
    inside = rows["timestamp"].ge(window["start"]) & rows["timestamp"].lt(window["end"])
    pd.testing.assert_frame_equal(rows[inside].reset_index(drop=True), expected(new))
    assert len(rows[~inside]) == len(make_frame("sales", "2024-01-04", "2024-01-09")) - len(new)
    # No staged file nor journal is left behind.
    assert storage.find(sink.root, sink.storage_options) == [f"job=sales/date=2024-01-0{day}/part-0.parquet" for day in range(4, 9)]


def test_two_writes_of_one_job_to_the_same_day_file_keep_both_windows(tmp_path, make_frame, monkeypatch) -> None:
    # Each write reads the day file, then replaces it: two at once (a CLI predict during a
    # scheduled publish) both read it before either replaced it, and the later one dropped the
    # hour the other wrote.
    import threading
    import time

    sink = ParquetSink(str(tmp_path))
    kept = make_frame("sales", "2024-01-05 05:00", "2024-01-05 06:00", freq="1h", run="kept")
    sink.write(kept, job="sales", dimensions=[], start=at("2024-01-05 05:00"), end=at("2024-01-05 06:00"))
    real = storage.read_bytes

    def slow(*args, **kwargs) -> bytes:
        data = real(*args, **kwargs)
        time.sleep(0.5)  # long enough for the other write to read the same day file meanwhile
        return data

    monkeypatch.setattr(storage, "read_bytes", slow)
    hours = [make_frame("sales", f"2024-01-05 0{h}:00", f"2024-01-05 0{h + 1}:00", freq="1h", run=f"h{h}") for h in (0, 1)]
    errors = []

    def write(frame: pd.DataFrame) -> None:
        try:
            sink.write(frame, job="sales", dimensions=[], start=frame["interval_start"].iloc[0], end=frame["interval_end"].iloc[0])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(frame,)) for frame in hours]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    monkeypatch.setattr(storage, "read_bytes", real)
    assert errors == []
    pd.testing.assert_frame_equal(sink.read(job="sales"), expected(kept, *hours))


def test_a_day_file_removed_after_the_listing_is_read_as_empty(tmp_path, make_frame, monkeypatch) -> None:
    # A dashboard read listed the day files, then a publish whose window left a day empty removed
    # that day's file: the read failed with a bare FileNotFoundError.
    sink = ParquetSink(str(tmp_path))
    both = make_frame("sales", "2024-01-05", "2024-01-07")
    sink.write(both, job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-07"))
    real = storage.find

    def find_then_empty_the_first_day(*args, **kwargs) -> list[str]:
        listed = real(*args, **kwargs)
        monkeypatch.setattr(storage, "find", real)
        sink.write(both.iloc[:0], job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))
        return listed

    monkeypatch.setattr(storage, "find", find_then_empty_the_first_day)
    pd.testing.assert_frame_equal(sink.read(job="sales"), expected(both[both["timestamp"] >= at("2024-01-06")]))


# A publish of the Parquet dataset and a SQL table in the order that keeps them together: the
# table commits inside ParquetSink.replacing, whose day files are replaced only after that. The
# child SIGKILLs itself inside the table's transaction ("before the commit") or after the first
# day file was replaced ("after the commit").
_KILLED_PUBLISH = """
import json, os, signal, sys
import pandas as pd
import sqlalchemy as sa
from pipelines import storage
from pipelines.sinks import ParquetSink, SqlSink, parquet

root, options, database, frame, start, end, point = json.loads(sys.argv[1])
parquet.LEASE_SECONDS = 3.0
real = storage.move

def move(*args, **kwargs):
    real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGKILL)

storage.move = move
window = {"job": "sales", "dimensions": [], "start": pd.Timestamp(start), "end": pd.Timestamp(end)}
frame = pd.read_parquet(frame)
with ParquetSink(root, options).replacing(frame, **window):
    with SqlSink(sa.create_engine(f"sqlite:///{database}"), "anomalies").replacing(frame, **window):
        if point == "before the commit":
            os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.parametrize("where", ["local", "s3"])
@pytest.mark.parametrize("point, then", [("before the commit", "old"), ("after the commit", "new")])
def test_a_publish_killed_with_a_table_leaves_both_outputs_agreeing(
    tmp_path, make_frame, request, where: str, point: str, then: str
) -> None:
    import json
    import subprocess
    import sys

    import sqlalchemy as sa

    from pipelines.sinks import SqlSink

    if where == "s3":
        bucket, options = request.getfixturevalue("s3_bucket")
        sink = ParquetSink(f"s3://{bucket}/outputs", options)
    else:
        sink = ParquetSink(str(tmp_path / "outputs"))
    table = SqlSink(sa.create_engine(f"sqlite:///{tmp_path}/out.db"), "anomalies")
    window = {"job": "sales", "dimensions": [], "start": at("2024-01-05 12:00"), "end": at("2024-01-07 12:00")}
    old = make_frame("sales", "2024-01-05 12:00", "2024-01-07 12:00", run="old")
    new = make_frame("sales", "2024-01-05 12:00", "2024-01-07 12:00", run="new")
    for output in (sink, table):
        output.write(old, **window)
    new.to_parquet(tmp_path / "new.parquet")
    arguments = json.dumps(
        [sink.root, sink.storage_options, str(tmp_path / "out.db"), str(tmp_path / "new.parquet"), str(window["start"]), str(window["end"]), point]
    )
    killed = subprocess.run([sys.executable, "-c", _KILLED_PUBLISH, arguments], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    bounds = {"start": window["start"], "end": window["end"]}

    def run_ids() -> tuple[set[str], set[str]]:
        return set(sink.read(job="sales", **bounds)["run_id"]), set(table.read(job="sales", **bounds)["run_id"])

    assert run_ids() == ({then}, {then})  # readers in between too
    # The next write of the job (here of another window) discards or finishes the killed one.
    sink.write(make_frame("sales", "2024-01-08", "2024-01-09", run="next"), job="sales", dimensions=[], start=at("2024-01-08"), end=at("2024-01-09"))
    assert run_ids() == ({then}, {then})
    assert storage.find(sink.root, sink.storage_options) == [f"job=sales/date=2024-01-0{day}/part-0.parquet" for day in (5, 6, 7, 8)]


def test_an_error_in_the_block_of_replacing_leaves_every_day_file_old(tmp_path, make_frame) -> None:
    sink = ParquetSink(str(tmp_path))
    window = {"job": "sales", "dimensions": [], "start": at("2024-01-05 12:00"), "end": at("2024-01-06 12:00")}
    old = make_frame("sales", "2024-01-05 12:00", "2024-01-06 12:00", run="old")
    sink.write(old, **window)
    with pytest.raises(RuntimeError, match="table commit failed"):
        with sink.replacing(make_frame("sales", "2024-01-05 12:00", "2024-01-06 12:00", run="new"), **window) as paths:
            assert len(paths) == 2
            assert set(sink.read(job="sales")["run_id"]) == {"old"}  # prepared, not committed
            raise RuntimeError("table commit failed")
    pd.testing.assert_frame_equal(sink.read(job="sales"), expected(old))
    assert storage.find(str(tmp_path)) == [f"job=sales/date=2024-01-0{day}/part-0.parquet" for day in (5, 6)]
    with sink.replacing(make_frame("sales", "2024-01-05 12:00", "2024-01-06 12:00", run="new"), **window):
        pass
    assert set(sink.read(job="sales")["run_id"]) == {"new"}


def object_store_sink(request, tmp_path, where: str) -> ParquetSink:
    if where == "s3":
        bucket, options = request.getfixturevalue("s3_bucket")
        return ParquetSink(f"s3://{bucket}/outputs", options)
    request.getfixturevalue("plain_gcsfs")
    emulator = request.getfixturevalue("gcs_emulator")
    return ParquetSink(f"gs://{emulator.bucket}/{tmp_path.name}/outputs", emulator.options)


@pytest.mark.parametrize("where", ["s3", "gs"])
def test_two_writes_of_one_job_to_an_object_store_keep_both_windows(tmp_path, make_frame, monkeypatch, request, where) -> None:
    # Object stores have no flock: both writes read the day file before either replaced it, and
    # the later one dropped the hour the other wrote. The lease makes them take turns.
    import threading
    import time

    sink = object_store_sink(request, tmp_path, where)
    kept = make_frame("sales", "2024-01-05 05:00", "2024-01-05 06:00", freq="1h", run="kept")
    sink.write(kept, job="sales", dimensions=[], start=at("2024-01-05 05:00"), end=at("2024-01-05 06:00"))
    real = storage.read_bytes

    def slow(url, *args, **kwargs) -> bytes:
        data = real(url, *args, **kwargs)
        if url.endswith("/part-0.parquet"):
            time.sleep(0.5)  # long enough for the other write to read the same day file meanwhile
        return data

    monkeypatch.setattr(storage, "read_bytes", slow)
    hours = [make_frame("sales", f"2024-01-05 0{h}:00", f"2024-01-05 0{h + 1}:00", freq="1h", run=f"h{h}") for h in (0, 1)]
    errors = []

    def write(frame: pd.DataFrame) -> None:
        try:
            sink.write(frame, job="sales", dimensions=[], start=frame["interval_start"].iloc[0], end=frame["interval_end"].iloc[0])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(frame,)) for frame in hours]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    monkeypatch.setattr(storage, "read_bytes", real)
    assert errors == []
    pd.testing.assert_frame_equal(sink.read(job="sales"), expected(kept, *hours))
    assert storage.find(sink.root, sink.storage_options) == ["job=sales/date=2024-01-05/part-0.parquet"]  # lock released


@pytest.mark.parametrize("where", ["s3", "gs"])
def test_a_write_waits_for_the_lease_of_another_and_takes_an_expired_one(tmp_path, make_frame, monkeypatch, request, where) -> None:
    import json
    import time

    from pipelines.sinks import parquet

    sink = object_store_sink(request, tmp_path, where)
    lock = storage.join(sink.root, "job=sales", parquet.LOCK)
    window = {"job": "sales", "dimensions": [], "start": at("2024-01-05"), "end": at("2024-01-06")}
    frame = make_frame("sales", "2024-01-05", "2024-01-06")
    held = {"owner": "worker-7:123:abc", "expires": time.time() + 3600}
    storage.atomic_write(lock, json.dumps(held).encode(), sink.storage_options)
    monkeypatch.setattr(parquet, "WRITE_LOCK_TIMEOUT_SECONDS", 1.0)
    with pytest.raises(SinkError, match=r"^job 'sales', window .*: another write of job 'sales' \(worker-7:123:abc\) has held \S+_lock.json .*no file was changed\. Wait for it or stop it"):
        sink.write(frame, **window)
    assert storage.find(sink.root, sink.storage_options) == ["job=sales/_lock.json"]

    # Left by a killed writer: taken once expired.
    storage.atomic_write(lock, json.dumps({**held, "expires": time.time() - 1}).encode(), sink.storage_options)
    sink.write(frame, **window)
    pd.testing.assert_frame_equal(sink.read(job="sales"), expected(frame))
    assert not storage.exists(lock, sink.storage_options)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_read_after_a_killed_write_skips_the_day_files_it_removes(tmp_path, make_frame, request, where: str) -> None:
    import json
    import subprocess
    import sys

    if where == "s3":
        bucket, options = request.getfixturevalue("s3_bucket")
        sink = ParquetSink(f"s3://{bucket}/outputs", options)
    else:
        sink = ParquetSink(str(tmp_path / "outputs"))
    old = make_frame("sales", "2024-01-05", "2024-01-08", run="old")
    sink.write(old, job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-08"))
    window = {"start": at("2024-01-05 12:00"), "end": at("2024-01-07 12:00")}
    # New rows on the first day only: the 6th is left empty (its file removed), the 7th keeps its afternoon.
    new = make_frame("sales", "2024-01-05 12:00", "2024-01-06", run="new")
    new.to_parquet(tmp_path / "new.parquet")
    arguments = json.dumps([sink.root, sink.storage_options, str(tmp_path / "new.parquet"), *map(str, window.values())])
    killed = subprocess.run([sys.executable, "-c", _KILLED_WRITE, arguments], capture_output=True, text=True, timeout=120)
    assert killed.returncode == -9, killed.stderr
    assert storage.exists(storage.join(sink.root, "job=sales", "date=2024-01-06", "part-0.parquet"), sink.storage_options)

    outside = old[(old["timestamp"] < window["start"]) | (old["timestamp"] >= window["end"])]
    pd.testing.assert_frame_equal(sink.read(job="sales"), expected(outside, new))


def test_a_foreign_file_among_the_journals_is_named_and_only_writes_stop(tmp_path, make_frame, caplog) -> None:
    sink = ParquetSink(str(tmp_path))
    window = {"job": "sales", "dimensions": [], "start": at("2024-01-05"), "end": at("2024-01-06")}
    frame = make_frame("sales", "2024-01-05", "2024-01-06")
    sink.write(frame, **window)
    foreign = tmp_path / "job=sales" / "_pending" / "notes.json"
    foreign.parent.mkdir(exist_ok=True)
    foreign.write_text("not json")

    pd.testing.assert_frame_equal(sink.read(job="sales"), expected(frame))  # alerts and plots go on
    assert f"ignoring {foreign}, which is not a journal of this sink" in caplog.text
    with pytest.raises(SinkError, match=rf"could not finish the earlier write of this job recorded in {foreign}.*remove it"):
        sink.write(frame, **window)
