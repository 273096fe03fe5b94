"""The Anomalies dashboard in a real browser, inside a real Airflow UI.

Playwright drives Debian's Chromium (``/usr/bin/chromium``, headless; no downloaded browsers)
against ``airflow standalone`` started by the ``airflow_server`` fixture with this repo's plugin:
log in as admin, open "Anomalies" in the navigation, open demo_web_metrics, see the charts with
anomaly markers, filter by series and least score, mark an anomaly a false alarm, filter by feature
and "only series with anomalies" and share that view by its URL, then open the "Anomalies" tab of a
predict DAG run. The data comes from real runs: the CLI trains and scores the demo week in the server's
project, and a predict DAG run executed by the server's scheduler re-scores the spike day.
Screenshots are saved to ``test-artifacts/`` at the repo root.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.project_copy import using_project

CHROMIUM = Path("/usr/bin/chromium")
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
TRAIN_END = "2024-03-01T00:00:00Z"
WEEK = ("2024-03-01T00:00:00Z", "2024-03-08T00:00:00Z")
SPIKE_DAY = ("2024-03-03T00:00:00Z", "2024-03-04T00:00:00Z")
#: demo_web_metrics without schedules: unpausing its predict DAG starts no run of its own, so
#: the one this test triggers runs at once.
MANUAL_JOB = "dash_manual_web"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="Debian's Chromium is not installed at /usr/bin/chromium: run scripts/install-system-deps.sh "
        "(`make test` does) or `apt-get install chromium`",
    ),
]


@pytest.fixture(scope="module")
def scored_server(airflow_server):
    """The server's project with demo_web_metrics and a manual-only copy trained and scored by the CLI,
    and one predict DAG run of the copy done by Airflow; returns (server, that run's id)."""
    demo = (airflow_server.project / "config" / "jobs" / "demo_web_metrics.yaml").read_text()
    manual = demo.replace("name: demo_web_metrics", f"name: {MANUAL_JOB}")
    manual = manual.split("schedules:")[0] + "schedules: {train: null, predict: null, tune: null}\n" + (
        "start_date" + manual.split("start_date", 1)[1]
    )
    (airflow_server.project / "config" / "jobs" / f"{MANUAL_JOB}.yaml").write_text(manual)
    for job in ("demo_web_metrics", MANUAL_JOB):
        airflow_server.pipelines_cli("train", job, "--end", TRAIN_END)
        airflow_server.pipelines_cli("predict", job, "--start", WEEK[0], "--end", WEEK[1])
    dag_id = f"{MANUAL_JOB}__predict"
    airflow_server.unpause(dag_id)
    answer = airflow_server.api(
        "POST", f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": {"start": SPIKE_DAY[0], "end": SPIKE_DAY[1]}}
    )
    assert answer.status_code == 200, answer.text
    run_id = answer.json()["dag_run_id"]
    assert airflow_server.wait_for_run(dag_id, run_id, timeout=600) == "success", airflow_server.log_tail(100)
    return airflow_server, run_id


@pytest.fixture(scope="module")
def browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(scored_server, browser, request: pytest.FixtureRequest) -> Iterator:
    server, _ = scored_server
    context = browser.new_context(viewport={"width": 1500, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(60_000)
    page.goto(f"{server.url}/")
    page.locator("input[name=username]").fill(server.username)
    page.locator("input[name=password]").fill(server.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(lambda url: "/login" not in url)
    try:
        yield page
    finally:
        # What the browser showed last: the evidence when a step above failed.
        _shot(page, f"{request.node.name}-last")
        context.close()


def _shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"dashboard-{name}.png"), full_page=True)


def test_anomalies_in_the_airflow_ui(scored_server, page):
    from playwright.sync_api import expect

    # The navigation entry of the plugin opens the dashboard in the UI's iframe.
    page.locator('a[href$="/plugin/anomalies"]').first.click()
    frame = page.frame_locator('iframe[title="Anomalies"]')
    jobs = frame.locator('[data-testid="jobs"]')
    jobs.wait_for()
    assert frame.locator("a.job-link").filter(has_text="demo_web_metrics").count() == 1
    row = frame.locator('tr[data-job="demo_web_metrics"]')
    assert "not scored yet" not in row.inner_text()
    _shot(page, "1-jobs")

    frame.locator("a.job-link").filter(has_text="demo_web_metrics").click()
    cards = frame.locator(".chart-card")
    cards.first.wait_for()
    ready = frame.locator('.chart-card[data-state="ready"]')
    ready.nth(cards.count() - 1).wait_for()
    assert cards.count() == 3  # the three regions, most anomalous first
    # Each card draws a uPlot canvas per feature, and marks the anomalies it was sent.
    assert frame.locator(".chart-card canvas").count() >= 6
    markers = {card.get_attribute("data-series"): int(card.get_attribute("data-anomaly-count")) for card in cards.all()}
    assert markers["region=eu"] >= 3  # the eu traffic spike of the demo data
    for series, count in markers.items():
        # A marker per anomalous feature value; the series table counts anomalous points (times).
        assert count >= int(frame.locator(f'tr.series-row[data-series="{series}"]').get_attribute("data-anomalies"))
    events_before = frame.locator("tr.event").count()
    assert events_before > 0
    _shot(page, "2-job")

    # Filter: one series, strong anomalies only.
    frame.locator('[data-testid="filter-series"]').select_option("region=eu")
    frame.locator('[data-testid="filter-min-score"]').fill("0.9999")
    frame.locator('[data-testid="apply-filters"]').click()
    # The form reloads the page: wait for the filtered one, not the card of the page before.
    expect(frame.locator('option[value="region=eu"][selected]')).to_have_count(1)
    expect(frame.locator(".chart-card")).to_have_count(1)
    frame.locator('.chart-card[data-series="region=eu"][data-state="ready"]').wait_for()
    events = frame.locator("tr.event")
    assert 0 < events.count() < events_before
    assert {events.nth(i).get_attribute("data-series") for i in range(events.count())} == {"region=eu"}
    assert all(float(events.nth(i).get_attribute("data-score")) >= 0.9999 for i in range(events.count()))
    filtered_markers = int(frame.locator('.chart-card[data-series="region=eu"]').get_attribute("data-anomaly-count"))
    assert 0 < filtered_markers <= markers["region=eu"]
    _shot(page, "3-job-filtered")

    # Feedback: the person marks the first listed point a false alarm; the verdict is stored
    # (the CLI reads it back from the project's labels table) and shown after a reload.
    server, _ = scored_server
    first = events.first
    moment = first.get_attribute("data-timestamp")
    first.locator('button[data-mark="false"]').click()
    expect(first).to_have_attribute("data-verdict", "false")
    expect(first.locator(".verdict-text")).to_have_text("marked: false alarm")
    stored = json.loads(server.pipelines_cli("labels", "demo_web_metrics", "--series", "region=eu").stdout)
    assert [(label["start"], label["end"], label["verdict"], label["author"]) for label in stored] == [
        (moment, moment, False, server.username)
    ]
    # A request the API refuses before the labels code (FastAPI's 422, a list of pydantic errors)
    # says why, not a bare "HTTP 422": here a time without offset, as an outdated page could send.
    first.evaluate("row => { row.dataset.timestamp = '2024-03-03T14:00:00'; }")
    first.locator('button[data-mark="true"]').click()
    expect(first.locator(".verdict-text")).to_have_text("not saved: start: Input should have timezone info")
    # The UI's own URL names the dashboard page too: the frame wanted is the iframe's.
    inner = next(f for f in page.frames if f != page.main_frame and "/dashboard/jobs/demo_web_metrics" in f.url)
    inner.goto(inner.url)  # the dashboard page again (the UI's own URL does not follow the iframe)
    inner.locator(f'tr.event[data-timestamp="{moment}"][data-verdict="false"]').wait_for()
    _shot(page, "3b-job-marked")


def test_feature_and_only_anomalies_filters_make_a_shareable_view(scored_server, page):
    """Choose a feature and "only series with anomalies": the table and the charts keep the series
    with an anomaly of that feature, each chart draws that feature only, and the page's URL, opened
    by someone else, shows the same view."""
    from playwright.sync_api import expect

    server, _ = scored_server
    # What the series endpoint counts, per series, for that feature (the browser's session).
    answer = page.request.get(f"{server.url}/anomaly-pipelines/dashboard/data/jobs/demo_web_metrics/series?feature=latency_ms")
    assert answer.ok, answer.text()
    rows = answer.json()["series"]
    anomalous = {row["series"] for row in rows if row["anomalies"]}
    assert 0 < len(anomalous) < len(rows)  # the demo week has a series without latency anomalies

    page.locator('a[href$="/plugin/anomalies"]').first.click()
    frame = page.frame_locator('iframe[title="Anomalies"]')
    frame.locator("a.job-link").filter(has_text="demo_web_metrics").click()
    frame.locator(".chart-card").first.wait_for()
    expect(frame.locator("tr.series-row")).to_have_count(len(rows))
    frame.locator('[data-testid="filter-feature"]').select_option("latency_ms")
    frame.locator('[data-testid="filter-only-anomalies"]').check()
    frame.locator('[data-testid="apply-filters"]').click()

    def shows_the_filtered_view(view) -> None:
        expect(view.locator('[data-testid="filter-only-anomalies"]')).to_be_checked()
        expect(view.locator('[data-testid="filter-feature"] option[value="latency_ms"][selected]')).to_have_count(1)
        expect(view.locator("tr.series-row")).to_have_count(len(anomalous))
        table = view.locator("tr.series-row")
        assert {table.nth(i).get_attribute("data-series") for i in range(table.count())} == anomalous
        assert all(int(table.nth(i).get_attribute("data-anomalies")) > 0 for i in range(table.count()))
        cards = view.locator(".chart-card")
        expect(cards).to_have_count(len(anomalous))
        expect(view.locator('.chart-card[data-state="ready"]')).to_have_count(len(anomalous))
        # One plot per card, of the chosen feature, with its anomaly markers.
        expect(view.locator(".chart-card .plot")).to_have_count(len(anomalous))
        expect(view.locator('.chart-card .plot[data-feature="latency_ms"]')).to_have_count(len(anomalous))
        assert all(int(cards.nth(i).get_attribute("data-anomaly-count")) > 0 for i in range(cards.count()))
        events = view.locator("tr.event")
        assert events.count() > 0
        assert {events.nth(i).get_attribute("data-series") for i in range(events.count())} <= anomalous

    shows_the_filtered_view(frame)
    _shot(page, "6-job-feature-only-anomalies")

    # The filters are in the dashboard page's URL: opened in another tab, it shows the same view.
    inner = next(f for f in page.frames if f != page.main_frame and "/dashboard/jobs/demo_web_metrics" in f.url)
    assert "feature=latency_ms" in inner.url and "only_anomalies=true" in inner.url
    shared = page.context.new_page()
    try:
        shared.goto(inner.url)
        shows_the_filtered_view(shared)
    finally:
        shared.close()


def test_anomalies_tab_of_a_predict_run(scored_server, page):
    from playwright.sync_api import expect

    server, run_id = scored_server
    page.goto(f"{server.url}/dags/{MANUAL_JOB}__predict/runs/{run_id}")
    # The run's tab (not the navigation entry of the same name) links to plugin/<url_route>.
    # The UI mounts the link before it fills in its label (CI once read an empty one):
    # expect retries until the label is there, a bare inner_text() reads it once.
    tab = page.locator('a[href$="/plugin/anomalies-run"]')
    expect(tab.first).to_contain_text("Anomalies", timeout=60_000)
    tab.first.click()
    page.wait_for_url(lambda url: url.endswith("/plugin/anomalies-run"))
    frame = page.frame_locator('iframe[title="Anomalies"]')
    banner = frame.locator('[data-testid="run-banner"]')
    banner.wait_for()
    assert run_id in banner.inner_text()
    assert "2024-03-03 00:00 → 2024-03-04 00:00" in banner.inner_text()
    assert int(frame.locator('[data-testid="run-anomalies"]').inner_text()) >= 3
    card = frame.locator('.chart-card[data-series="region=eu"]')
    card.wait_for()
    frame.locator('.chart-card[data-series="region=eu"][data-state="ready"]').wait_for()
    assert card.get_attribute("data-start") == "2024-03-03T00:00:00+00:00"
    assert int(card.get_attribute("data-points")) == 2 * 24  # two features, one day
    assert int(card.get_attribute("data-anomaly-count")) >= 3
    _shot(page, "4-run-tab")


def test_tune_runs_on_the_models_page(scored_server, page):
    """The CLI tunes demo_web_metrics in the server's project; the Models tab shows each series'
    run: promoted or kept, why, and a badge per held-back stretch."""
    from playwright.sync_api import expect

    server, _ = scored_server
    results = json.loads(server.pipelines_cli("tune", "demo_web_metrics", "--end", TRAIN_END).stdout)
    page.locator('a[href$="/plugin/anomalies"]').first.click()
    frame = page.frame_locator('iframe[title="Anomalies"]')
    frame.locator("a.job-link").filter(has_text="demo_web_metrics").click()
    frame.locator("nav.tabs a").filter(has_text="Models").click()
    runs = frame.locator("table.tuning tr[data-run]")
    expect(runs).to_have_count(3)
    for result in results:
        run = frame.locator(f'section[data-series="{result["series"]}"] table.tuning tr[data-run]')
        expect(run).to_have_attribute("data-promoted", "true" if result["promoted"] else "false")
        expect(run).to_contain_text(result["reason"])
        assert run.locator("[data-stretch]").count() == len(result["stretches"])
        assert run.locator(".badge").filter(has_text="not clearly better").count() == sum(not s["clearly_better"] for s in result["stretches"])
    _shot(page, "5-models-tuning")


@pytest.fixture(scope="module")
def prefixed_api_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``airflow api-server`` alone (no scheduler: the pages need none) with this repo's plugin,
    served below ``/airflow`` ([api] base_url); yields that URL, stopped at the module's end."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import httpx

    from tests.airflow_server import PASSWORD, USERNAME, _free_port, make_project, server_env

    base = tmp_path_factory.mktemp("prefixed-airflow")
    home, project, port = base / "home", make_project(base / "project"), _free_port()
    home.mkdir()
    (home / "passwords.json").write_text(json.dumps({USERNAME: PASSWORD}))
    url = f"http://127.0.0.1:{port}/airflow"
    env = {**server_env(home, project, port), "AIRFLOW__API__BASE_URL": url}
    subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, check=True, capture_output=True, timeout=300)
    with (base / "api-server.log").open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "airflow", "api-server", "--port", str(port)],
            env=env, cwd=project, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None and time.monotonic() < deadline, (base / "api-server.log").read_text()[-3000:]
            try:
                if httpx.get(f"{url}/api/v2/monitor/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


def test_anomalies_below_a_url_prefix(prefixed_api_server, browser):
    """Below [api] base_url http://host:8080/airflow the Anomalies view and its icon were a 404:
    the plugin named them "/anomaly-pipelines/...", outside the UI's path."""
    from tests.airflow_server import PASSWORD, USERNAME

    context = browser.new_context(viewport={"width": 1500, "height": 1100})
    page = context.new_page()
    page.set_default_timeout(60_000)
    try:
        page.goto(f"{prefixed_api_server}/")
        page.locator("input[name=username]").fill(USERNAME)
        page.locator("input[name=password]").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(lambda url: "/login" not in url)
        page.locator('a[href$="/plugin/anomalies"]').first.click()
        frame = page.frame_locator('iframe[title="Anomalies"]')
        frame.locator('[data-testid="jobs"]').wait_for()
        frame.locator("a.job-link").filter(has_text="demo_web_metrics").click()
        # The UI's address follows the iframe's page (/airflow/plugin/anomalies/<the iframe's path>).
        page.wait_for_url(lambda url: url.endswith("/anomaly-pipelines/dashboard/jobs/demo_web_metrics"))
        inner = next(f for f in page.frames if "/dashboard/jobs/demo_web_metrics" in f.url and f != page.main_frame)
        assert inner.url == f"{prefixed_api_server}/anomaly-pipelines/dashboard/jobs/demo_web_metrics"
        icon = page.locator('img[src$="anomalies.svg"]').first
        assert icon.evaluate("img => img.complete && img.naturalWidth > 0"), icon.evaluate("img => img.src")
    finally:
        _shot(page, "prefix-last")
        context.close()


#: One hour of demo_web_metrics scored by a predict run (as each run of its hourly schedule does).
ONE_HOUR = ("2024-03-03T14:00:00+00:00", "2024-03-03T15:00:00+00:00")
ONE_HOUR_RUN = "scheduled__2024-03-03T14:00:00+00:00"
#: A series published with every value missing (a sensor that reported nothing that day), its key
#: 300 characters without a space (as a host name or a URL can be).
VOID = "void" * 74
VOID_DAY = ("2024-03-05T00:00:00+00:00", "2024-03-06T00:00:00+00:00")


@pytest.fixture(scope="module")
def app_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The plugin's app alone (uvicorn in a thread, mounted below ``/anomaly-pipelines`` as Airflow
    mounts it) over a project where demo_web_metrics was trained and one predict run scored one
    hour, plus a day of a series whose values are all missing. For what only a browser shows
    (what the charts draw), in seconds: the user is an admin without a login (the Airflow tests
    above log in for real). Yields the dashboard's URL."""
    import threading
    import time

    import numpy as np
    import pandas as pd
    import uvicorn
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from starlette.applications import Starlette
    from starlette.routing import Mount

    from pipelines.config import get_job, resolve_path
    from pipelines.runner import run_predict, run_train
    from pipelines.sinks import ParquetSink
    from pipelines.web.app import create_app
    from pipelines.web.auth import require_user
    from pipelines.workspace import Window, to_utc, training_window
    from tests.airflow_server import _free_port

    base = tmp_path_factory.mktemp("dashboard-app")
    with using_project(base):
        job = get_job("demo_web_metrics")
        run_train(job, training_window(job, TRAIN_END), run_id="browser-train")
        run_predict(job, Window(to_utc(ONE_HOUR[0]), to_utc(ONE_HOUR[1])), run_id=ONE_HOUR_RUN)
        start, end = pd.Timestamp(VOID_DAY[0]), pd.Timestamp(VOID_DAY[1])
        hours = pd.date_range(start, end, freq="h", inclusive="left")
        void = pd.DataFrame(
            [
                {"job": job.name, "series": f"region={VOID}", "region": VOID, "timestamp": t, "feature": feature,
                 "value": np.nan, "expected": np.nan, "lower": np.nan, "upper": np.nan, "score": np.nan,
                 "feature_score": np.nan, "is_anomaly": False, "model": "seasonal_mad", "model_version": "v",
                 "run_id": "void", "interval_start": start, "interval_end": end, "scored_at": end}
                for t in hours for feature in job.features
            ]
        )  # fmt: skip
        ParquetSink(resolve_path(job.outputs.parquet)).write(void, job=job.name, dimensions=job.dimensions, start=start, end=end)

        app = create_app()
        app.dependency_overrides[require_user] = lambda: SimpleAuthManagerUser(username="admin", role="admin")
        port = _free_port()
        server = uvicorn.Server(uvicorn.Config(Starlette(routes=[Mount("/anomaly-pipelines", app=app)]), port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        try:
            deadline = time.monotonic() + 30
            while not server.started:
                assert thread.is_alive() and time.monotonic() < deadline, "the app did not start"
                time.sleep(0.05)
            yield f"http://127.0.0.1:{port}/anomaly-pipelines/dashboard"
        finally:
            server.should_exit = True
            thread.join(timeout=10)


def test_a_chart_spans_the_range_asked_for_even_around_one_point(app_server, browser):
    """The Anomalies tab of an hourly predict run (one hour: one point per series), or of a daily
    series' run, drew its point against the left edge of a time axis spanning years. And a series
    whose values are all missing drew empty frames under "48 points (48 drawn)", and its long key
    made the page twice as wide as the frame."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))
    try:
        page.goto(f"{app_server}/runs/demo_web_metrics__predict/{ONE_HOUR_RUN}")
        cards = page.locator(".chart-card")
        cards.first.wait_for()
        page.locator('.chart-card[data-state="ready"]').nth(cards.count() - 1).wait_for()
        window = [pd_epoch(moment) for moment in ONE_HOUR]
        plots = page.locator(".chart-card .plot")
        assert plots.count() == 2 * cards.count() > 0
        for i in range(plots.count()):
            assert [float(plots.nth(i).get_attribute(a)) for a in ("data-x-min", "data-x-max")] == window
        _shot(page, "7-one-hour-run")

        width = "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
        page.goto(f"{app_server}/jobs/demo_web_metrics")
        page.locator('.chart-card[data-state="ready"]').first.wait_for()
        assert page.locator(f'tr.series-row[data-series="region={VOID}"]').count() == 1
        # No range asked for and one point (the hourly run's): an hour either side of it, where
        # uPlot's own range around one point ran 1,000 days on.
        plot = page.locator('.chart-card[data-series="region=eu"][data-state="ready"] .plot').first
        plot.wait_for()
        hour = pd_epoch(ONE_HOUR[0])
        assert [float(plot.get_attribute(a)) for a in ("data-x-min", "data-x-max")] == [hour - 3600, hour + 3600]
        scrolled, shown = page.evaluate(width)
        assert scrolled <= shown, "the page is wider than the frame"
        page.goto(f"{app_server}/jobs/demo_web_metrics?series=region%3D{VOID}")
        card = page.locator(f'.chart-card[data-series="region={VOID}"][data-state="ready"]')
        card.wait_for()
        assert card.locator(".chart-status").inner_text() == "48 points, every value missing: nothing to draw"
        scrolled, shown = page.evaluate(width)
        assert scrolled <= shown, "the page is wider than the frame"
        assert problems == []  # nor a missing favicon below the prefix
    finally:
        context.close()


def pd_epoch(moment: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(moment).timestamp()


def test_chart_times_are_24_hour_utc_like_the_tables(app_server, browser):
    """The charts' axes said "2pm" and "2:10pm" under dates like "3/3/24", their legend
    "2024-03-03 2:00pm", while every table says "2024-03-03 14:00"."""
    import re

    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    try:
        for path in (f"runs/demo_web_metrics__predict/{ONE_HOUR_RUN}", "jobs/demo_web_metrics?series=region%3Deu"):
            page.goto(f"{app_server}/{path}")
            plot = page.locator('.chart-card[data-state="ready"] .plot').first
            plot.wait_for()
            ticks = plot.get_attribute("data-x-ticks").split("|")
            assert len(ticks) > 1, ticks
            for tick in ticks:
                assert re.fullmatch(r"\d\d:\d\d(\n2024-03-0\d)?|\d\d-\d\d(\n2024)?", tick), ticks
            assert "\n2024" in ticks[0]  # the first tick says the date (or year)
        page.goto(f"{app_server}/runs/demo_web_metrics__predict/{ONE_HOUR_RUN}")
        plot = page.locator('.chart-card[data-state="ready"] .plot').first
        plot.wait_for()
        plot.locator(".u-over").hover()
        assert plot.locator(".u-legend .u-series").first.locator(".u-value").inner_text() == "2024-03-03 14:00"
        assert "14:00\n2024-03-03" in plot.get_attribute("data-x-ticks").split("|")
    finally:
        context.close()


def test_a_click_on_a_point_holds_over_a_feature_label_that_said_otherwise(app_server, browser):
    """A colleague's label on the point's signal (requests: a true anomaly) outranks a whole-series
    one, which is what "false alarm" posted: the page said "marked: false alarm" at once, and a
    reload showed "true anomaly" again, the click stored but changing nothing."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    labels = app_server.replace("/dashboard", "/api/v1/jobs/demo_web_metrics/labels")
    point = {"series": "region=eu", "start": ONE_HOUR[0], "end": ONE_HOUR[0]}  # the eu spike's first hour
    try:
        view = f"{app_server}/jobs/demo_web_metrics?series=region%3Deu"
        page.goto(view)
        row = page.locator(f'tr.event[data-timestamp="{ONE_HOUR[0]}"]')
        assert "requests" in row.locator(".signals").inner_text()  # its only signal
        answer = context.request.post(labels, data={**point, "verdict": True, "feature": "requests"})
        assert answer.status == 201, answer.text()
        page.goto(view)
        expect(row).to_have_attribute("data-verdict", "true")

        row.locator('button[data-mark="false"]').click()
        expect(row.locator(".verdict-text")).to_have_text("marked: false alarm (also on requests, whose own label said true anomaly)")
        expect(row).to_have_attribute("data-verdict", "false")
        page.goto(view)
        expect(row).to_have_attribute("data-verdict", "false")
        expect(row.locator(".verdict-text")).to_have_text("marked: false alarm")
        _shot(page, "8-click-over-a-feature-label")

        # The feature's label cannot be said again (the database went away between the two
        # writes): the page does not claim the click's verdict, and a reload shows the one that holds.
        assert context.request.post(labels, data={**point, "verdict": True, "feature": "requests"}).status == 201
        page.goto(view)
        expect(row).to_have_attribute("data-verdict", "true")

        def refuse_feature_labels(route) -> None:
            if route.request.method == "POST" and "feature" in route.request.post_data_json:
                route.fulfill(status=503, json={"detail": "the labels database is down"})
            else:
                route.continue_()

        page.route("**/labels", refuse_feature_labels)
        row.locator('button[data-mark="false"]').click()
        expect(row.locator(".verdict-text")).to_have_text(
            "saved for the series, not on requests, whose own label outranks it: the labels database is down; "
            "reload to see the verdict that holds"
        )
        expect(row).to_have_attribute("data-verdict", "")
        page.goto(view)
        expect(row).to_have_attribute("data-verdict", "true")
    finally:
        for feature in (None, "requests"):  # the server is the module's: leave its labels as they were
            context.request.delete(labels, params={**point, **({"feature": feature} if feature else {})})
        context.close()


def test_the_series_selector_finds_a_series_it_does_not_list(app_server, browser, monkeypatch):
    """The selector held an option per series (about 1 MB of page for 10,000 series): it lists the
    most anomalous, and its search box finds the others on the server and applies the one chosen."""
    from playwright.sync_api import expect

    from pipelines.web import dashboard

    monkeypatch.setattr(dashboard, "SELECTOR_SERIES", 1)
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    problems: list[str] = []
    page.on("pageerror", lambda error: problems.append(str(error)))
    try:
        page.goto(f"{app_server}/jobs/demo_web_metrics")
        listed = page.locator('select[name="series"] option')
        expect(listed).to_have_count(1)
        assert listed.first.get_attribute("value") != f"region={VOID}"  # the most anomalous, not the void one
        search = page.get_by_test_id("filter-series-search")
        search.press_sequentially("VOID")  # any case
        found = page.locator("#series-found option")
        expect(found).to_have_count(1)
        assert found.first.get_attribute("value") == f"region={VOID}"
        expect(search).to_have_attribute("data-found", "1")
        search.fill(f"region={VOID}")  # what picking the suggestion does
        page.get_by_test_id("apply-filters").click()
        page.locator(f'.chart-card[data-series="region={VOID}"][data-state="ready"]').wait_for()
        assert f"series=region%3D{VOID}" in page.url
        chosen = page.locator('select[name="series"] option:checked')
        expect(chosen).to_have_count(1)
        assert chosen.first.get_attribute("value") == f"region={VOID}"
        _shot(page, "9-series-search")
        assert problems == []
    finally:
        context.close()


def test_back_and_forward_show_the_filters_each_page_was_made_with(app_server, browser):
    """Back restored the filters form as it was left, edits never applied included: after applying a
    least score and then "only series with anomalies", Back showed the box ticked over a page made
    without it, and Back again a least score of 0.9 over the unfiltered page."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)

    def form() -> tuple[str, bool, list[str]]:
        selected = "options => options.filter(option => option.selected).map(option => option.value)"
        return (
            page.locator("[data-testid=filter-min-score]").input_value(),
            page.locator("[data-testid=filter-only-anomalies]").is_checked(),
            page.eval_on_selector_all("[data-testid=filter-feature] option", selected),
        )

    try:
        page.goto(f"{app_server}/jobs/demo_web_metrics")
        page.locator("[data-testid=filter-min-score]").fill("0.9")
        page.locator("[data-testid=apply-filters]").click()
        page.wait_for_url("**min_score=0.9**")
        page.locator("[data-testid=filter-only-anomalies]").check()
        page.locator("[data-testid=filter-feature]").select_option("requests")
        page.locator("[data-testid=apply-filters]").click()
        page.wait_for_url("**only_anomalies=true**")
        assert form() == ("0.9", True, ["requests"])
        page.go_back()
        page.wait_for_url("**min_score=0.9")
        page.wait_for_load_state("load")
        assert form() == ("0.9", False, [])
        page.go_back()
        page.wait_for_url("**/jobs/demo_web_metrics")
        page.wait_for_load_state("load")
        assert form() == ("", False, [])
        page.go_forward()
        page.go_forward()
        page.wait_for_url("**only_anomalies=true**")
        page.wait_for_load_state("load")
        assert form() == ("0.9", True, ["requests"])
    finally:
        context.close()
