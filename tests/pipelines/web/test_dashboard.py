"""The dashboard's pages and data endpoints through the plugin's real app (Airflow tokens, real
auth manager) over real outputs of the demo jobs (see ``test_dashboard_data.build_scored_project``)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from pipelines import paging
from pipelines.config import get_job
from pipelines.web import dashboard_data as data
from tests.pipelines.web.test_dashboard_data import PREDICT, PREDICT_RUN, build_scored_project

D = "/dashboard"
CHECKED = re.compile(r'name="only_anomalies" value="true"\s+checked')


@pytest.fixture(scope="module")
def scored_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_scored_project(tmp_path_factory.getbasetemp() / "dashboard-scored")


@pytest.fixture
def dash(scored_base: Path, monkeypatch: pytest.MonkeyPatch, airflow_db: Path, mint) -> Iterator:
    """A client of the real app over the scored project, with an admin's token."""
    from fastapi.testclient import TestClient

    from pipelines.web.app import create_app

    monkeypatch.setenv("ANOMALY_PIPELINES_BASE_DIR", str(scored_base))
    monkeypatch.setenv("ANOMALY_PIPELINES_HOME", str(scored_base / "var"))
    data._CACHE.clear()
    with TestClient(create_app()) as client:
        client.headers["Authorization"] = f"Bearer {mint('admin')}"
        yield client


def test_nothing_is_served_without_a_login(scored_base, airflow_db, monkeypatch):
    from fastapi.testclient import TestClient

    from pipelines.web.app import create_app

    monkeypatch.setenv("ANOMALY_PIPELINES_BASE_DIR", str(scored_base))
    client = TestClient(create_app())
    for path in (f"{D}/data/jobs", f"{D}/data/jobs/demo_web_metrics/chart?series=region%3Deu", f"{D}/static/dashboard.js"):
        answer = client.get(path, headers={"Accept": "application/json"})
        assert answer.status_code == 401, path
        assert "not authenticated" in answer.json()["detail"]
    # A person is sent to Airflow's login page and back.
    page = client.get(f"{D}/jobs/demo_web_metrics", headers={"Accept": "text/html"}, follow_redirects=False)
    assert page.status_code == 303 and "login" in page.headers["location"]


def test_the_ui_session_cookie_opens_the_pages(dash):
    """The UI's iframes send only the session cookie, no Authorization header."""
    token = dash.headers.pop("Authorization").removeprefix("Bearer ")
    dash.cookies.set("_token", token)
    answer = dash.get(f"{D}/")
    assert answer.status_code == 200 and 'href="/dashboard/jobs/demo_web_metrics"' in answer.text


def test_jobs_overview_page_and_data(dash):
    page = dash.get(f"{D}/")
    assert page.status_code == 200
    assert page.text.count('class="job-link"') == 2
    assert 'data-job="demo_sensors"' in page.text and 'data-job="demo_web_metrics"' in page.text
    assert PREDICT_RUN in page.text and "failed 1 of 20" in page.text  # the failed validation of the demo job
    rows = {row["job"]: row for row in dash.get(f"{D}/data/jobs").json()}
    assert rows["demo_web_metrics"]["last_run"]["window"] == {"start": PREDICT[0], "end": PREDICT[1]}
    assert rows["demo_sensors"]["champions"] == 4


def test_job_page_charts_the_most_anomalous_series_and_lists_events(dash):
    page = dash.get(f"{D}/jobs/demo_sensors")
    assert page.status_code == 200
    summary = data.series_summary(get_job("demo_sensors"), data.Filters())
    charted = [row["series"] for row in summary[:4]]
    for series in charted:
        assert f'class="chart-card" data-job="demo_sensors" data-series="{series}"' in page.text
    assert page.text.count('class="chart-card"') == 4
    assert "Top contributing signals" in page.text  # a multivariate job
    total = sum(row["anomalies"] for row in summary)
    assert f'data-testid="events" data-total="{total}"' in page.text
    assert page.text.count('<tr class="event"') == total
    # The charting library is served from the package, never a CDN.
    assert "/dashboard/static/vendor/uplot/uPlot.iife.min.js" in page.text and "https://" not in page.text
    assert dash.get(f"{D}/static/vendor/uplot/uPlot.iife.min.js").status_code == 200


def test_job_page_filters_by_series_and_min_score(dash):
    one = dash.get(f"{D}/jobs/demo_web_metrics", params={"series": "region=apac"}).text
    assert one.count('class="chart-card"') == 1 and 'data-series="region=apac"' in one
    assert '<option value="region=apac" selected>' in one
    assert 'class="event" data-series="region=eu"' not in one
    strict = dash.get(f"{D}/jobs/demo_web_metrics", params={"min_score": "1"}).text
    loose = dash.get(f"{D}/jobs/demo_web_metrics").text
    assert strict.count('<tr class="event"') < loose.count('<tr class="event"')
    assert 'data-min-score="1.0"' in strict
    week = dash.get(f"{D}/jobs/demo_web_metrics", params={"start": "2024-03-07T00:00", "end": "2024-03-08T00:00"}).text
    assert 'value="2024-03-07T00:00"' in week and 'data-start="2024-03-07T00:00:00+00:00"' in week


def test_job_page_shows_some_features_and_only_the_series_with_anomalies(dash):
    rows = data.series_summary(get_job("demo_web_metrics"), data.Filters(features=("latency_ms",)))
    anomalous = [row["series"] for row in rows if row["anomalies"]]
    assert 0 < len(anomalous) < len(rows)  # the demo data has a series without latency anomalies

    page = dash.get(f"{D}/jobs/demo_web_metrics", params={"feature": "latency_ms", "only_anomalies": "true"}).text
    assert re.findall(r'<tr class="series-row[^"]*" data-series="([^"]+)"', page) == anomalous
    assert re.findall(r'class="chart-card" data-job="demo_web_metrics" data-series="([^"]+)"', page) == anomalous
    assert page.count("""data-features='["latency_ms"]'""") == len(anomalous)  # the charts ask for that feature only
    assert set(re.findall(r'<span class="signal" [^>]*>\s*(\w+)', page)) == {"latency_ms"}
    # The form shows the filters, and still offers every series; links in the table keep them.
    assert '<option value="latency_ms" selected>' in page and '<option value="requests" >' in page
    assert CHECKED.search(page)
    assert all(f'<option value="{row["series"]}"' in page for row in rows)
    assert "feature=latency_ms&amp;only_anomalies=true" in page
    # Without the toggle every series is listed; without the feature, all features are charted.
    every = dash.get(f"{D}/jobs/demo_web_metrics", params={"feature": "latency_ms"}).text
    assert len(re.findall(r'<tr class="series-row', every)) == len(rows)
    plain = dash.get(f"{D}/jobs/demo_web_metrics").text
    assert not CHECKED.search(plain) and 'name="only_anomalies"' in plain and "data-features='[]'" in plain

    body = dash.get(f"{D}/data/jobs/demo_web_metrics/series", params={"feature": "latency_ms", "only_anomalies": "1"}).json()
    assert [row["series"] for row in body["series"]] == anomalous
    assert body["filters"]["features"] == ["latency_ms"] and body["filters"]["only_anomalies"] is True
    chart = dash.get(f"{D}/data/jobs/demo_web_metrics/chart", params={"series": "region=eu", "feature": "latency_ms"}).json()
    assert [f["feature"] for f in chart["features"]] == ["latency_ms"]
    events = dash.get(f"{D}/data/jobs/demo_web_metrics/anomalies", params={"feature": "latency_ms"}).json()
    assert {s["feature"] for e in events["events"] for s in e["signals"]} == {"latency_ms"}


def test_the_series_table_lists_the_most_anomalous_series_and_the_selector_all(dash, monkeypatch):
    """A job of 10,000 series listed each in the table: a 4 MB page that took seconds to draw."""
    from pipelines.web import dashboard

    monkeypatch.setattr(dashboard, "PAGE_SERIES", 2)
    rows = data.series_summary(get_job("demo_web_metrics"), data.Filters())
    page = dash.get(f"{D}/jobs/demo_web_metrics").text
    assert re.findall(r'<tr class="series-row[^"]*" data-series="([^"]+)"', page) == [row["series"] for row in rows[:2]]
    assert 'data-testid="series-listed">The 2 series with the most anomalies are listed' in page
    assert all(f'<option value="{row["series"]}"' in page for row in rows)  # any series can still be chosen
    monkeypatch.setattr(dashboard, "PAGE_SERIES", 3)
    assert 'data-testid="series-listed"' not in dash.get(f"{D}/jobs/demo_web_metrics").text


def test_a_series_chosen_past_the_listed_ones_is_listed(dash, monkeypatch):
    """The page says to choose a series in the filters to see one past the first PAGE_SERIES; chosen,
    it was charted but still left out of the table."""
    from pipelines.web import dashboard

    monkeypatch.setattr(dashboard, "PAGE_SERIES", 2)
    rows = [row["series"] for row in data.series_summary(get_job("demo_web_metrics"), data.Filters())]
    page = dash.get(f"{D}/jobs/demo_web_metrics", params={"series": rows[-1]}).text
    listed = re.findall(r'<tr class="series-row([^"]*)" data-series="([^"]+)"', page)
    assert listed == [("", rows[0]), (" selected", rows[-1])]  # the most anomalous other, then the chosen one
    assert 'data-testid="series-listed">The 2 series chosen or with the most anomalies are listed' in page
    monkeypatch.setattr(dashboard, "PAGE_SERIES", 1)
    page = dash.get(f"{D}/jobs/demo_web_metrics", params={"series": rows[-1]}).text
    assert re.findall(r'<tr class="series-row[^"]*" data-series="([^"]+)"', page) == [rows[-1]]


def test_the_filter_form_with_empty_fields_shows_everything(dash):
    """The form sends every field, empty ones as name= (a 422 for an empty least score once)."""
    empty = {"start": "", "end": "", "min_score": "", "only_anomalies": ""}
    answer = dash.get(f"{D}/jobs/demo_web_metrics", params=empty)
    assert answer.status_code == 200
    assert answer.text.count('<tr class="series-row') == 3 and 'data-min-score="0.0"' in answer.text
    assert dash.get(f"{D}/data/jobs/demo_web_metrics/anomalies", params=empty).json()["filters"]["min_score"] == 0.0


@pytest.mark.parametrize(
    ("value", "seconds", "shown"),
    [
        ("2024-03-03T14:00:00+00:00", False, "2024-03-03 14:00"),
        ("2024-03-03T14:00:30+00:00", False, "2024-03-03 14:00:30"),  # 30 s after the one above
        ("2024-03-03T14:00:00+00:00", True, "2024-03-03 14:00:00"),  # a job of points under a minute apart
        ("2024-03-03T14:00:00.250000+00:00", False, "2024-03-03 14:00:00.250"),
        (None, False, "—"),
    ],
)
def test_times_show_their_seconds_when_they_have_some(value, seconds, shown):
    """Two anomalies 30 s apart (a 30s job) both showed 14:00: the macro cut every time to minutes."""
    from pipelines.web.dashboard import templates

    macro = templates.env.from_string('{% from "_macros.html" import when %}{{ when(value, seconds) }}')
    assert macro.render(value=value, seconds=seconds) == shown


def test_a_job_of_points_under_a_minute_apart_shows_seconds(dash, monkeypatch):
    from datetime import timedelta

    from pipelines.web import dashboard

    fast = get_job("demo_web_metrics").model_copy(update={"frequency": timedelta(seconds=30)})
    hourly = dash.get(f"{D}/jobs/demo_web_metrics").text
    monkeypatch.setattr(dashboard, "_job", lambda name, user: fast)
    page = dash.get(f"{D}/jobs/demo_web_metrics").text
    times = re.findall(r'<td class="mono">([^<]+)</td>', page)
    assert times and all(re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", t) for t in times), times
    assert 'data-seconds="true"' in page and 'name="start" value="" step="1"' in page
    assert re.findall(r'<td class="mono">([^<]+)</td>', hourly) == [t[:16] for t in times]
    assert 'data-seconds=""' in hourly and 'name="start" value="" data-testid' in hourly


@pytest.mark.parametrize(
    ("start", "value"),
    [
        ("2024-03-07T00:00", 'value="2024-03-07T00:00" data-testid'),
        ("2024-03-07T00:00:30", 'value="2024-03-07T00:00:30" step="1" data-testid'),
        ("2024-03-07T00:00:30.25Z", 'value="2024-03-07T00:00:30.250" step="0.001" data-testid'),
        ("2024-03-07T02:00:30+02:00", 'value="2024-03-07T00:00:30" step="1" data-testid'),
    ],
)
def test_the_time_filters_keep_the_seconds_of_the_url(dash, start, value):
    """A URL's start=...T00:00:30 showed 00:00 in the form: applying the form moved the filter."""
    page = dash.get(f"{D}/jobs/demo_web_metrics", params={"start": start}).text
    assert f'name="start" {value}="filter-start"' in page


def test_an_empty_range_says_so_instead_of_empty_tables(dash):
    """A range without data said "the 0 series with the most anomalies", drew an empty series table
    and a series selector of no option that Chromium draws as a dropdown saying "0 selected"."""
    page = dash.get(f"{D}/jobs/demo_web_metrics", params={"start": "2030-01-01T00:00"}).text
    assert "the 0 series" not in page and "drag across a chart" not in page
    assert 'data-testid="no-data"' in page and 'data-testid="no-series"' in page and '<tr class="series-row' not in page
    assert "No series has points in this range" in page
    assert '<select name="series"' not in page and 'data-testid="filter-series-none"' in page
    none = dash.get(f"{D}/jobs/demo_web_metrics", params={"feature": "latency_ms", "min_score": "1", "only_anomalies": "true"}).text
    assert "None of the 3 series has an anomaly with these filters" in none and "<thead><tr><th>Series</th>" not in none


def test_a_series_selector_of_one_series_is_a_list(dash, monkeypatch):
    """A one-row multiple select is drawn by Chromium as a dropdown saying "0 selected"."""
    every = dash.get(f"{D}/jobs/demo_sensors").text
    assert '<select name="series" multiple size="4"' in every
    summary = data.series_summary
    monkeypatch.setattr(data, "series_summary", lambda *args: summary(*args)[:1])
    page = dash.get(f"{D}/jobs/demo_web_metrics").text
    select = re.search(r'<select name="series" multiple size="(\d+)".*?</select>', page, re.S)
    assert select and select[1] == "2" and select[0].count("<option") == 1


def test_the_verdict_buttons_name_their_point(dash):
    """Each button was named "true anomaly" or "false alarm" alone: a screen reader heard "true anomaly"
    once per row, not whose point it marks."""
    page = dash.get(f"{D}/jobs/demo_web_metrics").text
    rows = re.findall(r'<tr class="event" data-series="([^"]+)".*?<td class="mono">([^<]+)</td>', page, re.S)
    assert rows
    for verdict in ("true anomaly", "false alarm"):
        labels = re.findall(rf'aria-label="{verdict}: ([^"]+) at ([^"]+) UTC"', page)
        assert labels == rows
    assert len(set(rows)) == len(rows)


def test_chart_endpoint(dash):
    answer = dash.get(f"{D}/data/jobs/demo_web_metrics/chart", params={"series": "region=eu", "buckets": 5})
    assert answer.status_code == 200
    body = answer.json()
    assert [f["feature"] for f in body["features"]] == ["requests", "latency_ms"]
    requests = body["features"][0]
    assert requests["points"] == 168 and requests["returned"] <= 4 * 5 + requests["anomalies"]
    assert sum(v is not None for v in requests["anomaly"]) == requests["anomalies"] >= 3


@pytest.mark.parametrize(
    ("path", "params", "code", "message"),
    [
        (f"{D}/data/jobs/nope/series", {}, 404, "no job named 'nope'; jobs you may read: demo_sensors, demo_web_metrics"),
        (f"{D}/data/jobs/demo_web_metrics/series", {"start": "soon"}, 400, "time range filter: 'soon' is not an ISO 8601"),
        (f"{D}/data/jobs/demo_web_metrics/anomalies", {"min_score": 2}, 400, "min_score filter must be between 0 and 1"),
        (f"{D}/data/jobs/demo_web_metrics/chart", {"series": "region=eu", "buckets": 0}, 422, "greater than or equal to 1"),
        (
            f"{D}/data/jobs/demo_web_metrics/series",
            {"feature": ["requests", "cpu"]},
            400,
            "feature filter: 'cpu' is not a feature of job 'demo_web_metrics'; choose among requests, latency_ms (or none for all)",
        ),
        (f"{D}/data/jobs/demo_web_metrics/chart", {"series": "region=eu", "feature": "cpu"}, 400, "'cpu' is not a feature of job"),
        (f"{D}/data/jobs/demo_web_metrics/anomalies", {"feature": "cpu"}, 400, "'cpu' is not a feature of job"),
        (
            f"{D}/data/jobs/demo_web_metrics/series",
            {"only_anomalies": "maybe"},
            400,
            "only_anomalies filter must be true or false (or 1/0, yes/no, on/off), got 'maybe'",
        ),
    ],
)
def test_bad_requests_say_what_to_do(dash, path, params, code, message):
    answer = dash.get(path, params=params)
    assert answer.status_code == code
    assert message in str(answer.json()["detail"])


def test_pages_show_errors_as_pages(dash):
    answer = dash.get(f"{D}/jobs/nope")
    assert answer.status_code == 404 and answer.headers["content-type"].startswith("text/html")
    assert "no job named &#39;nope&#39;" in answer.text
    for params, message in [
        ({"feature": "cpu"}, "feature filter: &#39;cpu&#39; is not a feature of job &#39;demo_web_metrics&#39;; choose among requests"),
        ({"only_anomalies": "maybe"}, "only_anomalies filter must be true or false"),
    ]:
        answer = dash.get(f"{D}/jobs/demo_web_metrics", params=params)
        assert answer.status_code == 400 and answer.headers["content-type"].startswith("text/html")
        assert message in answer.text


def test_models_page_marks_the_champion(dash):
    page = dash.get(f"{D}/jobs/demo_web_metrics/models").text
    assert page.count('data-testid="champion"') == 3
    assert "holdout_error" in page and "no champion yet" in page
    body = dash.get(f"{D}/data/jobs/demo_web_metrics/models").json()
    assert [entry["series"] for entry in body["series"]] == ["region=apac", "region=eu", "region=us"]


def test_models_page_of_many_series_is_paged(dash, monkeypatch):
    """A job of 10,000 trained series read every version and tune record of each: 8 s a page."""

    monkeypatch.setattr(paging, "PAGE_SERIES", 2)

    def listed(**params) -> list[str]:
        return re.findall(r'<section class="series-models" data-series="([^"]+)"', dash.get(f"{D}/jobs/demo_web_metrics/models", params=params).text)

    assert listed() == ["region=apac", "region=eu"] and listed(page=2) == ["region=us"] and listed(page=3) == []
    first = dash.get(f"{D}/jobs/demo_web_metrics/models").text
    assert "Series 1–2 of 3, by key (page 1 of 2" in first and 'href="?page=2" data-testid="models-next"' in first
    assert 'href="?page=1" data-testid="models-previous"' in dash.get(f"{D}/jobs/demo_web_metrics/models", params={"page": 2}).text
    assert "No series on page 3: the 3 series fill 2 page(s)" in dash.get(f"{D}/jobs/demo_web_metrics/models", params={"page": 3}).text
    monkeypatch.setattr(paging, "PAGE_SERIES", 3)
    assert 'data-testid="models-paged"' not in dash.get(f"{D}/jobs/demo_web_metrics/models").text


def test_models_data_is_paged_like_the_page_when_asked(dash, monkeypatch):
    """The JSON read every series of the job (10,000 series: some 8 s) with no way to ask for fewer."""

    monkeypatch.setattr(paging, "PAGE_SERIES", 2)

    def body(**params) -> dict:
        answer = dash.get(f"{D}/data/jobs/demo_web_metrics/models", params=params)
        assert answer.status_code == 200, answer.text
        return answer.json()

    first = body(page=1)
    assert [e["series"] for e in first["series"]] == ["region=apac", "region=eu"]
    assert {k: first[k] for k in ("page", "pages", "total", "page_size", "next_page")} == {
        "page": 1, "pages": 2, "total": 3, "page_size": 2, "next_page": 2
    }
    last = body(page=2)
    assert [e["series"] for e in last["series"]] == ["region=us"] and last["next_page"] is None
    past = body(page=3)  # past the end: no series, and how many pages there are
    assert past["series"] == [] and past["pages"] == 2 and past["total"] == 3 and past["next_page"] is None


def test_models_data_without_a_page_answers_the_first_page(dash, monkeypatch):
    """Without ?page it read every series: a job of 100,000 trained series, every version and tune
    record of each, in one answer."""
    from pipelines.web import dashboard_data

    monkeypatch.setattr(paging, "PAGE_SERIES", 2)
    read: list[list[str] | None] = []
    models = dashboard_data.models

    def reading(job, series=None):
        read.append(None if series is None else list(series))
        return models(job, series)

    monkeypatch.setattr(dashboard_data, "models", reading)

    answer = dash.get(f"{D}/data/jobs/demo_web_metrics/models")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert read == [["region=apac", "region=eu"]]  # the others' versions and tune records were not read
    assert [e["series"] for e in body["series"]] == ["region=apac", "region=eu"]
    assert {k: body[k] for k in ("page", "pages", "total", "page_size", "next_page")} == {
        "page": 1, "pages": 2, "total": 3, "page_size": 2, "next_page": 2
    }


@pytest.mark.parametrize("page", ["0", "abc", "-1", "1.5", "1000001", "9" * 5000])
def test_a_bad_models_page_is_refused_naming_it(dash, page):
    """?page=0 or ?page=abc on the models page answered FastAPI's JSON 422, not an error page."""
    message = f"page must be a whole number from 1 to 1,000,000, got &#39;{page}&#39;"
    answer = dash.get(f"{D}/jobs/demo_web_metrics/models", params={"page": page}, headers={"Accept": "text/html"})
    assert answer.status_code == 400 and answer.headers["content-type"].startswith("text/html")
    assert 'data-testid="error"' in answer.text and message in answer.text
    data_answer = dash.get(f"{D}/data/jobs/demo_web_metrics/models", params={"page": page})
    assert data_answer.status_code == 400 and data_answer.json()["detail"] == message.replace("&#39;", "'")


def test_models_page_says_why_the_champion_of_a_series_cannot_be_told(client, headers, web_project):
    """A damaged champion.json showed "champion: none" on that series with no reason."""
    from markupsafe import escape

    from pipelines.web.dashboard_data import _registry

    job = get_job("demo_web_metrics")
    registry = _registry(job)
    pointer = Path(registry.root) / job.name / "region=eu" / "champion.json"
    pointer.write_text('{"version": "<b>cut')
    [entry] = [e for e in client.get(f"{D}/data/jobs/demo_web_metrics/models", headers=headers).json()["series"] if e["error"]]
    page = client.get(f"{D}/jobs/demo_web_metrics/models", headers=headers).text
    assert entry["series"] == "region=eu" and "is not valid JSON" in entry["error"]
    assert page.count('data-testid="champion-error"') == 1
    assert f'cannot tell the champion of this series: {escape(entry["error"])}' in page and "<b>cut" not in page

    # A readable pointer to a version whose metadata.json is damaged: that version is not listed.
    serving = registry.champion_version(job.name, "region=us")
    (Path(registry.root) / job.name / "region=us" / "versions" / serving / "metadata.json").write_text("{")
    page = client.get(f"{D}/jobs/demo_web_metrics/models", headers=headers).text
    assert page.count('data-testid="champion-error"') == 2
    assert f"the champion, version <span class=\"mono\">{serving}</span>, is not among the readable versions" in page


def test_models_page_shows_flags_as_yes_or_no_and_any_metric_as_it_is(client, headers, web_project):
    """compared_out_of_sample showed as 1 or 0, compared_rows of 12,345 as 1.234e+04, and a metric
    that is no number made the whole page a 500."""
    from pipelines.training import registry_for

    job = get_job("demo_web_metrics")
    registry = registry_for(job)
    metrics = {"holdout_error": 0.123456, "compared_rows": 12345, "compared_out_of_sample": False, "note": "<b>n/a"}
    registry.register(job.name, "region=eu", {"model.skops": b"m"}, {"model": "mad", "metrics": metrics})
    answer = client.get(f"{D}/jobs/demo_web_metrics/models", headers=headers)
    assert answer.status_code == 200, answer.text
    shown = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", answer.text))
    assert "compared_out_of_sample no" in shown and "compared_rows 12,345" in shown and "holdout_error 0.1235" in shown
    assert "note &lt;b&gt;n/a" in shown


def test_models_page_shows_each_tune_run_and_its_decision(client, headers, tuned):
    import html

    page = client.get(f"{D}/jobs/demo_web_metrics/models", headers=headers).text
    assert page.count('data-run="tune-web"') == 3
    assert page.count('data-promoted="true"') == sum(r["promoted"] for r in tuned.values())
    assert page.count("data-stretch=") == sum(len(r["stretches"]) for r in tuned.values())
    for result in tuned.values():
        assert html.escape(result["reason"]) in page
    body = client.get(f"{D}/data/jobs/demo_web_metrics/models", headers=headers).json()
    for entry in body["series"]:
        [run] = entry["tuning"]
        assert run["run_id"] == "tune-web" and run["best"]["kind"] == tuned[entry["series"]]["kind"]


def test_models_page_says_what_auto_chose_and_why(client, headers, web_project):
    import html

    import yaml

    from pipelines.runner import run_train
    from pipelines.workspace import Window, to_utc
    from tests.pipelines.web.conftest import TRAIN_END, TRAIN_START

    spec = yaml.safe_load((web_project / "config" / "jobs" / "demo_web_metrics.yaml").read_text())
    spec.update(name="demo_web_auto", model={"kind": "auto", "params": {"candidates": ["seasonal_mad", "level_shift"], "prefer": None}})
    (web_project / "config" / "jobs" / "demo_web_auto.yaml").write_text(yaml.safe_dump(spec))
    job = get_job("demo_web_auto")
    run_train(job, Window(to_utc(TRAIN_START), to_utc(TRAIN_END)), run_id="auto-train")

    page = client.get(f"{D}/jobs/demo_web_auto/models", headers=headers).text
    champions = {entry["series"]: entry for entry in client.get(f"{D}/data/jobs/demo_web_auto/models", headers=headers).json()["series"]}
    assert sorted(champions) == ["region=apac", "region=eu", "region=us"]
    for entry in champions.values():
        [version] = entry["versions"]
        assert version["model"] == "auto" and version["chosen"] in ("seasonal_mad", "level_shift")
        assert f'data-chosen="{version["chosen"]}"' in page and html.escape(version["choice_reason"]) in page
    # demo_web_metrics is a single detector: its page names the kind and no choice.
    plain = client.get(f"{D}/jobs/demo_web_metrics/models", headers=headers).text
    assert "data-chosen=" not in plain and plain.count('<span class="mono">seasonal_mad</span>') == 3


def test_validation_page_explains_the_failure(dash):
    page = dash.get(f"{D}/jobs/demo_web_metrics/validation").text
    assert 'data-success="false"' in page and "expect_table_row_count_to_be_between" in page and "observed 6" in page
    results = dash.get(f"{D}/data/jobs/demo_web_metrics/validation").json()["results"]
    assert results[0]["success"] is False


def test_run_tab_of_a_predict_run_shows_its_window(dash):
    page = dash.get(f"{D}/runs/demo_web_metrics__predict/{PREDICT_RUN}")
    assert page.status_code == 200
    assert 'data-testid="run-banner"' in page.text and PREDICT_RUN in page.text
    assert 'data-start="2024-03-01T00:00:00+00:00" data-end="2024-03-08T00:00:00+00:00"' in page.text
    missing = dash.get(f"{D}/runs/demo_web_metrics__predict/manual__never").text
    assert "has no rows in the job's outputs" in missing
    train = dash.get(f"{D}/runs/demo_web_metrics__train/any").text
    assert "trains the models of job <strong>demo_web_metrics</strong>" in train
    # A one-off scoring run writes its own file: its page says where to look, not "tunes the models".
    score = dash.get(f"{D}/runs/demo_web_metrics__score/manual__one").text
    assert "scores a file with the serving models of job <strong>demo_web_metrics</strong>" in score
    assert "/api/v1/jobs/demo_web_metrics/score-file/manual__one" in score
    other = dash.get(f"{D}/runs/some_other_dag/any").text
    assert "is not one of the anomaly-detection jobs" in other


def test_static_files_stay_inside_the_static_folder(dash):
    assert dash.get(f"{D}/static/dashboard.css").status_code == 200
    assert dash.get(f"{D}/static/..%2Fdashboard.py").status_code == 404
    assert dash.get(f"{D}/static/nothing.js").status_code == 404


@pytest.fixture
def web_metrics_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The auth manager lets users read only demo_web_metrics' DAGs (as a deployment granting
    per-DAG access would; SimpleAuthManager's roles cover all DAGs alike)."""
    from pipelines.web.auth import auth_manager

    manager = type(auth_manager())
    original = manager.is_authorized_dag

    def is_authorized_dag(self, *, method, access_entity=None, details=None, user):
        if details is None or not (details.id or "").startswith("demo_web_metrics__"):
            return False
        return original(self, method=method, access_entity=access_entity, details=details, user=user)

    monkeypatch.setattr(manager, "is_authorized_dag", is_authorized_dag)


@pytest.mark.parametrize("path", [f"{D}/", f"{D}/data/jobs", f"{D}/jobs/nope", f"{D}/data/jobs/nope/series"])
def test_a_job_the_user_may_not_read_is_not_listed(dash, web_metrics_only, path):
    answer = dash.get(path)
    assert "demo_sensors" not in answer.text
    assert "demo_web_metrics" in dash.get(f"{D}/").text


@pytest.mark.parametrize(
    ("path", "code"),
    [
        (f"{D}/jobs/{{job}}", 403),
        (f"{D}/data/jobs/{{job}}/series", 403),
        (f"{D}/runs/{{job}}__predict/{PREDICT_RUN}", 403),
        (f"{D}/runs/{{job}}__train/any", 403),
        # A feature filter is checked against the job after the permission: its features are not told.
        (f"{D}/jobs/{{job}}?feature=cpu", 403),
        (f"{D}/data/jobs/{{job}}/chart?series=machine%3Dpump_1&feature=cpu", 403),
        (f"{D}/data/jobs/{{job}}/anomalies?feature=cpu&only_anomalies=true", 403),
    ],
)
def test_a_job_the_user_may_not_read_answers_as_a_missing_one(dash, web_metrics_only, path, code):
    """Whether a job exists is told only to users who may read it."""
    assert dash.get(path.format(job="demo_sensors")).status_code == code
    assert dash.get(path.format(job="nope")).status_code == code


@pytest.mark.parametrize(
    ("path", "label"),
    [
        (f"{D}/", "<th>Last run (UTC)</th>"),
        (f"{D}/jobs/demo_web_metrics", "<th>From (UTC)</th><th>To (UTC)</th>"),
        (f"{D}/jobs/demo_web_metrics/models", "<th>Trained (UTC)</th><th>Training window (UTC)</th>"),
        (f"{D}/jobs/demo_web_metrics/validation", "2024-03-08 00:00 UTC"),
    ],
)
def test_every_time_shown_says_its_zone(dash, path, label):
    """Times are shown in UTC, whatever the reader's zone: each table or line says so."""
    assert label in dash.get(path).text


@pytest.mark.parametrize(
    "path",
    [
        f"{D}/",
        f"{D}/data/jobs",
        f"{D}/jobs/nope",
        f"{D}/data/jobs/nope/series",
        f"{D}/runs/nope__predict/any",
        f"{D}/runs/demo_web_metrics__predict/any",
        "/api/v1/jobs/nope/model",
    ],
)
def test_a_broken_job_file_is_logged_once_per_request(client, headers, web_project, caplog, path):
    (web_project / "config" / "jobs" / "broken.yaml").write_text("name: broken\nfrequency: 1h\n")
    caplog.set_level(logging.INFO, logger="pipelines")
    assert client.get(path, headers=headers).status_code in (200, 404)
    logged = [r for r in caplog.records if r.getMessage().startswith("job files that make no job")]
    assert len(logged) == 1 and "broken.yaml" in logged[0].getMessage()


def test_every_link_stays_below_airflows_url_prefix(scored_base, monkeypatch, airflow_db, mint):
    """Airflow served below a sub-path ([api] base_url http://host:8080/airflow) mounts the app at
    /airflow/anomaly-pipelines: pages, static files, data, label POSTs and the login's way back."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from pipelines.web.app import create_app

    monkeypatch.setenv("ANOMALY_PIPELINES_BASE_DIR", str(scored_base))
    monkeypatch.setenv("ANOMALY_PIPELINES_HOME", str(scored_base / "var"))
    airflow = FastAPI(root_path="/airflow")  # as Airflow's api-server builds itself
    airflow.mount("/anomaly-pipelines", create_app())
    client = TestClient(airflow)
    root = "/airflow/anomaly-pipelines"
    auth = {"Authorization": f"Bearer {mint('admin')}"}
    page = client.get(f"{root}{D}/jobs/demo_web_metrics", headers=auth).text
    links = set(re.findall(r'(?:href|src|data-base|data-labels-url)="(/[^"]*)"', page))
    assert links and all(link.startswith(f"{root}/") for link in links), sorted(links)
    assert f'data-labels-url="{root}/api/v1/jobs/demo_web_metrics/labels"' in page and f'data-base="{root}{D}"' in page
    assert client.get(f"{root}{D}/static/dashboard.js", headers=auth).status_code == 200
    assert client.get(f"{root}{D}/data/jobs/demo_web_metrics/models", headers=auth, params={"page": 1}).status_code == 200
    login = client.get(f"{root}{D}/", headers={"Accept": "text/html"}, follow_redirects=False)
    assert login.status_code == 303 and "next=http%3A%2F%2Ftestserver%2Fairflow%2Fanomaly-pipelines%2Fdashboard%2F" in login.headers["location"]


def test_a_points_verdict_follows_the_rule_alerts_and_training_read_labels_by(tmp_path):
    # The events table showed whichever label of the series was written last: a whole-series false
    # alarm over a point whose feature a person confirmed, a label of another feature as its verdict.
    from datetime import UTC, datetime

    from pipelines.config import parse_job
    from pipelines.labels import label_store
    from pipelines.web.dashboard import _verdicts

    job = parse_job(
        {
            "name": "web", "source": {"kind": "file", "path": "x.csv"}, "timestamp": "ts", "frequency": "1h",
            "dimensions": ["region"], "features": ["requests", "latency_ms"], "model": {"kind": "seasonal_mad"},
            "outputs": {"parquet": str(tmp_path / "outputs")}, "registry": str(tmp_path / "models"),
            "labels": {"connection": {"url": f"sqlite:///{tmp_path / 'labels.db'}"}},
        }
    )
    store = label_store(job)

    def at(hour: int) -> datetime:
        return datetime(2024, 3, 3, hour, tzinfo=UTC)

    def point(series: str, hour: int, *features: str) -> dict:
        signals = [{"feature": feature, "feature_score": 0.5, "value": 1.0, "expected": 0.0} for feature in features]
        return {"series": series, "timestamp": f"2024-03-03T{hour:02d}:00:00Z", "score": 0.99, "signals": signals}

    store.add("web", "region=eu", at(2), at(3), True, feature="requests", value_min=1, value_max=2)
    store.add("web", "region=eu", at(2), at(5), False, value_min=1, value_max=2)  # later, but less specific
    store.add("web", "region=eu", at(6), at(6), False, feature="latency_ms", value_min=1, value_max=2)
    store.add("web", "region=us", at(2), at(2), True, value_min=1, value_max=2)
    points = [
        point("region=eu", 2, "requests"), point("region=eu", 3, "latency_ms", "requests"), point("region=eu", 4, "requests"),
        point("region=eu", 5, "latency_ms"), point("region=eu", 6, "requests"), point("region=us", 2, "requests"),
    ]
    assert _verdicts(job, points) == {
        ("region=eu", "2024-03-03T02:00:00Z"): True,  # its feature's label over the whole series' later one
        ("region=eu", "2024-03-03T03:00:00Z"): True,  # confirmed on one of its signals
        ("region=eu", "2024-03-03T04:00:00Z"): False,
        ("region=eu", "2024-03-03T05:00:00Z"): False,
        # 06: only latency_ms, not anomalous there, was judged
        ("region=us", "2024-03-03T02:00:00Z"): True,
    }


def test_the_series_data_is_paged_and_searchable(dash):
    """Every series at once: megabytes of JSON for a job of 10,000 series."""
    from pipelines.web import dashboard

    url = f"{D}/data/jobs/demo_web_metrics/series"
    whole = [row["series"] for row in data.series_summary(get_job("demo_web_metrics"), data.Filters())]
    first = dash.get(url).json()
    assert (first["total"], first["offset"], first["limit"], first["next_offset"]) == (3, 0, dashboard.SERIES_LIMIT, None)
    assert [row["series"] for row in first["series"]] == whole
    pages, offset = [], 0
    while offset is not None:
        answer = dash.get(url, params={"limit": 2, "offset": offset}).json()
        assert answer["total"] == 3 and len(answer["series"]) <= 2
        pages += answer["series"]
        offset = answer["next_offset"]
    assert pages == first["series"]
    assert dash.get(url, params={"offset": 7}).json() | {"series": None} == first | {"offset": 7, "series": None}
    found = dash.get(url, params={"q": " EU "}).json()
    assert [row["series"] for row in found["series"]] == ["region=eu"] and found["total"] == 1 and found["q"] == "EU"
    for params, name in (({"limit": 0}, "limit"), ({"limit": dashboard.MAX_SERIES_LIMIT + 1}, "limit"), ({"offset": -1}, "offset")):
        answer = dash.get(url, params=params)
        assert answer.status_code == 422 and answer.json()["detail"][0]["loc"] == ["query", name], answer.text


def test_the_series_selector_lists_the_most_anomalous_and_finds_the_others(dash, monkeypatch):
    """The selector held an option per series: about 1 MB of page for a job of 10,000 series."""
    import html

    from pipelines.web import dashboard

    monkeypatch.setattr(dashboard, "SELECTOR_SERIES", 1)
    rows = [row["series"] for row in data.series_summary(get_job("demo_web_metrics"), data.Filters())]

    def options(page: str) -> list[str]:
        select = re.search(r'<select name="series".*?</select>', page, re.S)
        return re.findall(r'<option value="([^"]+)"', select[0]) if select else []

    page = dash.get(f"{D}/jobs/demo_web_metrics", params={"start": "2024-03-01T00:00:00Z"}).text
    assert options(page) == rows[:1]
    assert 'data-testid="filter-series-count">1 of 3 series listed above' in page
    search = html.unescape(re.search(r'<input type="search" name="series"[^>]*data-search-url="([^"]+)"', page, re.S)[1])
    assert search.startswith(f"{D}/data/jobs/demo_web_metrics/series?start=2024-03-01T00") and "limit=" in search
    found = dash.get(f"{search}&q={rows[-1].split('=')[1]}").json()
    assert [row["series"] for row in found["series"]] == [rows[-1]]
    # A series found (or typed) and applied stays chosen in the selector.
    chosen = dash.get(f"{D}/jobs/demo_web_metrics", params={"series": ["", rows[-1]]}).text
    assert options(chosen) == [rows[-1]] and f'<option value="{rows[-1]}" selected' in chosen
    monkeypatch.setattr(dashboard, "SELECTOR_SERIES", 3)
    assert 'data-testid="filter-series-search"' not in dash.get(f"{D}/jobs/demo_web_metrics").text


def test_a_time_pasted_into_the_url_with_its_offset_is_read_as_written(dash):
    """A query string reads '+' as a space: ``start=2024-03-03T14:00:00+02:00`` typed in the address
    bar reached the page as "2024-03-03T14:00:00 02:00", refused as not an ISO 8601 date-time."""
    chart = dash.get(f"{D}/data/jobs/demo_web_metrics/chart?series=region%3Deu&start=2024-03-03T14:00:00+02:00&end=2024-03-03T18:00+05:30")
    assert chart.status_code == 200, chart.text
    assert chart.json()["filters"] | {"series": None} == {
        "series": None, "start": "2024-03-03T12:00:00+00:00", "end": "2024-03-03T12:30:00+00:00",
        "min_score": 0.0, "features": [], "only_anomalies": False,
    }  # fmt: skip
    page = dash.get(f"{D}/jobs/demo_web_metrics?start=2024-03-03T14:00:00+02:00")
    assert page.status_code == 200, page.text
    assert 'name="start" value="2024-03-03T12:00"' in page.text  # the form shows it in UTC, as everything


def test_outputs_that_cannot_be_reached_are_503_naming_the_store_on_every_page(
    project, airflow_db, mint, unreachable_s3_options, monkeypatch
):
    """The validation page of a job whose outputs' store did not answer was a bare 500 "Internal Server
    Error" (botocore's error, unwrapped); the job page a 500, where the API says 503: retry later."""
    import yaml
    from fastapi.testclient import TestClient

    from pipelines.web.app import create_app

    job = yaml.safe_load((project / "config" / "jobs" / "demo_web_metrics.yaml").read_text())
    # A job file holds no credential (config refuses one written out): s3fs reads them from the environment.
    options = {name: value for name, value in unreachable_s3_options.items() if name not in ("key", "secret")}
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", unreachable_s3_options["key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", unreachable_s3_options["secret"])
    job.update(name="s3_metrics", outputs={"parquet": "s3://bucket/out", "storage_options": options})
    (project / "config" / "jobs" / "s3_metrics.yaml").write_text(yaml.safe_dump(job))
    data._CACHE.clear()
    client = TestClient(create_app())
    client.headers["Authorization"] = f"Bearer {mint('admin')}"
    for path in ("jobs/s3_metrics", "jobs/s3_metrics/validation", "data/jobs/s3_metrics/series", "data/jobs/s3_metrics/validation"):
        answer = client.get(f"{D}/{path}")
        assert answer.status_code == 503, (path, answer.text[:300])
        assert "cannot reach s3://bucket/out" in answer.text and "endpoint_url" in answer.text, path
    # The overview still lists it, with the error, beside the jobs it can read.
    overview = client.get(f"{D}/")
    assert overview.status_code == 200 and "cannot reach s3://bucket/out" in overview.text


def test_a_data_endpoint_refuses_a_query_parameter_it_does_not_take(dash):
    """``?serie=region=eu`` (a typo) answered every series, ``?lmit=1`` all of them, as if read."""
    url = f"{D}/data/jobs/demo_web_metrics/series"
    answer = dash.get(url, params={"serie": "region=eu", "lmit": 1})
    assert answer.status_code == 422, answer.text
    assert [error["loc"] for error in answer.json()["detail"]] == [["query", "serie"], ["query", "lmit"]]
    assert "unknown query parameter 'serie' of GET /dashboard/data/jobs/{job_name}/series: it takes " in answer.text
    assert "series" in answer.json()["detail"][0]["msg"] and "limit" in answer.json()["detail"][0]["msg"]
    assert dash.get(f"{D}/data/jobs", params={"job": "demo_web_metrics"}).status_code == 422
    # Anonymous callers learn nothing of the route but that it needs a login.
    anonymous = dash.get(url, params={"serie": "x"}, headers={"Authorization": ""})
    assert anonymous.status_code == 401
    # The pages are left alone: a person's URL may carry anything.
    assert dash.get(f"{D}/jobs/demo_web_metrics", params={"utm_source": "mail"}).status_code == 200
