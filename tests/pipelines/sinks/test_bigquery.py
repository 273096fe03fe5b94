"""The BigQuery output with the real google-cloud-bigquery client.

BigQuery cannot run here: the client talks to ``tests/bigquery_standin.py``, a local HTTP
stand-in of the BigQuery REST API that runs the load jobs (Parquet) and the multi-statement
transactions with DuckDB (see its docstring for what it does not model).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from pipelines import gcp
from pipelines.config import BigQueryOutput, parse_job
from pipelines.errors import SinkError
from pipelines.scoring import publish
from pipelines.sinks import BigQuerySink
from pipelines.sinks import bigquery as bigquery_sink
from pipelines.workspace import Window
from tests.bigquery_standin import CONCURRENT_UPDATE_SHAPES, ApiError, BigQueryStandIn, concurrent_update

PROJECT = "standin-project"
TABLE = f"{PROJECT}.results.anomalies"


def at(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def expected(*frames: pd.DataFrame) -> pd.DataFrame:
    return pd.concat(frames).sort_values(["series", "timestamp", "feature"], ignore_index=True)


@pytest.fixture
def standin() -> Iterator[BigQueryStandIn]:
    with BigQueryStandIn(PROJECT) as server:
        server.create_dataset("results")
        yield server


@pytest.fixture
def sink(standin: BigQueryStandIn) -> BigQuerySink:
    return BigQuerySink(BigQueryOutput(table=TABLE, api_endpoint=standin.url))


def count(standin: BigQueryStandIn, where: str = "true") -> int:
    return standin.execute(f"SELECT count(*) FROM results.anomalies WHERE {where}")[0][0]


def tables(standin: BigQueryStandIn) -> list[str]:
    return [name for (name,) in standin.execute("SELECT table_name FROM duckdb_tables() ORDER BY table_name")]


def test_creates_the_table_and_reads_back_what_it_wrote(standin: BigQueryStandIn, sink: BigQuerySink, make_frame) -> None:
    frame = make_frame("sales", "2024-01-05", "2024-01-06", dimensions=("region",))

    assert sink.write(frame, job="sales", dimensions=["region"], start=at("2024-01-05"), end=at("2024-01-06")) == 16

    assert tables(standin) == ["anomalies"]  # the staging table is gone
    created = standin.calls("POST", r"/datasets/results/tables$")
    target = next(r.body for r in created if r.body["tableReference"]["tableId"] == "anomalies")
    assert target["timePartitioning"] == {"type": "DAY", "field": "timestamp"}
    assert target["clustering"] == {"fields": ["job"]}
    fields = {f["name"]: (f["type"], f.get("mode")) for f in target["schema"]["fields"]}
    assert fields["timestamp"] == ("TIMESTAMP", "REQUIRED") and fields["value"] == ("FLOAT64", "NULLABLE")
    assert list(fields)[-1] == "region"
    pd.testing.assert_frame_equal(sink.read(job="sales"), expected(frame))


def test_loads_parquet_then_swaps_the_window_in_one_transaction(
    standin: BigQueryStandIn, sink: BigQuerySink, make_frame
) -> None:
    frame = make_frame("sales", "2024-01-05", "2024-01-06")
    sink.write(frame, job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))

    (upload,) = standin.calls("POST", r"^/upload/bigquery/v2/projects/standin-project/jobs$")
    load = upload.body["configuration"]["load"]
    assert load["sourceFormat"] == "PARQUET" and load["writeDisposition"] == "WRITE_EMPTY"
    staging = load["destinationTable"]["tableId"]
    assert staging.startswith("_staging_anomalies_")
    (script,) = [q for q in standin.query_jobs() if "TRANSACTION" in q["query"]]
    assert script["query"].startswith("BEGIN TRANSACTION;\nDELETE FROM `standin-project.results.anomalies` ")
    assert f"FROM `standin-project.results.{staging}`;\nCOMMIT TRANSACTION;" in script["query"]
    parameters = {p["name"]: (p["parameterType"]["type"], p["parameterValue"]["value"]) for p in script["queryParameters"]}
    assert parameters == {
        "job": ("STRING", "sales"),
        "start": ("TIMESTAMP", "2024-01-05 00:00:00+00:00"),
        "end": ("TIMESTAMP", "2024-01-06 00:00:00+00:00"),
    }
    assert standin.calls("DELETE", rf"/tables/{staging}$")


def test_same_window_twice_gives_no_duplicates(standin: BigQueryStandIn, sink: BigQuerySink, make_frame) -> None:
    first = make_frame("sales", "2024-01-05", "2024-01-06", run="r1")
    again = make_frame("sales", "2024-01-05", "2024-01-06", run="r2")
    sink.write(first, job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))
    sink.write(again, job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))

    assert count(standin) == len(again) == 8
    rows = sink.read(job="sales")
    assert rows["run_id"].unique().tolist() == ["r2"]
    pd.testing.assert_frame_equal(rows, expected(again))


def test_replacing_a_window_keeps_other_windows_and_jobs(standin: BigQueryStandIn, sink: BigQuerySink, make_frame) -> None:
    first = make_frame("sales", "2024-01-05", "2024-01-06", run="r1")
    other_job = make_frame("costs", "2024-01-05", "2024-01-06", run="r1")
    later = make_frame("sales", "2024-01-05 12:00", "2024-01-06 12:00", run="r2")
    sink.write(first, job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))
    sink.write(other_job, job="costs", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))
    sink.write(later, job="sales", dimensions=[], start=at("2024-01-05 12:00"), end=at("2024-01-06 12:00"))

    kept = first[first["timestamp"] < at("2024-01-05 12:00")]
    pd.testing.assert_frame_equal(sink.read(job="sales"), expected(kept, later))
    pd.testing.assert_frame_equal(sink.read(job="costs"), expected(other_job))
    window = sink.read(job="sales", start=at("2024-01-05 06:00"), end=at("2024-01-05 18:00"))
    assert list(window["timestamp"].drop_duplicates()) == [at("2024-01-05 06:00"), at("2024-01-05 12:00")]
    assert list(window["run_id"].drop_duplicates()) == ["r1", "r2"]


def test_second_job_adds_its_dimension_columns(standin: BigQueryStandIn, sink: BigQuerySink, make_frame) -> None:
    plain = make_frame("sales", "2024-01-05", "2024-01-06")
    split = make_frame("costs", "2024-01-05", "2024-01-06", dimensions=("region", "host"))
    sink.write(plain, job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))
    sink.write(split, job="costs", dimensions=["region", "host"], start=at("2024-01-05"), end=at("2024-01-06"))

    columns = [name for (name,) in standin.execute("SELECT column_name FROM duckdb_columns() WHERE table_name = 'anomalies'")]
    assert columns[-2:] == ["region", "host"]
    pd.testing.assert_frame_equal(sink.read(job="costs"), expected(split))
    pd.testing.assert_frame_equal(sink.read(job="sales"), expected(plain))


def test_a_failed_load_leaves_the_table_unchanged(standin: BigQueryStandIn, sink: BigQuerySink, make_frame) -> None:
    old = make_frame("sales", "2024-01-05", "2024-01-06", run="r1")
    sink.write(old, job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))
    standin.fail_loads = True

    new = make_frame("sales", "2024-01-05", "2024-01-06", run="r2")
    with pytest.raises(SinkError) as caught:
        sink.write(new, job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))

    assert str(caught.value).startswith(
        "could not write 8 rows of job 'sales' for [2024-01-05 00:00:00+00:00, 2024-01-06 00:00:00+00:00) to "
        "bigquery table 'standin-project.results.anomalies': BigQuery rejected the request (Error while reading data"
    )
    assert "the table keeps its previous rows" in str(caught.value)
    assert "a rerun adds no duplicates" in str(caught.value)
    (failed,) = standin.failed_jobs()  # the load job, named so it can be looked up
    assert "load" in failed["configuration"]
    assert f") in BigQuery job standin-project:US.{failed['jobReference']['jobId']}; " in str(caught.value)
    assert tables(standin) == ["anomalies"]  # the staging table was dropped all the same
    standin.fail_loads = False
    pd.testing.assert_frame_equal(sink.read(job="sales"), expected(old))


def test_a_failing_insert_rolls_the_delete_back(standin: BigQueryStandIn, sink: BigQuerySink, make_frame) -> None:
    old = make_frame("sales", "2024-01-05", "2024-01-06", run="r1")
    sink.write(old, job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))
    # A NOT NULL column the insert leaves empty: the INSERT fails after the DELETE has run.
    standin.execute("ALTER TABLE results.anomalies ADD COLUMN tenant VARCHAR DEFAULT 'x'")
    standin.execute("ALTER TABLE results.anomalies ALTER COLUMN tenant SET NOT NULL")
    standin.execute("ALTER TABLE results.anomalies ALTER COLUMN tenant DROP DEFAULT")

    new = make_frame("sales", "2024-01-05", "2024-01-06", run="r2")
    with pytest.raises(SinkError, match=r"BigQuery rejected the request \(.*NOT NULL constraint.*tenant") as caught:
        sink.write(new, job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))

    (failed,) = standin.failed_jobs()
    assert "BEGIN TRANSACTION" in failed["configuration"]["query"]["query"]
    assert f"in BigQuery job standin-project:US.{failed['jobReference']['jobId']}; " in str(caught.value)
    assert count(standin) == 8
    assert count(standin, "run_id = 'r1'") == 8


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        ("permission denied", r"permission denied or credentials rejected \(Access Denied"),
        ("missing dataset", r"a table, dataset or project was not found \(Not found: Dataset standin-project:nowhere"),
        ("unreachable", r"cannot reach http://127\.0\.0\.1:1 or it failed"),
        ("table update rate limit", r"a BigQuery quota or rate limit was exceeded \(Exceeded rate limits: too many table update"),
    ],
)
def test_failures_name_the_job_window_and_table_and_write_nothing(
    standin: BigQueryStandIn, make_frame, monkeypatch: pytest.MonkeyPatch, case: str, problem: str
) -> None:
    output = BigQueryOutput(table=TABLE, api_endpoint=standin.url)
    if case == "permission denied":
        standin.deny = True
    elif case == "table update rate limit":  # BigQuery's 403 for too many writes to one table
        standin.fail_with = ApiError(403, "rateLimitExceeded", "Exceeded rate limits: too many table update operations")
        monkeypatch.setattr(gcp, "RETRY_TIMEOUT", 0.5)  # the client retries rate limits for two minutes
    elif case == "missing dataset":
        output = BigQueryOutput(table=f"{PROJECT}.nowhere.anomalies", api_endpoint=standin.url)
    else:
        output = BigQueryOutput(table=TABLE, api_endpoint="http://127.0.0.1:1")
        monkeypatch.setattr(gcp, "RETRY_TIMEOUT", 0.5)  # the default would retry for two minutes
    frame = make_frame("sales", "2024-01-05", "2024-01-06")

    with pytest.raises(SinkError) as caught:
        BigQuerySink(output).write(frame, job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))

    message = str(caught.value)
    assert message.startswith(
        "could not write 8 rows of job 'sales' for [2024-01-05 00:00:00+00:00, 2024-01-06 00:00:00+00:00) "
        f"to {output.describe()}: "
    )
    assert "the table keeps its previous rows" in message
    assert re.search(problem, message), message
    assert "BigQuery job" not in message  # refused before BigQuery made a job: none to look up
    standin.deny, standin.fail_with = False, None
    assert tables(standin) == []


def test_rows_of_another_window_are_refused_before_anything_is_sent(
    standin: BigQueryStandIn, sink: BigQuerySink, make_frame
) -> None:
    frame = make_frame("sales", "2024-01-05", "2024-01-07")

    with pytest.raises(SinkError, match=r"rows belong to another job or lie outside the window"):
        sink.write(frame, job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))

    assert standin.requests == []


def test_publish_writes_the_window_to_bigquery(standin: BigQueryStandIn, make_frame, tmp_path: Path) -> None:
    job = parse_job(
        {
            "name": "sales",
            "source": {"kind": "file", "path": str(tmp_path / "in.csv")},
            "timestamp": "ts",
            "frequency": "6h",
            "dimensions": ["region"],
            "features": ["x", "y"],
            "model": {"kind": "seasonal_mad"},
            "outputs": {
                "parquet": str(tmp_path / "out"),
                "bigquery": {"table": TABLE, "api_endpoint": standin.url},
            },
        }
    )
    frame = make_frame("sales", "2024-01-05", "2024-01-06", dimensions=("region",))
    scored = tmp_path / "scored.parquet"
    frame.to_parquet(scored)
    window = Window(at("2024-01-05").to_pydatetime(), at("2024-01-06").to_pydatetime())

    for _ in range(2):  # a rerun of the window replaces its rows
        result = publish(job, window, [str(scored)])

    assert result.table == "bigquery table 'standin-project.results.anomalies'"
    assert count(standin) == 16
    pd.testing.assert_frame_equal(BigQuerySink(job.outputs.bigquery).read(job="sales"), expected(frame))


def test_large_batches_upload_through_the_resumable_protocol(
    standin: BigQueryStandIn, sink: BigQuerySink, make_frame, monkeypatch: pytest.MonkeyPatch
) -> None:
    from google.cloud.bigquery import client

    # Batches above this size take the client's resumable upload; lowered so a small one does.
    monkeypatch.setattr(client, "_MAX_MULTIPART_SIZE", 1)
    frame = make_frame("sales", "2024-01-05", "2024-01-06")

    sink.write(frame, job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))

    uploads = standin.calls("POST", r"^/upload/") + standin.calls("PUT", r"^/upload/")
    assert [(r.method, r.params["uploadType"]) for r in uploads][:2] == [("POST", "resumable"), ("PUT", "resumable")]
    pd.testing.assert_frame_equal(sink.read(job="sales"), expected(frame))


@pytest.mark.parametrize("table", ["anomalies", "results.anomalies", "p.d.t-1", "p.d.t; DROP"])
def test_the_table_must_be_project_dataset_table(table: str) -> None:
    with pytest.raises(ValueError, match="String should match pattern"):
        BigQueryOutput(table=table)


def transactions(standin: BigQueryStandIn) -> list[dict]:
    return [q for q in standin.query_jobs() if "TRANSACTION" in q["query"]]


@pytest.mark.parametrize("shape", CONCURRENT_UPDATE_SHAPES)
def test_a_transaction_aborted_by_a_concurrent_update_runs_again(
    standin: BigQueryStandIn,
    sink: BigQuerySink,
    make_frame,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    shape: str,
) -> None:
    monkeypatch.setattr(bigquery_sink, "CONFLICT_BACKOFF", 0.0)
    old = make_frame("sales", "2024-01-05", "2024-01-06", run="r1")
    sink.write(old, job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))
    standin.abort_commits = [concurrent_update("standin-project:results.anomalies", shape)]
    new = make_frame("sales", "2024-01-05", "2024-01-06", run="r2")

    with caplog.at_level(logging.WARNING, logger="pipelines.sinks.bigquery"):
        written = sink.write(new, job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))

    assert written == 8
    (aborted,) = standin.failed_jobs()  # rolled back at COMMIT after its DELETE and INSERT had run
    assert aborted["status"]["errorResult"]["reason"] == ("aborted" if shape == "aborted" else "invalidQuery")
    assert len(transactions(standin)) == 3  # the first write, the aborted one, the one run again
    pd.testing.assert_frame_equal(sink.read(job="sales"), expected(new))  # once: no duplicates, no r1
    # Only the warnings: Airflow's logging set up by earlier tests of a whole run lets INFO records through too.
    (warning,) = [record for record in caplog.records if record.levelno >= logging.WARNING]
    assert f"aborted job standin-project:US.{aborted['jobReference']['jobId']} (attempt 1 of 3)" in warning.getMessage()
    assert tables(standin) == ["anomalies"]


@pytest.mark.parametrize("shape", CONCURRENT_UPDATE_SHAPES)
def test_a_write_that_keeps_conflicting_fails_as_a_conflict_not_as_a_query_to_fix(
    standin: BigQueryStandIn, sink: BigQuerySink, make_frame, monkeypatch: pytest.MonkeyPatch, shape: str
) -> None:
    monkeypatch.setattr(bigquery_sink, "CONFLICT_BACKOFF", 0.0)
    old = make_frame("sales", "2024-01-05", "2024-01-06", run="r1")
    sink.write(old, job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))
    error = concurrent_update("standin-project:results.anomalies", shape)
    standin.abort_commits = [error] * (bigquery_sink.CONFLICT_ATTEMPTS + 1)

    new = make_frame("sales", "2024-01-05", "2024-01-06", run="r2")
    with pytest.raises(SinkError) as caught:
        sink.write(new, job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))

    message = str(caught.value)
    last = standin.failed_jobs()[-1]["jobReference"]["jobId"]
    assert (
        "another write to the same table ran at the same time and BigQuery aborted this one "
        f"({error.message}) in BigQuery job standin-project:US.{last}; the table keeps its previous rows. "
        "Nothing was changed" in message
    )
    assert "Fix the query" not in message and "cannot reach" not in message
    assert len(transactions(standin)) == 1 + bigquery_sink.CONFLICT_ATTEMPTS  # bounded
    assert len(standin.abort_commits) == 1
    pd.testing.assert_frame_equal(sink.read(job="sales"), expected(old))
    assert tables(standin) == ["anomalies"]


def test_a_transaction_failing_otherwise_is_not_run_again(standin: BigQueryStandIn, sink: BigQuerySink, make_frame) -> None:
    frame = make_frame("sales", "2024-01-05", "2024-01-06")
    sink.write(frame, job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))
    standin.abort_commits = [ApiError(400, "invalidQuery", "Query error: division by zero")]

    with pytest.raises(SinkError, match=r"BigQuery rejected the request \(Query error: division by zero\)"):
        sink.write(frame, job="sales", dimensions=[], start=at("2024-01-05"), end=at("2024-01-06"))

    assert len(transactions(standin)) == 2


def test_a_table_another_job_created_meanwhile_gets_the_dimensions_this_job_lacks(
    standin: BigQueryStandIn, sink: BigQuerySink, make_frame, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two jobs' first writes to a new shared table: the one whose create_table found it created was
    # told "does not have a column with name host ... Fix the query or the table".
    from google.cloud import bigquery

    costs = make_frame("costs", "2024-01-05", "2024-01-06", dimensions=("region",))
    sales = make_frame("sales", "2024-01-05", "2024-01-06", dimensions=("host",))
    real_create = bigquery.Client.create_table
    other_writes = [lambda: sink.write(costs, job="costs", dimensions=["region"], start=at("2024-01-05"), end=at("2024-01-06"))]

    def other_job_first(client, table, *args, **kwargs):
        if getattr(table, "table_id", None) == "anomalies" and other_writes:
            other_writes.pop()()  # lands between this write's get_table (not found) and its create_table
        return real_create(client, table, *args, **kwargs)

    monkeypatch.setattr(bigquery.Client, "create_table", other_job_first)
    sink.write(sales, job="sales", dimensions=["host"], start=at("2024-01-05"), end=at("2024-01-06"))

    assert other_writes == []
    pd.testing.assert_frame_equal(sink.read(job="sales"), expected(sales))
    pd.testing.assert_frame_equal(sink.read(job="costs"), expected(costs))


def test_a_dimension_column_of_another_case_is_not_added_again(standin: BigQueryStandIn, sink: BigQuerySink, make_frame) -> None:
    # BigQuery column names ignore case: each write of the second job ran an ALTER TABLE that
    # changed nothing but counted against the table's limit on metadata updates.
    costs = make_frame("costs", "2024-01-05", "2024-01-06", dimensions=("Region",))
    sales = make_frame("sales", "2024-01-05", "2024-01-06", dimensions=("region",))
    sink.write(costs, job="costs", dimensions=["Region"], start=at("2024-01-05"), end=at("2024-01-06"))
    for _ in range(2):
        sink.write(sales, job="sales", dimensions=["region"], start=at("2024-01-05"), end=at("2024-01-06"))

    assert [q["query"] for q in standin.query_jobs() if "ALTER TABLE" in q["query"]] == []
    assert count(standin) == len(costs) + len(sales)


def test_a_dimension_stored_in_a_column_of_another_case_reads_back_under_the_jobs_name(
    standin: BigQueryStandIn, sink: BigQuerySink, make_frame
) -> None:
    # The job's "region" came back as "Region", the column another job had created.
    costs = make_frame("costs", "2024-01-05", "2024-01-06", dimensions=("Region",))
    sales = make_frame("sales", "2024-01-05", "2024-01-06", dimensions=("region",))
    sink.write(costs, job="costs", dimensions=["Region"], start=at("2024-01-05"), end=at("2024-01-06"))
    sink.write(sales, job="sales", dimensions=["region"], start=at("2024-01-05"), end=at("2024-01-06"))

    pd.testing.assert_frame_equal(sink.read(job="sales"), expected(sales))
    pd.testing.assert_frame_equal(sink.read(job="costs"), expected(costs))


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ("DROP COLUMN region; ALTER TABLE results.anomalies ADD COLUMN region BIGINT", "region is INTEGER, not STRING"),
        ("ALTER COLUMN is_anomaly TYPE VARCHAR", "is_anomaly is STRING, not BOOL"),
        ("DROP COLUMN feature_score", r"feature_score \(FLOAT64\) is missing"),
    ],
)
def test_a_table_whose_columns_differ_from_the_output_is_named_before_anything_is_replaced(
    standin: BigQueryStandIn, sink: BigQuerySink, make_frame, change: str, says: str
) -> None:
    # The transaction failed with BigQuery's words alone ("Could not convert string 'a' to INT64")
    # and the advice to fix a query the user never wrote.
    old = make_frame("sales", "2024-01-05", "2024-01-06", run="r1", dimensions=("region",))
    sink.write(old, job="sales", dimensions=["region"], start=at("2024-01-05"), end=at("2024-01-06"))
    standin.execute(f"ALTER TABLE results.anomalies {change}")

    new = make_frame("sales", "2024-01-05", "2024-01-06", run="r2", dimensions=("region",))
    with pytest.raises(
        SinkError,
        match=rf"^could not write 16 rows of job 'sales' for .*: the table's columns do not match the output's: {says}; "
        r"the table keeps its previous rows\. Change or add those columns .* or set outputs.bigquery.table to a new table",
    ):
        sink.write(new, job="sales", dimensions=["region"], start=at("2024-01-05"), end=at("2024-01-06"))

    assert len(transactions(standin)) == 1  # the window's transaction never ran
    assert count(standin, "run_id = 'r1'") == 16
    assert tables(standin) == ["anomalies"]
