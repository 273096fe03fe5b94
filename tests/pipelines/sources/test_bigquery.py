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

from pipelines import gcp
from pipelines.config import JobConfig, parse_job
from pipelines.errors import ConfigError, MissingDependencyError, SourceError
from pipelines.sources import BigQueryReader, read_window
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
    return {p["name"]: (p["parameterType"]["type"], p["parameterValue"]["value"]) for p in query["queryParameters"]}


def test_without_the_package_the_error_gives_the_install_command(make_job, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "google.cloud.bigquery", None)  # as if not installed
    job = make_job({"kind": "bigquery", "query": "SELECT * FROM m WHERE ts >= @start AND ts < @end"})

    with pytest.raises(
        MissingDependencyError,
        match=r"^The bigquery source needs the optional package 'google-cloud-bigquery': "
        r"pip install 'anomaly-pipelines\[bigquery\]' \(or pip install google-cloud-bigquery\)$",
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
