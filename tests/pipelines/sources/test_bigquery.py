"""The BigQuery source with the real google-cloud-bigquery client.

BigQuery cannot run here: the client talks to ``tests/bigquery_standin.py``, a local HTTP
stand-in of the BigQuery REST API that evaluates the queries with DuckDB (see its docstring for
what it does not model). The job points at it with ``api_endpoint``.
"""

from __future__ import annotations

import re
import socket
import sys
from collections.abc import Iterator
from typing import Any

import pandas as pd
import pytest
from google.api_core.exceptions import BadRequest

from pipelines import gcp
from pipelines.config import JobConfig, parse_job
from pipelines.errors import ConfigError, MissingDependencyError, SourceError
from pipelines.sources import BigQueryReader, read_window
from pipelines.sources.bigquery import compared_type
from tests.bigquery_standin import ApiError, BigQueryStandIn

PROJECT = "standin-project"
QUERY = f"SELECT ts, host, value, note FROM `{PROJECT}.metrics.cpu` WHERE ts >= @start AND ts < @end ORDER BY ts, host"


def at(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


@pytest.fixture
def standin() -> Iterator[BigQueryStandIn]:
    """The stand-in holding ``metrics.cpu``: hosts a and b every hour of 2024-01-01 and -02."""
    with BigQueryStandIn(PROJECT) as server:
        server.create_dataset("metrics")
        server.execute(
            "CREATE TABLE metrics.cpu AS SELECT TIMESTAMPTZ '2024-01-01 00:00:00+00' + to_hours(i // 2) AS ts, "
            "CASE WHEN i % 2 = 0 THEN 'a' ELSE 'b' END AS host, i / 4 AS value, 'n' || i AS note FROM range(96) t(i)"
        )
        yield server


def bigquery_job(standin: BigQueryStandIn, query: str = QUERY, **source: Any) -> JobConfig:
    return parse_job(
        {
            "name": "cpu_load",
            "source": {"kind": "bigquery", "query": query, "project": PROJECT, "api_endpoint": standin.url, **source},
            "timestamp": "ts",
            "frequency": "1h",
            "dimensions": ["host"],
            "features": ["value"],
            "model": {"kind": "iforest"},
        }
    )


def sent_parameters(standin: BigQueryStandIn) -> dict[str, tuple[str, str]]:
    (query,) = standin.query_jobs()
    return parameters_of(query)


def parameters_of(query: dict[str, Any]) -> dict[str, tuple[str, str]]:
    return {p["name"]: (p["parameterType"]["type"], p["parameterValue"]["value"]) for p in query["queryParameters"]}


@pytest.fixture
def civil(standin: BigQueryStandIn) -> BigQueryStandIn:
    """``metrics.civil``: host a every hour of 2024-01-01 and -02 with a DATETIME ``dt`` (UTC wall
    time), its DATE ``day`` and its TIMESTAMP ``ts``."""
    standin.execute(
        "CREATE TABLE metrics.civil AS SELECT TIMESTAMP '2024-01-01 00:00:00' + to_hours(i) AS dt, "
        "CAST(TIMESTAMP '2024-01-01 00:00:00' + to_hours(i) AS DATE) AS day, "
        "TIMESTAMPTZ '2024-01-01 00:00:00+00' + to_hours(i) AS ts, 'a' AS host, i::DOUBLE AS value FROM range(48) t(i)"
    )
    return standin


def civil_job(standin: BigQueryStandIn, column: str, where: str | None = None, **source: Any) -> JobConfig:
    where = where or f"{column} >= @start AND {column} < @end"
    query = f"SELECT {column}, host, value FROM `{PROJECT}.metrics.civil` WHERE {where} ORDER BY {column}, value"
    return parse_job(
        {
            "name": "civil",
            "source": {"kind": "bigquery", "query": query, "project": PROJECT, "api_endpoint": standin.url, **source},
            "timestamp": column,
            "frequency": "1h",
            "dimensions": ["host"],
            "features": ["value"],
            "model": {"kind": "iforest"},
        }
    )


def test_without_the_package_the_error_gives_the_install_command(make_job, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "google.cloud.bigquery", None)  # as if not installed
    job = make_job({"kind": "bigquery", "query": "SELECT * FROM m WHERE ts >= @start AND ts < @end"})

    with pytest.raises(
        MissingDependencyError,
        match=r"^The bigquery source needs the optional package 'google-cloud-bigquery': "
        r"pip install -c constraints.txt -e '\.\[bigquery\]' in the anomaly-pipelines repository \(or pip install google-cloud-bigquery\)$",
    ):
        read_window(job, pd.Timestamp("2024-01-01", tz="UTC"), None)


def test_reads_the_window_bound_as_timestamp_parameters(standin: BigQueryStandIn) -> None:
    frame = read_window(bigquery_job(standin), at("2024-01-01 06:00"), at("2024-01-01 09:00"))

    expected = pd.DataFrame(
        {
            "ts": pd.to_datetime(["2024-01-01 06:00"] * 2 + ["2024-01-01 07:00"] * 2 + ["2024-01-01 08:00"] * 2, utc=True),
            "host": ["a", "b"] * 3,
            "value": [3.0, 3.25, 3.5, 3.75, 4.0, 4.25],
        }
    ).astype({"ts": "datetime64[us, UTC]", "host": "str"})
    pd.testing.assert_frame_equal(frame, expected)
    (query,) = standin.query_jobs()
    assert query["query"] == QUERY  # the window is never formatted into the SQL
    assert query["useLegacySql"] is False and query["parameterMode"] == "NAMED"
    assert sent_parameters(standin) == {
        "start": ("TIMESTAMP", "2024-01-01 06:00:00+00:00"),
        "end": ("TIMESTAMP", "2024-01-01 09:00:00+00:00"),
    }


def test_unbounded_window_binds_the_widest_timestamps(standin: BigQueryStandIn) -> None:
    frame = read_window(bigquery_job(standin), None, None)

    assert len(frame) == 96
    assert sent_parameters(standin) == {
        "start": ("TIMESTAMP", "0001-01-01 00:00:00+00:00"),
        "end": ("TIMESTAMP", "9999-12-31 23:59:59.999999+00:00"),
    }


def test_results_larger_than_a_page_are_read_page_by_page_over_rest(standin: BigQueryStandIn) -> None:
    standin.page_size = 10
    job = bigquery_job(standin)
    reader = BigQueryReader(job)

    frame = reader.read(at("2024-01-01"), at("2024-01-02"))

    assert not reader.uses_storage_api  # the stand-in speaks REST only, like every emulator
    assert len(frame) == 48 and frame["ts"].is_monotonic_increasing
    assert frame["value"].tolist() == [i / 4 for i in range(48)]
    pages = [r for r in standin.calls("GET", r"/queries/") if r.params.get("maxResults") != "0"]
    assert [r.params.get("pageToken") for r in pages] == [None, "10", "20", "30", "40"]
    assert all(r.params["formatOptions.useInt64Timestamp"] == "True" for r in pages)


def test_without_an_endpoint_results_download_over_the_storage_api(standin: BigQueryStandIn) -> None:
    pytest.importorskip("google.cloud.bigquery_storage")
    source = bigquery_job(standin).source.model_dump()
    job = bigquery_job(standin, **{**source, "api_endpoint": None})

    assert BigQueryReader(job).uses_storage_api


def test_bigquery_types_become_the_right_pandas_dtypes(standin: BigQueryStandIn) -> None:
    standin.execute(
        "CREATE TABLE metrics.typed AS SELECT * FROM (VALUES "
        "(TIMESTAMPTZ '2024-01-01 00:00:00.000001+00', 'a', true, 1.5::DOUBLE, 7::BIGINT), "
        "(TIMESTAMPTZ '2024-01-01 01:00:00+00', NULL, NULL, NULL, NULL)) t(ts, host, up, value, n)"
    )
    job = parse_job(
        {
            "name": "typed",
            "source": {
                "kind": "bigquery",
                "query": f"SELECT * FROM `{PROJECT}.metrics.typed` WHERE ts >= @start AND ts < @end ORDER BY ts",
                "project": PROJECT,
                "api_endpoint": standin.url,
            },
            "timestamp": "ts",
            "frequency": "1h",
            "dimensions": ["host", "up"],
            "features": ["value", "n"],
            "model": {"kind": "iforest"},
        }
    )

    frame = read_window(job, None, None)

    assert {name: str(dtype) for name, dtype in frame.dtypes.items()} == {
        "ts": "datetime64[us, UTC]",
        "host": "str",
        "up": "boolean",
        "value": "float64",
        "n": "Int64",
    }
    assert frame["ts"].tolist() == [at("2024-01-01 00:00:00.000001"), at("2024-01-01 01:00")]
    assert frame.iloc[0][["host", "up", "value", "n"]].tolist() == ["a", True, 1.5, 7]
    assert frame.iloc[1][["host", "up", "value", "n"]].isna().all()


def test_job_params_are_bound_with_their_types(standin: BigQueryStandIn) -> None:
    query = (
        f"SELECT ts, host, value FROM `{PROJECT}.metrics.cpu` WHERE ts >= @start AND ts < @end "
        "AND host = @host AND value >= @low * @scale AND (@everything OR value < 5) ORDER BY ts"
    )
    job = bigquery_job(standin, query, params={"host": "b", "low": 2, "scale": 1.5, "everything": False})

    frame = read_window(job, None, None)

    assert frame["host"].unique().tolist() == ["b"]
    assert frame["value"].tolist() == [3.25, 3.75, 4.25, 4.75]  # 3 <= value < 5
    parameters = sent_parameters(standin)
    assert {name: parameters[name] for name in ("host", "low", "scale", "everything")} == {
        "host": ("STRING", "b"),
        "low": ("INT64", "2"),
        "scale": ("FLOAT64", 1.5),  # the client sends FLOAT64 values as JSON numbers
        "everything": ("BOOL", "false"),
    }


@pytest.mark.parametrize("hostile", ["a' OR '1'='1", "a'; DROP TABLE metrics.cpu; --"])
def test_a_hostile_parameter_value_is_bound_not_formatted(standin: BigQueryStandIn, hostile: str) -> None:
    query = f"SELECT ts, host, value FROM `{PROJECT}.metrics.cpu` WHERE ts >= @start AND ts < @end AND host = @host"
    job = bigquery_job(standin, query, params={"host": hostile})

    frame = read_window(job, None, None)

    assert frame.empty  # no host is literally called that
    assert standin.query_jobs()[0]["query"] == query
    assert sent_parameters(standin)["host"] == ("STRING", hostile)
    assert standin.execute("SELECT count(*) FROM metrics.cpu") == [(96,)]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"start": "x"}, r"source\.bigquery\.params: must not set \['start'\]: @start and @end are the window"),
        ({"a-b": 1}, r"source\.bigquery\.params: parameter names must be letters, digits and _"),
    ],
)
def test_params_that_cannot_be_bound_are_configuration_errors(
    standin: BigQueryStandIn, params: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        bigquery_job(standin, params=params)


def _closed_port() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize(
    ("case", "problem", "todo"),
    [
        ("query error", r"BigQuery rejected the request \(.*no_such_column", "Fix the query"),
        ("missing table", r"a table, dataset or project was not found \(.*nowhere", "Check the project, dataset and table"),
        ("permission denied", r"permission denied or credentials rejected \(Access Denied", "roles/bigquery.jobUser"),
        ("unreachable", r"cannot reach http://127\.0\.0\.1:\d+ or it failed", "the task's retries will try again"),
    ],
)
def test_failures_name_the_job_source_and_window_and_what_to_do(
    standin: BigQueryStandIn, monkeypatch: pytest.MonkeyPatch, case: str, problem: str, todo: str
) -> None:
    query = QUERY
    endpoint = standin.url
    if case == "query error":
        query = QUERY.replace("note", "no_such_column")
    elif case == "missing table":
        query = QUERY.replace("metrics.cpu", "metrics.nowhere")
    elif case == "permission denied":
        standin.deny = True
    else:
        endpoint = _closed_port()
        monkeypatch.setattr(gcp, "RETRY_TIMEOUT", 0.5)  # the default would retry for two minutes
    job = bigquery_job(standin, query, api_endpoint=endpoint)

    with pytest.raises(SourceError) as caught:
        read_window(job, at("2024-01-01"), at("2024-01-02"))

    message = str(caught.value)
    assert message.startswith(
        "job 'cpu_load': cannot read bigquery source (project standin-project) for window "
        "[2024-01-01T00:00:00+00:00, 2024-01-02T00:00:00+00:00): "
    )
    assert re.search(problem, message), message
    assert todo in message


@pytest.mark.parametrize(
    ("code", "reason", "text"),
    [
        (403, "quotaExceeded", "Quota exceeded: Your project exceeded quota for free query bytes scanned"),
        (403, "rateLimitExceeded", "Exceeded rate limits: too many concurrent queries for this project"),
        (429, "rateLimitExceeded", "Exceeded rate limits: too many api requests per user per method"),
    ],
)
def test_an_exceeded_quota_is_not_reported_as_permission_denied(
    standin: BigQueryStandIn, monkeypatch: pytest.MonkeyPatch, code: int, reason: str, text: str
) -> None:
    # BigQuery answers exceeded quotas and rate limits with 403 (as a denial) or 429; see
    # https://cloud.google.com/bigquery/docs/troubleshoot-quotas
    standin.fail_with = ApiError(code, reason, text)
    monkeypatch.setattr(gcp, "RETRY_TIMEOUT", 0.5)  # the client retries rate limits for two minutes

    with pytest.raises(SourceError) as caught:
        read_window(bigquery_job(standin), at("2024-01-01"), at("2024-01-02"))

    message = str(caught.value)
    assert message.startswith("job 'cpu_load': cannot read bigquery source (project standin-project) for window ")
    assert f"a BigQuery quota or rate limit was exceeded ({text})" in message
    assert "the task's retries try again" in message
    assert "permission denied" not in message and "roles/bigquery.jobUser" not in message


def test_a_project_is_required(standin: BigQueryStandIn) -> None:
    source = {**bigquery_job(standin).source.model_dump(), "project": None}
    job = bigquery_job(standin, **source)

    with pytest.raises(ConfigError, match=r"^job 'cpu_load': cannot read bigquery source .*: no Google Cloud project"):
        read_window(job, None, None)


NO_MATCH = "No matching signature for operator >= for argument types:"


@pytest.mark.parametrize(
    ("column", "kind", "value", "error"),
    [
        ("dt", "TIMESTAMP", "2024-01-01 06:00:00+00:00", f"{NO_MATCH} DATETIME, TIMESTAMP"),
        ("day", "TIMESTAMP", "2024-01-01 06:00:00+00:00", f"{NO_MATCH} DATE, TIMESTAMP"),
        ("ts", "DATETIME", "2024-01-01T06:00:00", f"{NO_MATCH} TIMESTAMP, DATETIME"),
        ("ts", "DATE", "2024-01-01", f"{NO_MATCH} TIMESTAMP, DATE"),
        ("dt", "DATETIME", "2024-01-01T06:00:00", None),
        ("day", "DATE", "2024-01-01", None),
        ("day", "DATETIME", "2024-01-01T06:00:00", None),  # BigQuery converts DATE to DATETIME
        ("ts", "TIMESTAMP", "2024-01-01 06:00:00+00:00", None),
    ],
)
def test_the_standin_refuses_to_compare_timestamp_with_datetime_or_date_as_bigquery_does(
    civil: BigQueryStandIn, column: str, kind: str, value: str, error: str | None
) -> None:
    from google.cloud import bigquery

    client = gcp.bigquery_client(purpose="test", project=PROJECT, api_endpoint=civil.url)
    config = bigquery.QueryJobConfig(query_parameters=[bigquery.ScalarQueryParameter("start", kind, value)])
    query = f"SELECT {column} FROM `{PROJECT}.metrics.civil` WHERE {column} >= @start"

    with client:
        if error is None:
            assert len(list(client.query(query, job_config=config).result())) > 0
            return
        with pytest.raises(BadRequest) as caught:
            client.query(query, job_config=config).result()
        with pytest.raises(BadRequest, match=re.escape(error)):  # a dry run: jobs.insert answers 400 itself
            client.query(query, job_config=bigquery.QueryJobConfig(dry_run=True, query_parameters=config.query_parameters))

    assert caught.value.errors[0]["reason"] == "invalidQuery"
    assert caught.value.errors[0]["message"].startswith(f"{error}. Supported signature: ANY >= ANY")
    (failed,) = civil.failed_jobs()  # a job BigQuery keeps, to look up; the dry run left none
    assert caught.value.query_job.job_id == failed["jobReference"]["jobId"]
    assert failed["status"]["state"] == "DONE" and failed["status"]["errorResult"]["reason"] == "invalidQuery"


def test_a_datetime_column_is_compared_with_the_window_as_utc_datetimes(civil: BigQueryStandIn) -> None:
    job = civil_job(civil, "dt")

    frame = read_window(job, pd.Timestamp("2024-01-01 08:00", tz="Europe/Berlin"), at("2024-01-01 09:00"))

    assert frame["dt"].tolist() == [pd.Timestamp("2024-01-01 07:00"), pd.Timestamp("2024-01-01 08:00")]
    assert sent_parameters(civil) == {
        "start": ("DATETIME", "2024-01-01T07:00:00.000000"),
        "end": ("DATETIME", "2024-01-01T09:00:00.000000"),
    }
    dry_runs = civil.query_jobs(dry_run=True)  # how the type was learnt: BigQuery refused TIMESTAMP
    assert [parameters_of(q)["start"][0] for q in dry_runs] == ["TIMESTAMP", "DATETIME"]
    assert civil.failed_jobs() == []  # dry runs leave no failed job behind


def test_an_unbounded_window_binds_the_widest_datetimes(civil: BigQueryStandIn) -> None:
    frame = read_window(civil_job(civil, "dt"), None, None)

    assert len(frame) == 48
    assert sent_parameters(civil) == {  # with four-digit years, which BigQuery needs
        "start": ("DATETIME", "0001-01-01T00:00:00.000000"),
        "end": ("DATETIME", "9999-12-31T23:59:59.999999"),
    }


def test_a_date_column_is_read_for_the_days_whose_midnight_lies_in_the_window(civil: BigQueryStandIn) -> None:
    civil.execute("CREATE TABLE metrics.daily AS SELECT DATE '2024-01-01' + i::INT AS day, i::DOUBLE AS value FROM range(6) t(i)")
    query = f"SELECT day, value FROM `{PROJECT}.metrics.daily` WHERE day >= @start AND day < @end ORDER BY day"
    job = bigquery_job(civil, query)

    frame = read_window(job, at("2024-01-02 06:00"), at("2024-01-04 06:00"))

    assert frame["value"].tolist() == [2.0, 3.0]  # 2024-01-03 and -04; the 2nd's midnight is before 06:00
    assert sent_parameters(civil) == {"start": ("DATE", "2024-01-03"), "end": ("DATE", "2024-01-05")}


def test_a_window_compared_with_two_types_fails_with_bigquerys_error_and_how_to_convert(civil: BigQueryStandIn) -> None:
    job = civil_job(civil, "dt", where="dt >= @start AND ts < @end")

    with pytest.raises(SourceError) as caught:
        read_window(job, at("2024-01-01 06:00"), at("2024-01-01 09:00"))

    message = str(caught.value)
    (failed,) = civil.failed_jobs()  # the query ran (with TIMESTAMP parameters) and failed
    assert "No matching signature for operator >= for argument types: DATETIME, TIMESTAMP" in message
    assert f"in BigQuery job standin-project:US.{failed['jobReference']['jobId']}" in message
    assert "dt >= DATETIME(@start) AND dt < DATETIME(@end)" in message


@pytest.mark.parametrize(
    ("message", "compared"),
    [
        ("No matching signature for operator >= for argument types: DATETIME, TIMESTAMP. Supported signature: "
         "ANY >= ANY at [1:56]", "DATETIME"),
        ("No matching signature for operator BETWEEN for argument types: DATE, TIMESTAMP, TIMESTAMP. Supported "
         "signature: (ANY) BETWEEN (ANY) AND (ANY) at [3:9]", "DATE"),
        ("No matching signature for operator >= for argument types: TIMESTAMP, DATETIME\n  Signature: T1 >= T1\n"
         "    Unable to find common supertype for templated argument <T1>\n      Input types for <T1>: "
         "{TIMESTAMP, DATETIME} at [1:50]", "DATETIME"),
        ("No matching signature for function GREATEST for argument types: DATE, DATETIME, TIMESTAMP", "DATETIME"),
        ("No matching signature for operator = for argument types: INT64, STRING. Supported signature: ANY = ANY", None),
        ("No matching signature for operator >= for argument types: DATETIME, DATE", None),
        ("Unrecognized name: dt at [1:8]", None),
    ],
)
def test_the_type_compared_with_the_window_is_read_from_bigquerys_error(message: str, compared: str | None) -> None:
    error = BadRequest(message, errors=[{"reason": "invalidQuery", "message": message}])

    assert compared_type(error) == compared


def test_a_failed_query_names_its_bigquery_job_and_location(standin: BigQueryStandIn) -> None:
    job = bigquery_job(standin, QUERY.replace("note", "no_such_column"), location="EU")

    with pytest.raises(SourceError) as caught:
        read_window(job, at("2024-01-01"), at("2024-01-02"))

    (failed,) = standin.failed_jobs()
    job_id = failed["jobReference"]["jobId"]
    assert failed["jobReference"]["location"] == "EU"
    message = str(caught.value)
    assert "BigQuery rejected the request (" in message and f") in BigQuery job standin-project:EU.{job_id}. " in message
    assert message.endswith(
        f"The job's details: BigQuery console > Job history, or bq show -j --location=EU standin-project:{job_id}."
    )
