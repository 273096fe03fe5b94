"""The scoring API with the real app and real trained models (demo_web_metrics)."""

from __future__ import annotations

import pandas as pd
import pytest

from pipelines import paging
from pipelines.schema import output_columns

BASE = "/api/v1/jobs/demo_web_metrics"


def test_detect_scores_points_in_the_output_schema(client, headers, spike_points):
    answer = client.post(f"{BASE}/detect", json={"points": spike_points}, headers=headers)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["job"] == "demo_web_metrics" and body["run_id"].startswith("api__")
    assert body["points"] == len(body["results"]) == 72 * 2
    results = pd.DataFrame(body["results"])
    assert list(results.columns) == output_columns(["region"])
    assert set(results["series"]) == {"region=apac", "region=eu", "region=us"}
    assert {s["series"]: s["points"] for s in body["series"]} == {"region=apac": 48, "region=eu": 48, "region=us": 48}
    # The eu traffic spike of 14:00-17:00 is found, with the expected value well below it.
    spike = results[(results["series"] == "region=eu") & (results["feature"] == "requests") & results["is_anomaly"]]
    assert {14, 15, 16} <= set(pd.to_datetime(spike["timestamp"]).dt.hour)
    assert (spike["value"] > spike["upper"]).all()
    assert body["anomalies"] == sum(s["anomalies"] for s in body["series"]) >= 3
    eu = next(s for s in body["series"] if s["series"] == "region=eu")
    champion = client.get(f"{BASE}/model", params={"series": "region=eu"}, headers=headers).json()
    assert eu["model_version"] == champion["champions"][0]["version"] == results.loc[results["series"] == "region=eu", "model_version"].iloc[0]
    assert results["interval_start"].min() == "2024-03-03T00:00:00.000000Z"
    assert results["interval_end"].max() == "2024-03-04T00:00:00.000000Z"


def test_detect_gives_the_same_scores_as_the_library(client, headers, spike_points):
    """The API adds no scoring of its own: labeled_frame with the champion gives the same numbers."""
    from pipelines.config import get_job
    from pipelines.extraction import prepare, series_groups
    from pipelines.scoring import labeled_frame
    from pipelines.training import load_champion
    from pipelines.workspace import Window, to_utc

    body = client.post(f"{BASE}/detect", json={"points": spike_points}, headers=headers).json()
    job = get_job("demo_web_metrics")
    window = Window(to_utc("2024-03-03T00:00:00Z"), to_utc("2024-03-04T00:00:00Z"))
    expected = []
    for key, dims, rows in series_groups(prepare(pd.DataFrame(spike_points), job), job):
        expected.append(labeled_frame(job, key, dims, load_champion(job, key), rows, None, window, "x"))
    expected = pd.concat(expected, ignore_index=True)
    got = pd.DataFrame(body["results"])
    for column in ("score", "expected", "lower", "upper", "value"):
        assert got[column].to_numpy() == pytest.approx(expected[column].to_numpy(), nan_ok=True)
    assert got["is_anomaly"].tolist() == expected["is_anomaly"].tolist()


def test_detect_sends_every_digit_of_the_numbers(client, headers, spike_points):
    # Written with pandas' to_json(double_precision=15), i.e. 15 decimal places: 1.5e-15 came back 2e-15.
    tiny = [1.5e-15, 1.2345678901234567e-07, 0.30000000000000004]
    points = [{**point, "latency_ms": tiny[i]} if i < 3 else point for i, point in enumerate(spike_points)]
    answer = client.post(f"{BASE}/detect", json={"points": points}, headers=headers)
    assert answer.status_code == 200, answer.text[:300]
    results = pd.DataFrame(answer.json()["results"])
    sent = {(f"region={p['region']}", p["timestamp"].replace("Z", ".000000Z")): p["latency_ms"] for p in points[:3]}
    latency = results[results["feature"] == "latency_ms"].set_index(["series", "timestamp"])["value"]
    assert {key: latency[key] for key in sent} == sent


def test_detect_accepts_naive_timestamps_as_utc(client, headers, spike_points):
    points = [{**p, "timestamp": p["timestamp"].removesuffix("Z")} for p in spike_points]
    body = client.post(f"{BASE}/detect", json={"points": points}, headers=headers).json()
    assert body["results"][0]["timestamp"] == "2024-03-03T00:00:00.000000Z"


def test_more_than_30000_points_is_413_pointing_to_score_file(client, headers, demo_rows):
    # 15,001 rows x 2 features = 30,002 data points.
    points = [dict(demo_rows[i % len(demo_rows)]) for i in range(15_001)]
    answer = client.post(f"{BASE}/detect", json={"points": points}, headers=headers)
    assert answer.status_code == 413
    detail = answer.json()["detail"]
    assert "15,001 rows x 2 features = 30,002 data points" in detail
    assert "POST /api/v1/jobs/demo_web_metrics/score-file" in detail and "one-off scoring run" in detail
    # Also for those who start it from Airflow: the DAG a one-off run is.
    assert detail.endswith("(a run of the demo_web_metrics__score DAG with the file as its input).")


def test_exactly_30000_points_are_scored(client, headers, demo_rows):
    """15,000 rows x 2 features: distinct hourly timestamps per region from 2024-02-01 on."""
    start = pd.Timestamp("2024-02-01T00:00:00Z")
    points = [
        {"timestamp": (start + pd.Timedelta(hours=i // 3)).isoformat(), "region": ("eu", "us", "apac")[i % 3],
         "requests": 500 + (i % 97), "latency_ms": 100.0 + (i % 13)}
        for i in range(15_000)
    ]
    answer = client.post(f"{BASE}/detect", json={"points": points}, headers=headers)
    assert answer.status_code == 200, answer.text[:500]
    assert answer.json()["points"] == 30_000


def test_a_body_over_the_size_limit_is_413_before_parsing(client, headers):
    from pipelines.web.schemas import MAX_BODY_BYTES

    answer = client.post(
        f"{BASE}/detect", content=b"x" * (MAX_BODY_BYTES + 1), headers={**headers, "Content-Type": "application/json"}
    )
    assert answer.status_code == 413
    assert "score-file" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: {**p, "host": "a"}, "unknown column 'host' in points 0"),
        (lambda p: {k: v for k, v in p.items() if k != "latency_ms"}, "missing column 'latency_ms' in points 0"),
        (lambda p: {**p, "requests": "many"}, "requests"),
        (lambda p: {**p, "requests": "2400"}, "column 'requests': text where a number (or null) belongs, e.g. '2400' in points 0"),
        (lambda p: {**p, "latency_ms": "NaN"}, "column 'latency_ms': text where a number (or null) belongs, e.g. 'NaN' in points 0"),
        (lambda p: {**p, "timestamp": "yesterday-ish"}, "column 'timestamp': 1 timestamps are not ISO 8601 date-times, e.g. 'yesterday-ish' in points 0"),
        # Read month first it would be a point from another month, silently.
        (lambda p: {**p, "timestamp": "13/03/2024 14:00"}, "column 'timestamp', point 0: '13/03/2024 14:00' is a date written day first"),
        (lambda p: {**p, "timestamp": None}, "expect_column_values_to_not_be_null"),
        (lambda p: {**p, "requests": None}, "expect_column_values_to_not_be_null"),
        (lambda p: {**p, "region": "mars"}, "mars"),  # the job's own expectation suite
        (lambda p: {**p, "latency_ms": -5}, "latency_ms"),
    ],
)
def test_bad_points_are_422_naming_the_column(client, headers, spike_points, change, message):
    points = [change(spike_points[0]), *spike_points[1:]]
    answer = client.post(f"{BASE}/detect", json={"points": points}, headers=headers)
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert "demo_web_metrics" in detail and message in detail


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_non_finite_numbers_are_422(client, headers, spike_points, literal):
    import json

    body = json.dumps({"points": spike_points}).replace('"latency_ms": 121.67', f'"latency_ms": {literal}', 1)
    assert literal in body
    answer = client.post(f"{BASE}/detect", content=body, headers={**headers, "Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert "latency_ms" in answer.json()["detail"]


def test_many_unknown_columns_are_named_a_few_at_a_time(client, headers, spike_points):
    """Each unknown key of the points was named: 200,000 of them made a 7 MB error message."""
    point = {**spike_points[0], **{f"extra_{i:04d}": 0 for i in range(1000)}}
    answer = client.post(f"{BASE}/detect", json={"points": [point]}, headers=headers)
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert "unknown column 'extra_0004' in points 0; and 995 more unknown or missing columns." in detail
    assert "extra_0005" not in detail and len(detail) < 1000


def test_numbers_for_timestamps_are_422_quoting_them_as_sent(client, headers, spike_points):
    points = [{**point, "timestamp": 1709424000 + 3600 * i} for i, point in enumerate(spike_points[:2])]
    answer = client.post(f"{BASE}/detect", json={"points": points}, headers=headers)
    assert answer.status_code == 422
    assert "2 timestamps are not ISO 8601 date-times, e.g. 1709424000, 1709427600 in points 0, 1" in answer.json()["detail"]


def test_duplicate_points_are_422(client, headers, spike_points):
    answer = client.post(f"{BASE}/detect", json={"points": [*spike_points, spike_points[5]]}, headers=headers)
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert "expect_compound_columns_to_be_unique" in detail and "at rows [5, 72]" in detail


def test_mixed_naive_and_aware_timestamps_are_422(client, headers, spike_points):
    points = [{**spike_points[0], "timestamp": "2024-03-03T00:00:00"}, *spike_points[1:]]
    answer = client.post(f"{BASE}/detect", json={"points": points}, headers=headers)
    assert answer.status_code == 422, answer.text
    assert "column 'timestamp': 1 of 72 timestamps have no time zone" in answer.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [{}, {"points": []}, {"points": [[1, 2]]}, {"points": [{"timestamp": {"nested": 1}}]}, {"points": "x"}, {"points": [], "extra": 1}],
)
def test_malformed_bodies_are_422(client, headers, body):
    assert client.post(f"{BASE}/detect", json=body, headers=headers).status_code == 422


def test_a_series_without_champion_is_409_naming_it(client, headers):
    points = [{"reading_time": "2024-03-03T00:00:00Z", "machine": "m1", "temperature": 60.0, "vibration": 0.1, "pressure": 1.0}]
    answer = client.post("/api/v1/jobs/demo_sensors/detect", json={"points": points}, headers=headers)
    assert answer.status_code == 409
    detail = answer.json()["detail"]
    assert "series machine=m1" in detail and "demo_sensors__train" in detail


@pytest.mark.parametrize(("job", "code"), [("no_such_job", 404), ("Bad-Name", 422), ("..", 404), ("a" * 64, 422)])
def test_unknown_or_invalid_job_names(client, headers, job, code):
    answer = client.get(f"/api/v1/jobs/{job}/model", headers=headers)
    assert answer.status_code == code
    if code == 404 and job == "no_such_job":
        assert answer.json()["detail"] == "no job named 'no_such_job'; jobs you may read: demo_sensors, demo_web_metrics"


def test_a_broken_job_file_leaves_the_other_jobs_served(client, headers, web_project):
    (web_project / "config" / "jobs" / "broken.yaml").write_text("name: broken\nfrequency: 1h\n")
    assert client.get(f"{BASE}/model", headers=headers).status_code == 200
    answer = client.get("/api/v1/jobs/broken/model", headers=headers)
    assert answer.status_code == 404
    # Its error shows its settings: it goes to the log, and the caller is told where to look.
    assert "1 job file(s) make no job until fixed (the server log" in answer.json()["detail"]
    assert "broken.yaml" not in answer.json()["detail"]


def test_model_describes_each_champion(client, headers):
    body = client.get(f"{BASE}/model", headers=headers).json()
    assert body["job"] == "demo_web_metrics" and body["model"] == "seasonal_mad"
    assert body["features"] == ["requests", "latency_ms"] and body["dimensions"] == ["region"]
    assert [c["series"] for c in body["champions"]] == ["region=apac", "region=eu", "region=us"]
    for champion in body["champions"]:
        assert champion["version"] == champion["metadata"]["version"]
        assert champion["trained_at"] and champion["params"]["level_window"] == 24
        assert champion["metrics"] and champion["features"] == ["requests", "latency_ms"]
        assert champion["model"] == "seasonal_mad" and champion["decision"] == {"promoted": True, "reason": "no champion yet"}
        assert champion["chosen"] is None and champion["choice_reason"] is None  # only auto chooses
        assert champion["training_window"] == {"start": "2024-02-02T00:00:00+00:00", "end": "2024-03-01T00:00:00+00:00"}
        assert champion["rows"] == 28 * 24  # hourly, 2024-02-02 .. 2024-03-01


def test_model_of_one_series(client, headers):
    body = client.get(f"{BASE}/model", params={"series": "region=us"}, headers=headers).json()
    assert [c["series"] for c in body["champions"]] == ["region=us"]
    answer = client.get(f"{BASE}/model", params={"series": "region=mars"}, headers=headers)
    assert answer.status_code == 404
    assert "series with models: region=apac, region=eu, region=us" in answer.json()["detail"]


def test_model_without_a_series_answers_the_first_page(client, headers, monkeypatch):
    """Without ?series it read every series' champion: a job of 100,000 series in one answer."""
    from pipelines.registry import ModelRegistry

    monkeypatch.setattr(paging, "PAGE_SERIES", 2)
    read: list[str] = []
    champion = ModelRegistry.champion

    def reading(self, job, series):
        read.append(series)
        return champion(self, job, series)

    monkeypatch.setattr(ModelRegistry, "champion", reading)
    answer = client.get(f"{BASE}/model", headers=headers)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert read == ["region=apac", "region=eu"]  # the other series' champions were not read
    assert [c["series"] for c in body["champions"]] == ["region=apac", "region=eu"]
    assert {k: body[k] for k in ("page", "pages", "total", "page_size", "next_page")} == {
        "page": 1, "pages": 2, "total": 3, "page_size": 2, "next_page": 2
    }


def test_model_pages_through_the_series(client, headers, monkeypatch):

    monkeypatch.setattr(paging, "PAGE_SERIES", 2)

    def body(**params) -> dict:
        answer = client.get(f"{BASE}/model", params=params, headers=headers)
        assert answer.status_code == 200, answer.text
        return answer.json()

    last = body(page=2)
    assert [c["series"] for c in last["champions"]] == ["region=us"] and last["next_page"] is None
    assert last["page"] == 2 and last["pages"] == 2 and last["total"] == 3
    past = body(page=3)  # past the end: no champions, and how many pages there are
    assert past["champions"] == [] and past["pages"] == 2 and past["total"] == 3 and past["next_page"] is None
    one = body(series="region=eu")  # one series: as before, on a page of its own
    assert [c["series"] for c in one["champions"]] == ["region=eu"]
    assert {k: one[k] for k in ("page", "pages", "total", "next_page")} == {"page": 1, "pages": 1, "total": 1, "next_page": None}


@pytest.mark.parametrize(
    ("page", "message"),
    [
        ("0", "greater than or equal to 1"),
        ("-1", "greater than or equal to 1"),
        ("abc", "valid integer"),
        ("1.5", "valid integer"),
        ("1000001", "less than or equal to 1000000"),
        ("9" * 5000, "integer, exceeded maximum size"),
    ],
)
def test_a_bad_model_page_is_422_naming_it(client, headers, page, message):
    answer = client.get(f"{BASE}/model", params={"page": page}, headers=headers)
    assert answer.status_code == 422, answer.text[:300]
    [error] = answer.json()["detail"]
    assert error["loc"] == ["query", "page"] and message in error["msg"]


def test_model_refuses_a_page_with_a_series(client, headers):
    answer = client.get(f"{BASE}/model", params={"series": "region=eu", "page": 2}, headers=headers)
    assert answer.status_code == 422
    assert answer.json()["detail"] == "give series or page, not both: series 'region=eu' is one series, on no page of another"


def test_model_of_an_untrained_job_is_404(client, headers):
    answer = client.get("/api/v1/jobs/demo_sensors/model", headers=headers)
    assert answer.status_code == 404
    assert "run demo_sensors__train" in answer.json()["detail"]


def test_tuning_is_404_until_the_job_is_tuned(client, headers):
    answer = client.get(f"{BASE}/tuning", headers=headers)  # trained, never tuned
    assert answer.status_code == 404 and "run demo_web_metrics__tune" in answer.json()["detail"]


def test_tuning_lists_each_run_and_why_it_did_or_did_not_replace_the_champion(client, headers, tuned):
    from pipelines.config import get_job
    from pipelines.training import registry_for

    job, results = get_job("demo_web_metrics"), tuned
    body = client.get(f"{BASE}/tuning", headers=headers).json()
    assert body["job"] == "demo_web_metrics"
    assert [s["series"] for s in body["series"]] == ["region=apac", "region=eu", "region=us"]
    registry = registry_for(job)
    for series in body["series"]:
        [run] = series["runs"]
        result = results[series["series"]]
        assert run["run_id"] == "tune-web" and run["trials"] == 3 and run["objective"] == "unlabeled"
        assert run["best"]["kind"] == result["kind"] and run["best"]["params"] == result["params"]
        assert run["promoted"] == result["promoted"] and run["reason"] == result["reason"]
        # The serving model followed the decision: a promoted run's version serves, else the trained one.
        champion = registry.champion(job.name, series["series"])
        assert (champion.version == run["version"]) if run["promoted"] else (run["version"] is None and champion.metadata["run_id"] == "web-train")
        stretches = run["stretches"]
        assert stretches[0]["stretch"] == 1 and len(stretches) == len(result["stretches"])
        assert [s["clearly_better"] for s in stretches] == [s["clearly_better"] for s in result["stretches"]]
        assert all(s["challenger_objective"] is not None and s["verdict"] for s in stretches)

    one = client.get(f"{BASE}/tuning", params={"series": "region=eu", "limit": 1}, headers=headers).json()
    assert [s["series"] for s in one["series"]] == ["region=eu"] and len(one["series"][0]["runs"]) == 1
    answer = client.get("/api/v1/jobs/demo_sensors/tuning", headers=headers)
    assert answer.status_code == 404 and "run demo_sensors__tune" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"input": "../../etc/passwd"}, "must stay inside"),
        ({"input": "data/../../outside.csv"}, "must stay inside"),
        ({"input": "/etc/passwd"}, "must stay inside"),
        ({"input": "data/demo/nothing.csv"}, "no such file"),
        ({"input": "data/demo"}, "no such file"),
        ({"input": "http://example.com/x.csv"}, "s3://bucket/key or gs://bucket/key"),
        ({"input": "file:///etc/passwd"}, "s3://bucket/key or gs://bucket/key"),
        ({"input": "s3://"}, "s3://bucket/key or gs://bucket/key"),
        ({"input": "s3://bucket"}, "s3://bucket/key or gs://bucket/key"),
        ({"input": "gs://bucket/"}, "s3://bucket/key or gs://bucket/key"),
        ({"input": "s3:///key.csv"}, "s3://bucket/key or gs://bucket/key"),
        ({"input": "data/demo/web_metrics.csv", "output": "s3://scores.parquet"}, "s3://bucket/key or gs://bucket/key"),
        ({"input": "data/demo/web_metrics.csv\x00.txt"}, "control characters"),
        ({"input": "data/demo/web_metrics.csv", "output": "config/jobs/demo_web_metrics.yaml"}, "must end with .parquet"),
        ({"input": "data/demo/web_metrics.csv", "output": "config/x.parquet"}, "must stay inside"),
        ({"input": "data/demo/web_metrics.csv", "output": "var/../../x.parquet"}, "must stay inside"),
    ],
)
def test_score_file_rejects_paths_outside_the_project(client, headers, body, message):
    answer = client.post(f"{BASE}/score-file", json=body, headers=headers)
    assert answer.status_code == 422
    assert message in answer.json()["detail"]


@pytest.mark.parametrize(
    "output",
    [
        "var/outputs/job=demo_sensors/date=2024-03-03/part-0.parquet",  # another job's published scores
        "var/outputs/job=demo_web_metrics/date=2024-03-03/part-0.parquet",  # the job's own
        "var/models/demo_sensors/x.parquet",
        "var/work/demo_sensors/scheduled__2024/scored/machine=m1.parquet",  # a running job's staged scores
        "var/quarantine/x.parquet",
        "var/outputs/_one_off/job=demo_sensors/run.parquet",  # another job's one-off result
    ],
)
def test_score_file_output_may_not_replace_the_pipelines_state(client, headers, monkeypatch, output):
    monkeypatch.setenv("ANOMALY_PIPELINES_AIRFLOW_URL", "http://127.0.0.1:9")  # nothing listens: a trigger would be 502
    answer = client.post(f"{BASE}/score-file", json={"input": "data/demo/web_metrics.csv", "output": output}, headers=headers)
    assert answer.status_code == 422, answer.text
    assert "a folder the pipelines keep their own state or job files in" in answer.json()["detail"]
    beside = client.post(f"{BASE}/score-file", json={"input": "data/demo/web_metrics.csv", "output": "var/outputs/_one_off/mine.parquet"}, headers=headers)
    assert beside.status_code == 502  # allowed: it got as far as calling Airflow


@pytest.mark.parametrize(
    "input_path",
    [
        "var/outputs/job=demo_sensors/date=2024-03-03/part-0.parquet",  # another job's published scores
        "var/models/demo_web_metrics/region=eu/champion.json",
        "config/jobs/demo_sensors.yaml",  # job files may name connections
    ],
)
def test_score_file_input_may_not_read_the_pipelines_state_or_job_files(client, headers, web_project, monkeypatch, input_path):
    # A caller allowed to score with one job would read any job's data through that job's output.
    monkeypatch.setenv("ANOMALY_PIPELINES_AIRFLOW_URL", "http://127.0.0.1:9")  # nothing listens: a trigger would be 502
    target = web_project / input_path
    target.parent.mkdir(parents=True, exist_ok=True)
    if not target.exists():
        target.write_bytes(b"ts,value\n")
    answer = client.post(f"{BASE}/score-file", json={"input": input_path}, headers=headers)
    assert answer.status_code == 422, answer.text
    detail = answer.json()["detail"]
    assert "a folder the pipelines keep their own state or job files in" in detail and "demo_sensors" not in detail.split(":", 1)[1]


def test_score_file_sees_the_state_folders_through_symbolic_links(client, headers, web_project, monkeypatch, tmp_path):
    # config/jobs kept elsewhere and linked in, as deployments do: the path a request names is the
    # link's, the folder the check knows is where the link leads.
    monkeypatch.setenv("ANOMALY_PIPELINES_AIRFLOW_URL", "http://127.0.0.1:9")
    elsewhere = tmp_path / "shared-jobs"
    (web_project / "config" / "jobs").rename(elsewhere)
    (web_project / "config" / "jobs").symlink_to(elsewhere)
    answer = client.post(f"{BASE}/score-file", json={"input": "config/jobs/demo_sensors.yaml"}, headers=headers)
    assert answer.status_code == 422, answer.text
    assert "a folder the pipelines keep their own state or job files in" in answer.json()["detail"]


def test_score_file_output_may_not_be_its_input(client, headers, web_project, monkeypatch):
    # The run would have replaced the data it reads with its scores.
    monkeypatch.setenv("ANOMALY_PIPELINES_AIRFLOW_URL", "http://127.0.0.1:9")  # nothing listens: a trigger would be 502
    upload = web_project / "var" / "uploads" / "points.parquet"
    upload.parent.mkdir(parents=True, exist_ok=True)
    upload.write_bytes(b"PAR1")
    for output in ("var/uploads/points.parquet", "var/uploads/../uploads/points.parquet"):
        answer = client.post(f"{BASE}/score-file", json={"input": "var/uploads/points.parquet", "output": output}, headers=headers)
        assert answer.status_code == 422, answer.text
        assert "it is the input file: scoring would replace the data it reads" in answer.json()["detail"]
    other = client.post(f"{BASE}/score-file", json={"input": "var/uploads/points.parquet", "output": "var/uploads/scored.parquet"}, headers=headers)
    assert other.status_code == 502  # allowed: it got as far as calling Airflow


@pytest.mark.parametrize(
    "body",
    [
        {"input": "data/demo/web_metrics.csv", "chunk_rows": 10},
        {"input": "data/demo/web_metrics.csv", "chunk_rows": 10_000_001},
        {"input": ""},
        {"input": "x", "extra": 1},
    ],
)
def test_score_file_validates_its_body(client, headers, body):
    assert client.post(f"{BASE}/score-file", json=body, headers=headers).status_code == 422


def test_score_file_says_when_airflow_cannot_be_reached(client, headers, monkeypatch):
    monkeypatch.setenv("ANOMALY_PIPELINES_AIRFLOW_URL", "http://127.0.0.1:9")  # the discard port: nothing listens
    answer = client.post(f"{BASE}/score-file", json={"input": "data/demo/web_metrics.csv"}, headers=headers)
    assert answer.status_code == 502
    assert "cannot reach Airflow's REST API at http://127.0.0.1:9/api/v2/dags/demo_web_metrics__score/dagRuns" in answer.json()["detail"]


def test_the_openapi_document_describes_every_operation(client, headers):
    spec = client.get("/openapi.json", headers=headers).json()
    assert spec["info"]["title"] == "Anomaly Pipelines"
    assert set(spec["paths"]) == {
        "/api/v1/jobs/{job}/detect",
        "/api/v1/jobs/{job}/model",
        "/api/v1/jobs/{job}/tuning",
        "/api/v1/jobs/{job}/score-file",
        "/api/v1/jobs/{job}/score-file/{run_id}",
        "/api/v1/jobs/{job}/labels",
        "/api/v1/jobs/{job}/events",
    }
    detect = spec["paths"]["/api/v1/jobs/{job}/detect"]["post"]
    assert detect["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/DetectResponse")
    assert {"401", "403", "404", "409", "413", "415", "422"} <= set(detect["responses"])
    assert {"AirflowToken", "AirflowSession"} <= set(spec["components"]["securitySchemes"])
    assert "SwaggerUIBundle" in client.get("/docs", headers=headers).text


def test_the_openapi_document_names_the_mount_point_as_its_server(app, headers):
    """Airflow mounts the app under /anomaly-pipelines: without a server naming it, Swagger UI's
    "Try it out" and generated clients called /api/v1/... at Airflow's root (404)."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from pipelines.web import URL_PREFIX

    outer = FastAPI()
    outer.mount(URL_PREFIX, app)
    client = TestClient(outer)
    spec = client.get(f"{URL_PREFIX}/openapi.json", headers=headers).json()
    assert spec["servers"] == [{"url": URL_PREFIX}]
    path = next(p for p in spec["paths"] if p.endswith("/model")).replace("{job}", "demo_web_metrics")
    assert client.get(spec["servers"][0]["url"] + path, headers=headers).status_code == 200
    assert "servers" not in TestClient(app).get("/openapi.json", headers=headers).json()  # served at the root


def test_score_file_end_to_end_through_airflows_api_server(airflow_server):
    """The plugin mounted in the real api-server: POST score-file starts <job>__score, the run
    succeeds, GET reports it and the scored Parquet file exists."""
    from pathlib import Path

    import httpx

    airflow_server.pipelines_cli("train", "demo_web_metrics", "--start", "2024-02-02T00:00:00Z", "--end", "2024-03-01T00:00:00Z")
    airflow_server.unpause("demo_web_metrics__score")
    auth = {"Authorization": f"Bearer {airflow_server.token()}"}
    api = f"{airflow_server.url}/anomaly-pipelines/api/v1/jobs/demo_web_metrics"
    assert httpx.post(f"{api}/score-file", json={"input": "data/demo/web_metrics.csv"}, timeout=60).status_code == 401

    started = httpx.post(f"{api}/score-file", json={"input": "data/demo/web_metrics.csv", "chunk_rows": 1000}, headers=auth, timeout=60)
    assert started.status_code == 202, started.text
    run = started.json()
    assert run["dag_id"] == "demo_web_metrics__score" and run["warning"] is None
    assert run["input"] == str(airflow_server.project / "data" / "demo" / "web_metrics.csv")

    assert airflow_server.wait_for_run("demo_web_metrics__score", run["run_id"]) == "success"
    assert started.headers["Location"] == run["status_url"]
    status = httpx.get(run["status_url"], headers=auth, timeout=60)  # the address the answer gave
    assert status.status_code == 200, status.text
    assert status.json()["state"] == "success" and status.json()["output"] == run["output"]
    output = Path(run["output"])
    assert output.is_relative_to(airflow_server.project / "var")
    scored = pd.read_parquet(output)
    assert len(scored) == 2592 * 2  # every row of the file x 2 features
    assert list(scored.columns) == output_columns(["region"])


def test_detect_puts_points_on_the_jobs_grid_like_predict(client, headers, spike_points):
    """Two eu readings in the 14:00 hour are averaged into that bucket, as a predict run would."""
    extra = {"timestamp": "2024-03-03T14:30:00Z", "region": "eu", "requests": 1000, "latency_ms": 100.0}
    original = next(p for p in spike_points if p["timestamp"] == "2024-03-03T14:00:00Z" and p["region"] == "eu")
    body = client.post(f"{BASE}/detect", json={"points": [*spike_points, extra]}, headers=headers).json()
    assert body["points"] == 144  # 73 rows sent, 72 hourly buckets
    eu = next(s for s in body["series"] if s["series"] == "region=eu")
    assert eu["resampling"] == {"rows": 25, "buckets": 24, "merged_rows": 2, "moved_rows": 1, "filled": 0, "missing": 0}
    results = pd.DataFrame(body["results"])
    bucket = results[(results["series"] == "region=eu") & (results["timestamp"] == "2024-03-03T14:00:00.000000Z")]
    assert bucket.set_index("feature")["value"]["requests"] == (original["requests"] + 1000) / 2


@pytest.mark.parametrize(
    ("path", "raw"),
    [
        ("detect", '{"points": NaN}'),
        ("detect", '{"points": [NaN]}'),
        ("detect", '{"points": [{"timestamp": "2024-03-03T00:00:00Z", "region": "eu", "requests": 1' + "0" * 400 + ', "latency_ms": 1}]}'),
        ("score-file", '{"input": "data/demo/web_metrics.csv", "extra": Infinity}'),
        ("score-file", '{"input": "data/demo/web_metrics.csv", "chunk_rows": NaN}'),
    ],
)
def test_refused_bodies_holding_non_finite_or_huge_numbers_are_422(client, headers, path, raw):
    # FastAPI echoes refused values back, and JSON has no NaN: these answers were 500s.
    answer = client.post(f"{BASE}/{path}", content=raw, headers={**headers, "Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"][0] == "body"


def test_timestamps_outside_the_scoring_range_are_422_naming_the_points(client, headers, spike_points):
    points = [*spike_points[:3], {**spike_points[3], "timestamp": "9999-12-31T23:59:59Z"}]
    answer = client.post(f"{BASE}/detect", json={"points": points}, headers=headers)
    assert answer.status_code == 422
    assert "1 timestamps are out of range, e.g. '9999-12-31T23:59:59Z' in points 3; use dates between 1678 and 2261" in answer.json()["detail"]


def test_points_far_apart_count_every_row_of_the_grid_between_them(client, headers):
    # Two points four years apart are 35,065 hourly rows x 2 features once on the job's grid.
    points = [
        {"timestamp": when, "region": "eu", "requests": 500, "latency_ms": 100.0}
        for when in ("2020-03-03T00:00:00Z", "2024-03-03T00:00:00Z")
    ]
    answer = client.post(f"{BASE}/detect", json={"points": points}, headers=headers)
    assert answer.status_code == 413
    assert "span 35,065 rows x 2 features = 70,130 data points (series region=eu alone 35,065 rows)" in answer.json()["detail"]
    assert answer.json()["detail"].endswith("(a run of the demo_web_metrics__score DAG with the file as its input).")


def test_the_grid_limit_counts_the_buckets_of_points_off_the_hour(client, headers):
    # 00:59 to 5,000 h later, 5,000 h apart give 5,001 hourly buckets (00:00 .. the last hour):
    # counted as 5,000 per series, 3 series x 5,001 rows x 2 features = 30,006 points were scored.
    first = pd.Timestamp("2024-01-01T00:59:00Z")
    points = [
        {"timestamp": when.isoformat(), "region": region, "requests": 500, "latency_ms": 100.0}
        for region in ("eu", "us", "apac")
        for when in (first, first + pd.Timedelta(hours=4999, minutes=1))
    ]
    answer = client.post(f"{BASE}/detect", json={"points": points}, headers=headers)
    assert answer.status_code == 413, answer.text[:300]
    assert "span 15,003 rows x 2 features = 30,006 data points" in answer.json()["detail"]


def test_score_file_never_sends_the_token_to_the_host_the_request_names(monkeypatch):
    from starlette.requests import Request

    from pipelines.web.api import _airflow_url

    monkeypatch.delenv("ANOMALY_PIPELINES_AIRFLOW_URL", raising=False)
    monkeypatch.delenv("AIRFLOW__API__BASE_URL", raising=False)
    monkeypatch.setenv("AIRFLOW__API__PORT", "8123")
    scope = {"type": "http", "method": "POST", "path": "/x", "headers": [(b"host", b"attacker.example:80")],
             "scheme": "http", "server": ("attacker.example", 80), "root_path": "/anomaly-pipelines", "query_string": b""}
    assert _airflow_url(Request(scope)) == "http://127.0.0.1:8123"
    monkeypatch.setenv("AIRFLOW__API__BASE_URL", "https://airflow.internal/af/")
    assert _airflow_url(Request(scope)) == "https://airflow.internal/af"


@pytest.mark.parametrize("run_id", ["%2E", "%2E%2E"])
def test_a_run_id_of_dots_is_404_without_asking_airflow(client, headers, monkeypatch, run_id):
    # "..", sent on as a path step, made the question GET /dags/demo_web_metrics__score (the DAG).
    monkeypatch.setenv("ANOMALY_PIPELINES_AIRFLOW_URL", "http://127.0.0.1:9")  # nothing listens: a call would be 502
    answer = client.get(f"{BASE}/score-file/{run_id}", headers=headers)
    assert answer.status_code == 404, answer.text
    assert "is not a run id of demo_web_metrics__score" in answer.json()["detail"]


def test_score_file_says_when_the_airflow_address_answers_something_else(client, headers, monkeypatch):
    # e.g. a single-sign-on proxy's login page in front of the api-server: 502 naming the fix.
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    class LoginPage(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's naming
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>please log in</html>")

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), LoginPage)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("ANOMALY_PIPELINES_AIRFLOW_URL", f"http://127.0.0.1:{server.server_port}")
        answer = client.post(f"{BASE}/score-file", json={"input": "data/demo/web_metrics.csv"}, headers=headers)
    finally:
        server.shutdown()
    assert answer.status_code == 502
    assert "answered 200 with something other than Airflow's JSON; set ANOMALY_PIPELINES_AIRFLOW_URL" in answer.json()["detail"]


def test_score_file_answers_where_to_follow_the_run(client, headers, monkeypatch):
    # A stand-in for Airflow's REST API (the end-to-end test above uses the real one).
    import json as json_module
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    run = {"dag_id": "demo_web_metrics__score", "dag_run_id": "manual__2024-03-03T00:00:00+00:00", "state": "queued"}

    class Airflow(BaseHTTPRequestHandler):
        def _answer(self, body: dict) -> None:
            data = json_module.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):  # noqa: N802 - http.server's naming
            conf = json_module.loads(self.rfile.read(int(self.headers["Content-Length"])))["conf"]
            self._answer({**run, "conf": conf})

        def do_GET(self):  # noqa: N802
            self._answer({"dag_id": run["dag_id"], "is_paused": False} if self.path.endswith("__score") else
                         {**run, "conf": {"input": "/x.csv"}})

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Airflow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("ANOMALY_PIPELINES_AIRFLOW_URL", f"http://127.0.0.1:{server.server_port}")
        started = client.post(f"{BASE}/score-file", json={"input": "data/demo/web_metrics.csv"}, headers=headers)
        assert started.status_code == 202, started.text
        status_url = started.json()["status_url"]
        assert started.headers["Location"] == status_url
        assert status_url == f"http://testserver{BASE}/score-file/manual__2024-03-03T00%3A00%3A00%2B00%3A00"
        followed = client.get(status_url, headers=headers)
    finally:
        server.shutdown()
    assert followed.status_code == 200, followed.text
    assert followed.json()["run_id"] == run["dag_run_id"] and followed.json()["status_url"] == status_url



def test_a_series_whose_dimension_value_holds_a_slash_is_served(client, headers, web_project):
    """Dimension values such as URL paths or "eu/west" make series keys with '/': every route that
    names a series refused them (422) although the API listed them."""
    import shutil

    models = web_project / "var" / "models" / "demo_web_metrics"
    shutil.copytree(models / "region=eu", models / "region=eu%2Fwest")  # the folder series_slug makes
    answer = client.get(f"{BASE}/model", params={"series": "region=eu/west"}, headers=headers)
    assert answer.status_code == 200, answer.text
    assert [c["series"] for c in answer.json()["champions"]] == ["region=eu/west"]
    for route in ("events", "labels"):
        assert client.get(f"{BASE}/{route}", params={"series": "region=eu/west"}, headers=headers).status_code == 200
    label = {"series": "region=eu/west", "start": "2024-03-03T14:00:00Z", "end": "2024-03-03T14:00:00Z", "verdict": False}
    answer = client.post(f"{BASE}/labels", json={**label, "value_min": 1, "value_max": 2}, headers=headers)
    assert answer.status_code == 201, answer.text


@pytest.mark.parametrize("series", [".", ".."])
def test_a_series_of_dots_is_422_not_a_folder_of_the_registry(client, headers, web_project, series):
    """series_slug keeps dots: '..' named the registry folder of a job called "tuning", which
    GET .../tuning then read for a caller who may not read that job."""
    other = web_project / "var" / "models" / "tuning" / "region=eu" / "tuning"
    other.mkdir(parents=True)
    (other / "20240301T000000Z.json").write_text('{"run_id": "another job\'s tune run", "trials": 7}')
    for route in ("tuning", "model", "events", "labels"):
        answer = client.get(f"{BASE}/{route}", params={"series": series}, headers=headers)
        assert answer.status_code == 422, (route, answer.text)
        assert f"{series!r} is not a series key" in str(answer.json()["detail"])
    label = {"series": series, "start": "2024-03-03T14:00:00Z", "end": "2024-03-03T14:00:00Z", "verdict": False}
    assert client.post(f"{BASE}/labels", json=label, headers=headers).status_code == 422


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", None])
@pytest.mark.parametrize("route", ["detect", "labels", "score-file"])
def test_a_json_body_sent_without_its_content_type_is_415_saying_so(client, headers, spike_points, route, content_type):
    """`curl -d @points.json` sends form encoding: FastAPI then did not read the body as JSON and
    answered "Input should be a valid dictionary", echoing the whole body back."""
    import json

    raw = json.dumps({"points": spike_points})
    sent = {**headers, **({"Content-Type": content_type} if content_type else {})}
    answer = client.post(f"{BASE}/{route}", content=raw, headers=sent)
    assert answer.status_code == 415, answer.text
    assert answer.json()["detail"].startswith("the request body must be JSON, sent with 'Content-Type: application/json'")
    assert "2024-03-03" not in answer.text  # the body is not echoed
    # A JSON body with its type (also with a charset) is read as before.
    sent["Content-Type"] = "application/json; charset=utf-8"
    assert client.post(f"{BASE}/detect", content=raw, headers=sent).status_code == 200


@pytest.fixture
def stand_in_airflow(monkeypatch):
    """A stand-in for Airflow's REST API: ``routes[(method, path)]`` is the JSON it answers, or a
    function called for it (``path`` without ``/api/v2``, percent-encoded as sent, without the
    query); the requests it got are in ``requests`` as (method, path, query)."""
    import json as json_module
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from urllib.parse import parse_qs, urlsplit

    routes: dict[tuple[str, str], dict] = {}
    requests: list[tuple[str, str, dict]] = []

    class Airflow(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            url = urlsplit(self.path)
            path = url.path.removeprefix("/api/v2")
            requests.append((self.command, path, parse_qs(url.query)))
            if length := int(self.headers.get("Content-Length") or 0):
                self.rfile.read(length)
            body = routes.get((self.command, path))
            body = body() if callable(body) else body
            data = json_module.dumps(body if body is not None else {"detail": "not found"}).encode()
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _answer  # noqa: N815 - http.server's naming

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Airflow)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("ANOMALY_PIPELINES_AIRFLOW_URL", f"http://127.0.0.1:{server.server_port}")
    yield routes, requests
    server.shutdown()
    server.server_close()


def test_score_file_refuses_an_output_a_queued_or_running_run_writes(client, headers, web_project, stand_in_airflow):
    # Both runs were started; both then answered success with the same file as their result,
    # which held the scores of whichever finished last.
    routes, requests = stand_in_airflow
    output = str(web_project / "var" / "scored" / "web.parquet")
    writing = {"dag_id": "demo_web_metrics__score", "dag_run_id": "manual__1", "state": "running",
               "conf": {"input": "/x.csv", "output": output}}
    other = {"dag_id": "demo_web_metrics__score", "dag_run_id": "manual__0", "state": "queued", "conf": {"input": "/y.csv"}}
    routes["GET", "/dags/~/dagRuns"] = {"dag_runs": [other, writing], "total_entries": 2}
    body = {"input": "data/demo/web_metrics.csv", "output": "var/scored/web.parquet"}
    answer = client.post(f"{BASE}/score-file", json=body, headers=headers)
    assert answer.status_code == 409, answer.text
    assert "output 'var/scored/web.parquet' is being written by run manual__1 of demo_web_metrics__score (running)" in answer.json()["detail"]
    assert not [r for r in requests if r[0] == "POST"]  # nothing was triggered
    assert requests[0][2]["state"] == ["queued", "running"]
    # Another output is free; the run is started.
    run = {"dag_id": "demo_web_metrics__score", "dag_run_id": "manual__2", "state": "queued",
           "conf": {"input": "/x.csv", "output": str(web_project / "var" / "scored" / "other.parquet")}}
    routes["POST", "/dags/demo_web_metrics__score/dagRuns"] = run
    routes["GET", "/dags/demo_web_metrics__score"] = {"dag_id": "demo_web_metrics__score", "is_paused": False}
    answer = client.post(f"{BASE}/score-file", json={**body, "output": "var/scored/other.parquet"}, headers=headers)
    assert answer.status_code == 202, answer.text


def test_a_failed_score_file_run_says_which_task_failed_why_and_that_it_wrote_nothing(client, headers, stand_in_airflow):
    # The answer was only "failed", beside an output location that held an earlier run's file.
    routes, requests = stand_in_airflow
    run_path = "/dags/demo_web_metrics__score/dagRuns/manual__7"
    routes["GET", run_path] = {"dag_id": "demo_web_metrics__score", "dag_run_id": "manual__7", "state": "failed",
                               "conf": {"input": "/in.csv", "output": "/var/scored/x.parquet"}}
    routes["GET", f"{run_path}/taskInstances"] = {"task_instances": [
        {"task_id": "score", "map_index": 0, "try_number": 1, "state": "failed"}], "total_entries": 1}
    routes["GET", f"{run_path}/taskInstances/score/logs/1"] = {"content": [
        {"event": "scoring chunk 0", "level": "info"},
        {"event": "Task failed with exception", "level": "error", "error_detail": [
            {"exc_type": "DataValidationError", "exc_value": "job demo_web_metrics: column 'requests' holds text.", "frames": []}]},
    ], "continuation_token": None}
    answer = client.get(f"{BASE}/score-file/manual__7", headers=headers)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["state"] == "failed" and body["failed_tasks"] == ["score[0]"]
    assert body["error"] == (
        "run manual__7 of demo_web_metrics__score failed in task score[0]; it wrote nothing to /var/scored/x.parquet "
        "(a file there is another run's). score[0]: DataValidationError: job demo_web_metrics: column 'requests' holds text."
    )
    assert ("GET", f"{run_path}/taskInstances/score/logs/1", {"map_index": ["0"]}) in requests
    # A log that cannot be read leaves the reason to Airflow's UI, and the answer stands.
    del routes["GET", f"{run_path}/taskInstances/score/logs/1"]
    body = client.get(f"{BASE}/score-file/manual__7", headers=headers).json()
    assert body["failed_tasks"] == ["score[0]"] and body["error"].endswith("The task's log in Airflow says why.")
    # Runs that did not fail carry no error and ask for no tasks.
    routes["GET", run_path]["state"] = "success"
    requests.clear()
    body = client.get(f"{BASE}/score-file/manual__7", headers=headers).json()
    assert body["error"] is None and body["failed_tasks"] == [] and len(requests) == 1


def test_a_run_failed_in_more_chunks_than_airflow_lists_at_once_names_and_counts_them_all(client, headers, stand_in_airflow):
    # Airflow answers 50 task instances unless asked for more, and at most 100 ([api]
    # maximum_page_limit) whatever is asked: a run failed in 130 chunks was said to fail in 50.
    routes, requests = stand_in_airflow
    run_path = "/dags/demo_web_metrics__score/dagRuns/manual__8"
    routes["GET", run_path] = {"dag_id": "demo_web_metrics__score", "dag_run_id": "manual__8", "state": "failed",
                               "conf": {"input": "/in.csv", "output": "/var/scored/x.parquet"}}
    failed = [{"task_id": "score", "map_index": index, "try_number": 1, "state": "failed"} for index in range(130)]

    def page() -> dict:  # as Airflow pages: the query of the request being answered
        query = requests[-1][2]
        limit = min(int(query.get("limit", ["50"])[0]) or 50, 100)
        offset = int(query.get("offset", ["0"])[0])
        return {"task_instances": failed[offset:offset + limit], "total_entries": len(failed)}

    routes["GET", f"{run_path}/taskInstances"] = page
    body = client.get(f"{BASE}/score-file/manual__8", headers=headers).json()
    assert body["failed_tasks"] == [f"score[{index}]" for index in range(130)]
    assert body["error"].startswith(
        "run manual__8 of demo_web_metrics__score failed in 130 tasks: score[0], score[1], score[2], score[3], score[4], "
        "score[5], score[6], score[7], score[8], score[9] and 120 more; it wrote nothing to /var/scored/x.parquet"
    )
    assert body["error"].endswith("Their logs in Airflow say why.")


def test_a_registry_that_cannot_be_reached_is_503_naming_it(
    client, headers, spike_points, web_project, unreachable_s3_options, monkeypatch
):
    # The store's StorageError reached FastAPI: a bare 500 "Internal Server Error" in text/plain.
    import yaml

    job = yaml.safe_load((web_project / "config" / "jobs" / "demo_web_metrics.yaml").read_text())
    # A job file holds no credential (config refuses one written out): s3fs reads them from the environment.
    options = {name: value for name, value in unreachable_s3_options.items() if name not in ("key", "secret")}
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", unreachable_s3_options["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", unreachable_s3_options["secret"])
    job.update(name="s3_metrics", registry="s3://bucket/models", outputs={"parquet": "s3://bucket/out", "storage_options": options})
    (web_project / "config" / "jobs" / "s3_metrics.yaml").write_text(yaml.safe_dump(job))
    api = "/api/v1/jobs/s3_metrics"
    for answer in (
        client.post(f"{api}/detect", json={"points": spike_points}, headers=headers),
        client.get(f"{api}/model", headers=headers),
        client.get(f"{api}/tuning", headers=headers),
    ):
        assert answer.status_code == 503, answer.text[:300]
        assert answer.json()["detail"].startswith("cannot reach s3://bucket/models/s3_metrics")


@pytest.fixture
def json_parsed(monkeypatch) -> list[bytes]:
    """The bodies the app parsed as JSON (Starlette's Request.json), in order."""
    from starlette.requests import Request

    parsed: list[bytes] = []
    original = Request.json

    async def recording(self):
        parsed.append(await self.body())
        return await original(self)

    monkeypatch.setattr(Request, "json", recording)
    return parsed


def test_a_body_of_far_more_values_than_the_job_takes_is_413_before_it_is_parsed(client, headers, mint, json_parsed):
    # 16 MiB of empty records ({}, 3 bytes each) were parsed and copied by pydantic, ~850 MB of the
    # api-server, before the route counted 5.6 million rows and answered 413.
    raw = b'{"points": [' + b",".join([b"{}"] * 160_000) + b"]}"
    sent = {**headers, "Content-Type": "application/json"}
    answer = client.post(f"{BASE}/detect", content=raw, headers=sent)
    assert answer.status_code == 413, answer.text[:300]
    assert answer.json()["detail"] == (
        "the request body holds more than 150,004 JSON values; 30,000 data points of job demo_web_metrics are at most "
        "15,000 rows of its 4 columns (75,002 values): split the points into smaller calls, or score the whole file "
        "with a one-off scoring run: POST /api/v1/jobs/demo_web_metrics/score-file."
    )
    assert json_parsed == []
    # Callers who may not use the job learn no more than before: 401, 403, 404.
    assert client.post(f"{BASE}/detect", content=raw, headers={"Content-Type": "application/json"}).status_code == 401
    viewer = {"Authorization": f"Bearer {mint('viewer')}", "Content-Type": "application/json"}
    assert client.post(f"{BASE}/detect", content=raw, headers=viewer).status_code == 403
    assert client.post("/api/v1/jobs/no_such_job/detect", content=raw, headers=sent).status_code == 404
    # Other bodies take a few values: a score-file body padded with 40,000 is refused unparsed too.
    padded = b'{"input": "data/demo/web_metrics.csv", "x": [' + b",".join([b"0"] * 40_000) + b"]}"
    answer = client.post(f"{BASE}/score-file", content=padded, headers=sent)
    assert answer.status_code == 413 and "this operation takes a few" in answer.json()["detail"]
    assert json_parsed == []


def test_commas_and_brackets_inside_strings_are_not_counted_as_values(client, headers, spike_points, json_parsed):
    # 72 points whose region holds 3,000 commas and brackets: 360 values, 216,000 commas and brackets.
    points = [{**point, "region": ",[{" * 1000} for point in spike_points]
    answer = client.post(f"{BASE}/detect", json={"points": points}, headers=headers)
    assert answer.status_code == 422, answer.text[:300]  # parsed and checked: the job's suite knows no such region
    assert "expect_column_values_to_be_in_set on region" in answer.json()["detail"]
    assert len(json_parsed) == 1


def test_two_score_file_calls_at_once_for_one_output_start_one_run(app, headers, web_project, stand_in_airflow):
    # Both passed the check for a run writing the output before either had started its run, and
    # both were started: two runs answered one file as their result.
    import asyncio

    import httpx

    routes, requests = stand_in_airflow
    listed: list[dict] = []
    routes["GET", "/dags/~/dagRuns"] = lambda: {"dag_runs": listed, "total_entries": len(listed)}
    routes["GET", "/dags/demo_web_metrics__score"] = {"dag_id": "demo_web_metrics__score", "is_paused": False}

    def trigger() -> dict:
        run = {"dag_id": "demo_web_metrics__score", "dag_run_id": f"manual__{len(listed)}", "state": "queued",
               "conf": {"input": "/x.csv", "output": str(web_project / "var" / "scored" / "web.parquet")}}
        listed.append(run)
        return run

    routes["POST", "/dags/demo_web_metrics__score/dagRuns"] = trigger
    body = {"input": "data/demo/web_metrics.csv", "output": "var/scored/web.parquet"}

    async def both() -> list[int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as client:
            answers = await asyncio.gather(*(client.post(f"{BASE}/score-file", json=body, headers=headers) for _ in range(2)))
        return sorted(answer.status_code for answer in answers)

    assert asyncio.run(both()) == [202, 409]
    assert len([r for r in requests if r[0] == "POST"]) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda p: {**p, "k" * 100_000: 1}, "unknown column 'kkkkk"),
        (lambda p: {**p, "requests": "9" * 100_000}, "column 'requests': text where a number (or null) belongs, e.g. '99999"),
        (lambda p: {**p, "timestamp": "x" * 100_000}, "column 'timestamp': 1 timestamps are not ISO 8601 date-times, e.g. 'xxxxx"),
    ],
    ids=["key", "feature", "timestamp"],
)
def test_a_huge_name_or_value_is_quoted_cut_short_in_the_422(client, headers, spike_points, change, message):
    """Each was echoed whole: a 16 MiB key or text value made a 16 MiB error message."""
    answer = client.post(f"{BASE}/detect", json={"points": [change(spike_points[0])]}, headers=headers)
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert message in detail and "... (100,000 characters)" in detail and len(detail) < 1000


def test_tuning_of_an_unknown_series_is_404_naming_the_jobs_series(client, headers):
    """It said to run the tune DAG, which never gives a mistyped series tune runs."""
    answer = client.get(f"{BASE}/tuning", params={"series": "region=EU"}, headers=headers)
    assert answer.status_code == 404
    detail = answer.json()["detail"]
    assert detail == "job demo_web_metrics has no series 'region=EU'; series with models: region=apac, region=eu, region=us"


def test_a_key_repeated_in_one_object_of_the_body_is_422_naming_it(client, headers, spike_points):
    """JSON readers keep the last value: a point with two timestamps was scored at the second."""
    import json

    point = json.dumps(spike_points[0])
    twice = point.replace('"region"', '"timestamp": "2024-03-04T00:00:00Z", "region"', 1)
    sent = {**headers, "Content-Type": "application/json"}
    answer = client.post(f"{BASE}/detect", content=f'{{"points": [{twice}]}}', headers=sent)
    assert answer.status_code == 422, answer.text[:300]
    assert "repeats a key within one JSON object: 'timestamp' (1 repeats in all)" in answer.json()["detail"]
    label = '{"series": "region=eu", "start": "2024-03-03T14:00:00Z", "end": "2024-03-03T15:00:00Z", "verdict": true, "verdict": false}'
    answer = client.post(f"{BASE}/labels", content=label, headers=sent)
    assert answer.status_code == 422 and "'verdict'" in answer.json()["detail"]
    # Without credentials only the login is asked for; well-formed bodies are still parsed once.
    assert client.post(f"{BASE}/detect", content=f'{{"points": [{twice}]}}', headers={"Content-Type": "application/json"}).status_code == 401
    assert client.post(f"{BASE}/detect", json={"points": spike_points}, headers=headers).status_code == 200


def test_a_timestamp_longer_than_any_iso_time_is_refused_without_parsing_it(client, headers, spike_points):
    """Parsing takes time growing with the square of a text's length: a 1 MB "timestamp" held a
    worker 75 s. parse_timestamps leaves such text unread (tests/pipelines/sources/test_base.py):
    here, a time the parser would read through its trailing blanks is refused, quoted short."""
    points = [{**spike_points[0], "timestamp": "2024-03-03T00:00:00Z" + " " * 100}, spike_points[1]]
    answer = client.post(f"{BASE}/detect", json={"points": points}, headers=headers)
    assert answer.status_code == 422
    assert "1 timestamps are not ISO 8601 date-times, e.g. '2024-03-03T00:00:00Z" in answer.json()["detail"]
    assert "(120 characters) in points 0." in answer.json()["detail"]


def test_the_openapi_document_gives_every_error_answer_its_schema(client, headers):
    """Error answers had an example and no schema, and the 400 and 413 of bodies were not listed."""
    spec = client.get("/openapi.json", headers=headers).json()
    assert spec["components"]["schemas"]["ErrorBody"]["required"] == ["detail"]
    for path, operations in spec["paths"].items():
        for method, operation in operations.items():
            for code, answer in operation["responses"].items():
                if code.startswith(("4", "5")) and not (code == "422" and "requestBody" not in operation):
                    assert answer["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody"), (method, path, code)
            if "requestBody" in operation:
                assert {"400", "413", "415", "422"} <= set(operation["responses"]), (method, path)
    detect = spec["paths"]["/api/v1/jobs/{job}/detect"]["post"]["responses"]
    assert detect["413"]["description"] == "More than 30,000 data points: use score-file."
    # What the app answers has that shape: a refusal of ours (text) and FastAPI's (a list).
    answer = client.post(f"{BASE}/detect", json={"points": "x"}, headers=headers)
    assert answer.status_code == 422 and isinstance(answer.json()["detail"], list)
    from pipelines.web.schemas import ErrorBody

    ErrorBody.model_validate(answer.json())


def test_a_body_that_is_not_utf8_is_400_saying_so(client, headers):
    # FastAPI answered 400 "There was an error parsing the body".
    raw = b'{"points": [{"region": "caf\xe9"}]}'
    answer = client.post(f"{BASE}/detect", content=raw, headers={**headers, "Content-Type": "application/json"})
    assert answer.status_code == 400
    assert answer.json()["detail"] == "the request body is not UTF-8 text (byte 27 is not): send the JSON encoded as UTF-8"
    assert client.post(f"{BASE}/detect", content=raw, headers={"Content-Type": "application/json"}).status_code == 401


def test_a_dimension_value_longer_than_any_name_is_422_quoted_short(client, headers, spike_points):
    """The suite echoed it whole, twice: a 16 MiB value made a 32 MiB answer."""
    answer = client.post(f"{BASE}/detect", json={"points": [{**spike_points[0], "region": "x" * 100_000}]}, headers=headers)
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert "column 'region': values longer than 10,000 characters, e.g. 'xxx" in detail
    assert "... (100,000 characters) in points 0." in detail and len(detail) < 1000


def test_a_body_with_a_bad_value_in_every_point_lists_the_first_errors_and_counts_the_others(client, headers, spike_points):
    """Every error was listed, four per value (one per type a value may have): 15,000 points with a
    list where a region belongs made a 422 of 17 MB in 12 s."""
    from pipelines.web.app import MAX_LISTED_ERRORS

    points = [{**spike_points[0], "region": [1]}] * 15_000
    answer = client.post(f"{BASE}/detect", json={"points": points}, headers=headers)
    assert answer.status_code == 422
    detail = answer.json()["detail"]
    assert len(detail) == MAX_LISTED_ERRORS + 1 and len(answer.content) < 10_000
    assert detail[0]["loc"] == ["body", "points", 0, "region", "str"]
    assert detail[-1]["type"] == "too_many_errors"
    # A few errors are all listed, as before: one per type the value may have.
    few = client.post(f"{BASE}/detect", json={"points": [{**spike_points[0], "region": [1]}]}, headers=headers).json()["detail"]
    assert 1 < len(few) <= MAX_LISTED_ERRORS and all(error["type"] != "too_many_errors" for error in few)
    total = 15_000 * len(few)
    assert detail[-1]["msg"].startswith(f"{total - MAX_LISTED_ERRORS:,} more errors not listed ({total:,} in all): fix those listed")
