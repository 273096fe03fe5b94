"""The labels and events endpoints through the real app, real Airflow tokens and real scored outputs.

The demo job is trained (``web_project``) and predicts the day of the eu traffic spike, so the
events listed are those the real models found.
"""

from __future__ import annotations

from datetime import datetime

import pytest

from tests.pipelines.web.conftest import SPIKE_DAY

BASE = "/api/v1/jobs/demo_web_metrics"


def parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
def scored(web_project):
    """The spike day predicted and published by the real pipeline."""
    from pipelines.config import get_job
    from pipelines.runner import run_predict
    from pipelines.workspace import Window, to_utc

    job = get_job("demo_web_metrics")
    run_predict(job, Window(to_utc(f"{SPIKE_DAY}T00:00:00Z"), to_utc("2024-03-04T00:00:00Z")), run_id="labels-api")
    return job


def eu_spike(client, headers) -> dict:
    answer = client.get(f"{BASE}/events", params={"series": "region=eu"}, headers=headers)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    [event] = [e for e in body["events"] if e["start"].startswith(f"{SPIKE_DAY}T14")]
    return event


def test_a_person_marks_an_event_and_sees_the_verdict(client, headers, scored):
    event = eu_spike(client, headers)
    assert event["label"] is None and event["direction"] == "rise" and "requests" in event["top_features"]
    body = {"series": "region=eu", "start": event["start"], "end": event["end"], "verdict": True, "note": "real outage"}
    answer = client.post(f"{BASE}/labels", json=body, headers=headers)
    assert answer.status_code == 201, answer.text
    label = answer.json()
    assert label.pop("overruled_by") == []  # no other label says otherwise: the verdict holds
    assert label["author"] == "admin" and label["verdict"] is True and label["feature"] is None
    assert (parse(label["start"]), parse(label["end"])) == (parse(event["start"]), parse(event["end"]))
    assert parse(event["start"]).hour == 14
    # The value range comes from the published rows of the event: the spike's requests are in it.
    requests_at_peak = next(s for s in event["at_peak"] if s["feature"] == "requests")["actual"]
    assert label["value_min"] <= requests_at_peak <= label["value_max"]
    low, high = label["value_ranges"]["requests"]  # each feature keeps its own range
    assert low <= requests_at_peak <= high

    listed = client.get(f"{BASE}/labels", params={"series": "region=eu"}, headers=headers).json()
    assert listed == {"job": "demo_web_metrics", "labels": [label]}
    assert eu_spike(client, headers)["label"] == label

    # A second verdict on the same event replaces the first.
    answer = client.post(f"{BASE}/labels", json={**body, "verdict": False, "note": "planned load test"}, headers=headers)
    assert answer.status_code == 201
    listed = client.get(f"{BASE}/labels", headers=headers).json()["labels"]
    assert [(item["verdict"], item["note"]) for item in listed] == [(False, "planned load test")]
    assert eu_spike(client, headers)["label"]["verdict"] is False


def test_labels_are_filtered_by_series_and_window(client, headers, scored):
    for series, hour in (("region=eu", 3), ("region=us", 5)):
        start = f"{SPIKE_DAY}T0{hour}:00:00Z"
        body = {"series": series, "start": start, "end": start, "verdict": False, "value_min": 1, "value_max": 2}
        assert client.post(f"{BASE}/labels", json=body, headers=headers).status_code == 201

    def listed(**params) -> list[str]:
        answer = client.get(f"{BASE}/labels", params=params, headers=headers)
        assert answer.status_code == 200, answer.text
        return [label["series"] for label in answer.json()["labels"]]

    assert listed() == ["region=eu", "region=us"]
    assert listed(series="region=us") == ["region=us"]
    assert listed(start=f"{SPIKE_DAY}T04:00:00Z") == ["region=us"]
    assert listed(end=f"{SPIKE_DAY}T03:00:00+00:00") == ["region=eu"]
    # RFC 3339 allows a lowercase t and z (pydantic takes them; pipelines.labels.as_utc must too).
    assert listed(start=f"{SPIKE_DAY}t04:00:00z") == ["region=us"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"series": "host=a"}, "series 'host=a': unknown series; series of job 'demo_web_metrics' are named region=<value>"),
        ({"series": "region=mars"}, "unknown series; job 'demo_web_metrics' has models for region=apac, region=eu, region=us"),
        ({"feature": "cpu"}, "unknown feature; job 'demo_web_metrics' watches requests, latency_ms"),
        ({"end": f"{SPIKE_DAY}T13:00:00Z"}, "end 2024-03-03T13:00:00+00:00 is before start"),
        ({"start": "2024-05-01T00:00:00Z", "end": "2024-05-01T01:00:00Z"}, "no published output rows"),
        ({"value_min": 5}, "give both value_min and value_max"),
        ({"start": f"{SPIKE_DAY}T14:00:00"}, "timezone"),
        # pydantic reads numbers as Unix seconds: "start": 0 was stored as 1970-01-01.
        ({"start": 0}, "give an ISO 8601 time with its offset, e.g. 2024-03-03T14:00:00Z, not the number 0"),
        ({"end": "1709478000"}, "not the number '1709478000'"),
        ({"verdict": "yes"}, "valid boolean"),
        ({"colour": "red"}, "Extra inputs are not permitted"),
    ],
)
def test_bad_labels_are_422(client, headers, scored, change, message):
    body = {"series": "region=eu", "start": f"{SPIKE_DAY}T14:00:00Z", "end": f"{SPIKE_DAY}T16:00:00Z", "verdict": True}
    answer = client.post(f"{BASE}/labels", json={**body, **change}, headers=headers)
    assert answer.status_code == 422, answer.text
    assert message in str(answer.json()["detail"])
    assert client.get(f"{BASE}/labels", headers=headers).json()["labels"] == []


def test_a_viewer_may_read_labels_but_not_write_them(client, mint, scored):
    viewer = {"Authorization": f"Bearer {mint('viewer')}"}
    assert client.get(f"{BASE}/labels", headers=viewer).status_code == 200
    assert client.get(f"{BASE}/events", headers=viewer).status_code == 200
    body = {"series": "region=eu", "start": f"{SPIKE_DAY}T14:00:00Z", "end": f"{SPIKE_DAY}T16:00:00Z", "verdict": True}
    answer = client.post(f"{BASE}/labels", json=body, headers=viewer)
    assert answer.status_code == 403
    assert "user 'viewer' may not trigger runs of job 'demo_web_metrics'" in answer.json()["detail"]
    user = {"Authorization": f"Bearer {mint('user', username='ops')}"}
    answer = client.post(f"{BASE}/labels", json=body, headers=user)
    assert answer.status_code == 201 and answer.json()["author"] == "ops"


@pytest.mark.parametrize(("method", "path"), [("GET", "labels"), ("POST", "labels"), ("GET", "events")])
def test_unknown_job_is_404_and_no_token_is_401(client, headers, method, path):
    body = {"series": "all", "start": "2024-03-03T00:00:00Z", "end": "2024-03-03T00:00:00Z", "verdict": True}
    answer = client.request(method, f"/api/v1/jobs/no_such_job/{path}", json=body, headers=headers)
    assert answer.status_code == 404
    assert "no job named 'no_such_job'" in answer.json()["detail"]
    assert client.request(method, f"{BASE}/{path}", json=body).status_code == 401


def test_events_of_a_window_newest_first_with_a_limit(client, headers, scored):
    everything = client.get(f"{BASE}/events", headers=headers).json()
    assert everything["total"] == len(everything["events"]) >= 1
    starts = [e["start"] for e in everything["events"]]
    assert starts == sorted(starts, reverse=True)
    one = client.get(f"{BASE}/events", params={"limit": 1}, headers=headers).json()
    assert one["total"] == everything["total"] and one["events"] == everything["events"][:1]
    none = client.get(f"{BASE}/events", params={"start": "2024-05-01T00:00:00Z"}, headers=headers).json()
    assert none == {"job": "demo_web_metrics", "total": 0, "events": []}
    answer = client.get(f"{BASE}/events", params={"start": "0001-01-01T00:00:00+01:00"}, headers=headers)
    assert answer.status_code == 422 and "out of range" in answer.json()["detail"]
    for query in ({"start": "1709478000"}, {"end": "1709478000.5"}):  # epoch seconds are not ISO 8601
        answer = client.get(f"{BASE}/events", params=query, headers=headers)
        assert answer.status_code == 422 and "give an ISO 8601 time with its offset" in str(answer.json()["detail"])


def test_a_file_name_too_long_for_the_file_system_is_422_not_500(client, headers):
    """Found by the Schemathesis run once the label routes changed its examples (score-file's own check)."""
    answer = client.post(f"{BASE}/score-file", json={"input": "x" * 300}, headers=headers)
    assert answer.status_code == 422
    assert "no such file" in answer.json()["detail"]


def test_the_dashboard_shows_the_verdict_on_a_marked_point(client, headers, scored):
    import re

    PAGE = {"series": "region=eu", "min_score": "0.9999"}  # as the browser test filters it

    page = client.get("/dashboard/jobs/demo_web_metrics", params=PAGE, headers=headers).text
    assert 'data-labels-url="/api/v1/jobs/demo_web_metrics/labels"' in page
    rows = re.findall(r'<tr class="event"[^>]*data-timestamp="([^"]+)"\s+data-verdict="([^"]*)"', page)
    assert rows and all(verdict == "" for _, verdict in rows)
    moment = rows[0][0]
    body = {"series": "region=eu", "start": moment, "end": moment, "verdict": False}
    assert client.post(f"{BASE}/labels", json=body, headers=headers).status_code == 201
    page = client.get("/dashboard/jobs/demo_web_metrics", params=PAGE, headers=headers).text
    marked = dict(re.findall(r'<tr class="event"[^>]*data-timestamp="([^"]+)"\s+data-verdict="([^"]*)"', page))
    assert marked[moment] == "false" and "marked: false alarm" in page
    assert all(verdict == "" for when, verdict in marked.items() if when != moment)


def test_a_verdict_says_which_labels_outrank_it(client, headers, scored):
    """A whole-series verdict was answered as if it held where a feature's own label says otherwise
    (that label outranks it), so the dashboard showed a click a reload took back."""
    moment = f"{SPIKE_DAY}T14:00:00Z"
    point = {"series": "region=eu", "start": moment, "end": moment}

    def post(**body) -> dict:
        answer = client.post(f"{BASE}/labels", json={**point, **body}, headers=headers)
        assert answer.status_code == 201, answer.text
        return answer.json()

    assert post(verdict=True, feature="requests")["overruled_by"] == []
    colleague = post(verdict=False, feature="latency_ms")
    assert colleague.pop("overruled_by") == []
    whole = post(verdict=False)
    # The false alarm on latency_ms agrees; the true anomaly on requests holds on requests.
    assert [(label["feature"], label["verdict"]) for label in whole["overruled_by"]] == [("requests", True)]
    assert {key: value for key, value in whole.items() if key != "overruled_by"} in client.get(
        f"{BASE}/labels", headers=headers
    ).json()["labels"]
    assert post(verdict=True)["overruled_by"] == [colleague]
    # Said again on that feature, it is the later word there: nothing outranks it any more.
    assert post(verdict=False, feature="requests")["overruled_by"] == []
    assert post(verdict=False)["overruled_by"] == []


def test_the_openapi_document_describes_the_feedback_operations(client, headers):
    spec = client.get("/openapi.json", headers=headers).json()
    labels, events = spec["paths"]["/api/v1/jobs/{job}/labels"], spec["paths"]["/api/v1/jobs/{job}/events"]
    assert {"201", "401", "403", "404", "422", "503"} <= set(labels["post"]["responses"])
    assert labels["post"]["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("/LabelRequest")
    assert labels["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/LabelList")
    assert events["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/EventList")
    assert [p["name"] for p in events["get"]["parameters"]] == ["job", "series", "start", "end", "limit"]
    # Withdrawing takes the label's key in the query (a DELETE body has no defined meaning, and proxies may drop it).
    withdraw = labels["delete"]
    assert {"200", "401", "403", "404", "422", "503"} <= set(withdraw["responses"]) and "requestBody" not in withdraw
    assert [(p["name"], p["in"], p["required"]) for p in withdraw["parameters"]] == [
        ("job", "path", True), ("series", "query", True), ("start", "query", True), ("end", "query", True), ("feature", "query", False)
    ]


def test_an_event_straddling_the_window_is_listed_whole_with_its_label(client, headers, scored):
    whole = eu_spike(client, headers)
    assert parse(whole["end"]) > parse(whole["start"]), whole  # the spike lasts more than one period
    body = {"series": "region=eu", "start": whole["start"], "end": whole["end"], "verdict": False, "note": "load test"}
    assert client.post(f"{BASE}/labels", json=body, headers=headers).status_code == 201
    # A window starting inside the incident (a page of "since …", the next page of a listing)
    # lists it whole, with the verdict given on it: not a shorter event under another key.
    answer = client.get(f"{BASE}/events", params={"series": "region=eu", "start": whole["end"]}, headers=headers)
    [inside] = [e for e in answer.json()["events"] if e["peak_timestamp"] == whole["peak_timestamp"]]
    assert {**inside, "label": None} == {**eu_spike(client, headers), "label": None}
    assert inside["label"]["note"] == "load test"


def test_a_verdict_given_by_mistake_is_withdrawn_and_no_longer_silences_alerts(client, headers, scored):
    # Only the CLI could withdraw a verdict: through the API, flipping it still left a verdict that
    # counted (a false alarm silencing alerts, a true anomaly scored by tuning).
    from pipelines.labels import label_store

    body = {"series": "region=eu", "start": f"{SPIKE_DAY}T14:00:00Z", "end": f"{SPIKE_DAY}T16:00:00Z",
            "verdict": False, "value_min": 1, "value_max": 2}
    assert client.post(f"{BASE}/labels", json=body, headers=headers).status_code == 201
    feature = client.post(f"{BASE}/labels", json={**body, "verdict": True, "feature": "requests"}, headers=headers).json()
    assert feature.pop("overruled_by") == []
    store = label_store(scored)
    # latency_ms: requests is confirmed by its own label, which overrules the whole-series false alarm there.
    assert store.known_false_alarm("demo_web_metrics", "region=eu", "latency_ms", 1.5, 1.5) is not None
    # The label's key as GET lists it, in any offset: the whole-series one is withdrawn, the feature's stays.
    key = {"series": "region=eu", "start": f"{SPIKE_DAY}T15:00:00+01:00", "end": f"{SPIKE_DAY}T16:00:00Z"}
    answer = client.delete(f"{BASE}/labels", params=key, headers=headers)
    assert answer.status_code == 200, answer.text
    assert (answer.json()["verdict"], answer.json()["feature"], answer.json()["author"]) == (False, None, "admin")
    assert client.get(f"{BASE}/labels", headers=headers).json()["labels"] == [feature]
    assert store.known_false_alarm("demo_web_metrics", "region=eu", "latency_ms", 1.5, 1.5) is None
    # Again: nothing to withdraw. The 404 says how to list the labels and names the one of the feature.
    answer = client.delete(f"{BASE}/labels", params=key, headers=headers)
    assert answer.status_code == 404
    assert answer.json()["detail"] == (
        "job demo_web_metrics, series 'region=eu': no label on [2024-03-03T15:00:00+01:00, 2024-03-03T16:00:00+00:00] "
        "(labels of the series overlapping it: [2024-03-03T14:00:00+00:00, 2024-03-03T16:00:00+00:00] feature 'requests'); "
        "GET /api/v1/jobs/demo_web_metrics/labels?series=region=eu lists them with their exact start, end and feature"
    )
    assert client.delete(f"{BASE}/labels", params={**key, "feature": "requests"}, headers=headers).status_code == 200
    assert client.get(f"{BASE}/labels", headers=headers).json()["labels"] == []


def test_withdrawing_a_verdict_needs_the_right_to_give_one(client, headers, mint, scored):
    body = {"series": "region=eu", "start": f"{SPIKE_DAY}T14:00:00Z", "end": f"{SPIKE_DAY}T16:00:00Z",
            "verdict": True, "value_min": 1, "value_max": 2}
    assert client.post(f"{BASE}/labels", json=body, headers=headers).status_code == 201
    key = {name: body[name] for name in ("series", "start", "end")}
    viewer = {"Authorization": f"Bearer {mint('viewer')}"}
    answer = client.delete(f"{BASE}/labels", params=key, headers=viewer)
    assert answer.status_code == 403
    assert "user 'viewer' may not trigger runs of job 'demo_web_metrics'" in answer.json()["detail"]
    assert client.delete(f"{BASE}/labels", params=key).status_code == 401
    assert len(client.get(f"{BASE}/labels", headers=viewer).json()["labels"]) == 1  # still there
    answer = client.delete("/api/v1/jobs/no_such_job/labels", params=key, headers=headers)
    assert answer.status_code == 404 and "no job named 'no_such_job'" in answer.json()["detail"]
    user = {"Authorization": f"Bearer {mint('user', username='ops')}"}
    assert client.delete(f"{BASE}/labels", params=key, headers=user).status_code == 200


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"start": "1709478000"}, "not the number '1709478000'"),
        ({"start": f"{SPIKE_DAY}T14:00:00"}, "timezone"),
        ({"end": "0001-01-01T00:00:00+01:00"}, "out of range"),
        ({"feature": ""}, "at least 1 character"),
        ({"series": ".."}, "'..' is not a series key"),
    ],
)
def test_a_bad_key_to_withdraw_is_422(client, headers, scored, change, message):
    key = {"series": "region=eu", "start": f"{SPIKE_DAY}T14:00:00Z", "end": f"{SPIKE_DAY}T16:00:00Z", **change}
    answer = client.delete(f"{BASE}/labels", params=key, headers=headers)
    assert answer.status_code == 422, answer.text
    assert message in str(answer.json()["detail"])
    missing = client.delete(f"{BASE}/labels", params={"series": "region=eu"}, headers=headers)
    assert missing.status_code == 422 and "start" in str(missing.json()["detail"])


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_a_time_whose_plus_a_query_string_turned_into_a_space_is_422_saying_so(client, headers, method):
    # Copied into a URL as listed ("+00:00"), the time came as "2024-03-03T14:00:00 00:00" and was
    # refused as having "unexpected extra characters at the end of the input".
    url = f"{BASE}/labels?series=region%3Deu&start={SPIKE_DAY}T14:00:00+00:00&end={SPIKE_DAY}T16:00:00.5+0100"
    answer = client.request(method, url, headers=headers)
    assert answer.status_code == 422, answer.text
    [start, end] = [error["msg"] for error in answer.json()["detail"]]
    assert start == (
        "Value error, '2024-03-03T14:00:00 00:00' has a space where its offset's '+' was ('+' in a URL's query string "
        "reads as a space): write it %2B (2024-03-03T14:00:00%2B00:00, or curl -G --data-urlencode), or give the time in UTC with Z"
    )
    assert "(2024-03-03T16:00:00.5%2B0100," in end
    encoded = client.request(method, url.replace("+", "%2B"), headers=headers)
    assert encoded.status_code == (200 if method == "GET" else 404), encoded.text


def test_events_of_an_unknown_series_are_404_naming_it_and_where_the_known_ones_are(client, headers, scored):
    """An unknown series answered [] (200), as a known one without events does: a typo read as "no incidents"."""
    answer = client.get(f"{BASE}/events", params={"series": "region=europe"}, headers=headers)
    assert answer.status_code == 404, answer.text
    detail = answer.json()["detail"]
    assert "job demo_web_metrics has no series 'region=europe'" in detail and "region=eu" in detail
    assert f"GET {BASE}/model lists them" in detail
    # A known series without events in the window stays an empty list.
    quiet = client.get(f"{BASE}/events", params={"series": "region=eu", "start": "2024-05-01T00:00:00Z"}, headers=headers)
    assert quiet.status_code == 200 and quiet.json() == {"job": "demo_web_metrics", "total": 0, "events": []}
    # A job never trained has no series at all yet: say what to do.
    untrained = client.get("/api/v1/jobs/demo_sensors/events", params={"series": "sensor=s1"}, headers=headers)
    assert untrained.status_code == 404 and "has no trained series yet: train it" in untrained.json()["detail"]
    spec = client.get("/openapi.json", headers=headers).json()
    assert "no model for the series" in spec["paths"]["/api/v1/jobs/{job}/events"]["get"]["responses"]["404"]["description"]


WATCHED_JOB = """
name: watched_web
source: {kind: file, path: data/demo/web_metrics.csv, format: csv}
timestamp: timestamp
frequency: 1h
dimensions: [region]
features: [requests, latency_ms]
model: {kind: seasonal_mad}
outputs: {parquet: var/watched-outputs}
registry: var/watched-models
alerts:
  dashboard_url: https://airflow.example.com
  email: {to: [oncall@example.com]}
  features: [requests]
"""


def test_events_are_built_from_the_features_alerts_watch(client, headers, web_project):
    """With alerts.features, latency at 04-05 then requests at 06-07 was listed as one event from 04:00,
    while alerts tell it from 06:00 under another key: a verdict on the listed event missed the alert."""
    import pandas as pd

    from pipelines.config import get_job, resolve_path
    from pipelines.sinks import ParquetSink
    from tests.pipelines.test_events import START, output_rows

    (web_project / "config" / "jobs" / "watched_web.yaml").write_text(WATCHED_JOB)
    job = get_job("watched_web")
    frame = output_rows(anomalies={4: {"latency_ms": 150}, 5: {"latency_ms": 150}, 6: {"requests": 180}, 7: {"requests": 160}}, job=job.name)
    end = START + pd.Timedelta(hours=24)
    ParquetSink(resolve_path(job.outputs.parquet)).write(frame, job=job.name, dimensions=["region"], start=START, end=end)
    answer = client.get("/api/v1/jobs/watched_web/events", headers=headers)
    assert answer.status_code == 200, answer.text
    [event] = answer.json()["events"]
    assert (parse(event["start"]), parse(event["end"]), event["rows"]) == (START + pd.Timedelta(hours=6), START + pd.Timedelta(hours=7), 2)
    assert event["top_features"] == ["requests"]


def test_a_query_parameter_the_operation_does_not_take_is_422_naming_it(client, headers, scored):
    """?serie=region=eu listed the events of every series, and ?lmit=5 all of them, as if read."""
    answer = client.get(f"{BASE}/events", params={"serie": "region=eu", "lmit": "5"}, headers=headers)
    assert answer.status_code == 422, answer.text
    errors = answer.json()["detail"]
    assert [error["loc"] for error in errors] == [["query", "serie"], ["query", "lmit"]]
    assert "unknown query parameter 'serie' of GET /api/v1/jobs/{job}/events: it takes series, start, end, limit" in errors[0]["msg"]
    answer = client.get(f"{BASE}/model", params={"serie": "region=eu"}, headers=headers)
    assert answer.status_code == 422 and "it takes series" in answer.json()["detail"][0]["msg"]
    assert client.get(f"{BASE}/events", params={"lmit": "5"}).status_code == 401  # no login: nothing about the route
    assert client.get(f"{BASE}/events", params={"limit": "5"}, headers=headers).status_code == 200


@pytest.mark.parametrize(("route", "start", "end", "word"), [
    ("events", "2024-03-04T00:00:00Z", "2024-03-03T00:00:00Z", "before"),
    ("events", "2024-03-03T00:00:00Z", "2024-03-03T01:00:00+01:00", "at"),  # [start, end) holds nothing
    ("labels", "2024-03-04T00:00:00Z", "2024-03-03T00:00:00Z", "before"),
])  # fmt: skip
def test_a_window_ending_before_it_starts_is_422_not_an_empty_list(client, headers, route, start, end, word):
    answer = client.get(f"{BASE}/{route}", params={"start": start, "end": end}, headers=headers)
    assert answer.status_code == 422, answer.text
    assert f"is {word} start" in answer.json()["detail"] and "give an end after the start" in answer.json()["detail"]


def test_labels_of_an_unknown_series_are_404_naming_it(client, headers, scored):
    answer = client.get(f"{BASE}/labels", params={"series": "region=europe"}, headers=headers)
    assert answer.status_code == 404 and "job demo_web_metrics has no series 'region=europe'" in answer.json()["detail"]
    assert client.get(f"{BASE}/labels", params={"series": "region=eu"}, headers=headers).json()["labels"] == []
