"""Alerts (pipelines/alerts.py) delivered for real: e-mail through the SMTP provider's notifier to
a local SMTP server (aiosmtpd), Slack through the Slack provider's notifiers to a local HTTP
server standing in for Slack's incoming-webhook endpoint and Web API."""

from __future__ import annotations

import email
import json
import socket
import threading
from collections.abc import Iterable, Iterator
from email.message import Message as EmailMessage
from email.policy import default as default_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pandas as pd
import pytest

from pipelines.alerts import AlertState, alert_window, process_events, state_url
from pipelines.config import JobConfig, parse_job
from pipelines.errors import ConfigError, SinkError
from pipelines.sinks import ParquetSink
from pipelines.workspace import Window
from tests.pipelines.test_events import START, output_rows

H = pd.Timedelta(hours=1)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Inbox:
    """What the local SMTP server received: (envelope recipients, parsed message) per mail."""

    def __init__(self) -> None:
        self.mails: list[tuple[list[str], EmailMessage]] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        self.mails.append((list(envelope.rcpt_tos), email.message_from_bytes(envelope.content, policy=default_policy)))
        return "250 Message accepted for delivery"

    @property
    def subjects(self) -> list[str]:
        return [str(message["Subject"]) for _, message in self.mails]


def body(message: EmailMessage) -> tuple[str, str]:
    """(HTML body, text attachment) of a received alert."""
    html = text = ""
    for part in message.walk():
        if part.get_content_type() == "text/html":
            html = part.get_content()
        elif part.get_filename() == "anomaly-alert.txt":
            text = part.get_payload(decode=True).decode()
    return html, text


def smtp_connection(port: int) -> str:
    return json.dumps(
        {
            "conn_type": "smtp",
            "host": "127.0.0.1",
            "port": port,
            "extra": {"disable_ssl": True, "disable_tls": True, "retry_limit": 0, "timeout": 5},
        }
    )


@pytest.fixture(name="smtp_port")
def smtp_port_fixture(monkeypatch: pytest.MonkeyPatch) -> int:
    """A free port, and Airflow's smtp_default connection pointing at it (plain SMTP, no TLS)."""
    port = _free_port()
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", smtp_connection(port))
    return port


@pytest.fixture(name="inbox")
def inbox_fixture(smtp_port: int) -> Iterator[Inbox]:
    """A real SMTP server (aiosmtpd) on loopback, receiving what the alerts send."""
    from aiosmtpd.controller import Controller

    handler = Inbox()
    controller = Controller(handler, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    try:
        yield handler
    finally:
        controller.stop()


def make_job(tmp_path: Path, **alerts: Any) -> JobConfig:
    settings: dict[str, Any] = {"email": {"to": ["oncall@example.com", "ops@example.com"], "from_email": "anomalies@example.com"}}
    settings.update(alerts)
    return parse_job(
        {
            "name": "web",
            "source": {"kind": "file", "path": str(tmp_path / "in.csv")},
            "timestamp": "timestamp",
            "frequency": "1h",
            "dimensions": ["region"],
            "features": ["requests", "latency_ms"],
            "model": {"kind": "seasonal_mad"},
            "outputs": {"parquet": str(tmp_path / "outputs")},
            "registry": str(tmp_path / "models"),
            "labels": {"connection": {"url": f"sqlite:///{tmp_path / 'labels.db'}"}},
            "alerts": {"dashboard_url": "https://airflow.example.com", **settings},
        }
    )


def window(first_hour: int, last_hour: int) -> Window:
    return Window((START + first_hour * H).to_pydatetime(), (START + last_hour * H).to_pydatetime())


def rows_in(frame: pd.DataFrame, first_hour: int, last_hour: int) -> pd.DataFrame:
    w = window(first_hour, last_hour)
    return frame[(frame["timestamp"] >= w.start) & (frame["timestamp"] < w.end)]


def published(frame: pd.DataFrame, last_hour: int):
    """A reader of ``frame``'s rows published by the run of a window ending at ``last_hour`` (and before)."""
    upto = rows_in(frame, 0, last_hour)

    def read(low, high) -> pd.DataFrame:
        return upto[((upto["timestamp"] >= low) if low else True) & ((upto["timestamp"] < high) if high else True)]

    return read


def test_an_event_is_mailed_with_everything_a_person_needs(tmp_path: Path, inbox: Inbox):
    job = make_job(tmp_path)
    frame = output_rows(anomalies={5: {"requests": 150}, 6: {"requests": 180, "latency_ms": 120}, 7: {"requests": 140}})
    summary = process_events(job, frame, window(0, 24))
    assert (summary.events, summary.sent) == (1, 1)

    [(recipients, message)] = inbox.mails
    assert recipients == ["oncall@example.com", "ops@example.com"]
    assert message["From"] == "anomalies@example.com"
    assert message["Subject"] == "[anomaly] web region=eu: rise 2024-03-01 05:00 UTC (score 0.980)"
    html, text = body(message)
    for content in (html, text):
        assert "region=eu" in content
        assert "2024-03-01 05:00 UTC to 2024-03-01 08:00 UTC" in content  # end: after the last flagged hour
        assert "0.9800" in content and "2024-03-01 06:00 UTC" in content  # peak score and when
        assert "requests, latency_ms" in content  # top contributing signals, strongest first
        assert "seasonal_mad" in content and "v1" in content
    assert "requests: actual 180 vs expected 100 [90, 110] (anomalous)" in text
    assert "<td>requests</td><td>180</td><td>100</td>" in html
    link = (
        "https://airflow.example.com/anomaly-pipelines/dashboard/jobs/web?series=region%3Deu"
        "&start=2024-02-29T17%3A00%3A00%2B00%3A00&end=2024-03-01T20%3A00%3A00%2B00%3A00"
    )
    assert f"Dashboard: {link}" in text
    assert f'href="{link.replace("&", "&amp;")}"' in html


def test_rerunning_a_window_sends_nothing_new_and_a_continued_event_is_not_sent_again(tmp_path: Path, inbox: Inbox):
    job = make_job(tmp_path)
    frame = output_rows(anomalies={7: {"requests": 150}, 8: {"requests": 170}, 9: {"requests": 160}})
    assert process_events(job, rows_in(frame, 0, 8), window(0, 8)).sent == 1
    again = process_events(job, rows_in(frame, 0, 8), window(0, 8))
    assert (again.events, again.sent, again.already_sent) == (1, 0, 1)
    # The incident goes on into the next window: the same event, not a new alert.
    continued = process_events(job, rows_in(frame, 8, 16), window(8, 16))
    assert (continued.sent, continued.already_sent) == (0, 1)
    assert len(inbox.mails) == 1


def test_snooze_holds_the_series_next_events_and_the_next_alert_lists_them(tmp_path: Path, inbox: Inbox):
    job = make_job(tmp_path, snooze=6)
    frame = pd.concat(
        [
            output_rows("region=eu", anomalies={5: {"requests": 150}, 9: {"requests": 145}, 20: {"requests": 190}}),
            output_rows("region=us", anomalies={9: {"requests": 160}}),
        ],
        ignore_index=True,
    )
    first = process_events(job, rows_in(frame, 0, 8), window(0, 8))
    second = process_events(job, rows_in(frame, 8, 16), window(8, 16))
    third = process_events(job, rows_in(frame, 16, 24), window(16, 24))
    assert (first.sent, second.sent, second.held, third.sent) == (1, 1, 1, 1)
    # eu at 09:00 is within 6 hours of the end of its alerted event (05:00): held; us is another series.
    assert [s.split(": ")[0] for s in inbox.subjects] == ["[anomaly] web region=eu", "[anomaly] web region=us", "[anomaly] web region=eu"]
    _, held_text = body(inbox.mails[2][1])
    assert "1 more event(s) of this series while it was snoozed:" in held_text
    assert "2024-03-01 09:00 UTC to 2024-03-01 10:00 UTC, peak score 0.9450" in held_text
    _, first_text = body(inbox.mails[0][1])
    assert "snoozed" not in first_text
    # Held once, never again on a re-run.
    assert process_events(job, rows_in(frame, 8, 16), window(8, 16)).held == 0
    assert len(inbox.mails) == 3


@pytest.mark.parametrize(("escalate", "sent_hours"), [(True, [5, 9]), (False, [5])])
def test_an_event_peaking_above_the_snoozing_alert_escalates_through_the_snooze(
    tmp_path: Path, inbox: Inbox, escalate: bool, sent_hours: list[int]
):
    job = make_job(tmp_path, snooze=8, escalate=escalate)
    # 09:00 (score 0.97) beats the alert of 05:00 (0.95); 12:00 (0.96) beats 05:00 but not 09:00.
    frame = output_rows("region=eu", anomalies={5: {"requests": 150}, 9: {"requests": 170}, 12: {"requests": 160}})
    summaries = [process_events(job, rows_in(frame, first, first + 4), window(first, first + 4)) for first in (4, 8, 12)]
    assert [s.sent for s in summaries] == [1, 1 if escalate else 0, 0]
    starts = [body(mail)[1].split("Time range: ")[1][:16] for _, mail in inbox.mails]
    assert starts == [f"2024-03-01 {hour:02d}:00" for hour in sent_hours]
    if escalate:
        reason = next(d["reason"] for d in summaries[1].decisions if d["decision"] == "sent")
        assert "peak 0.9700 beat the snoozing alert's, so it escalated through the snooze" in reason
    # 12:00 is held either way: snoozed until 13:00 by 05:00's alert, or until 17:00 by 09:00's,
    # whose peak it does not beat.
    assert summaries[2].held == 1


@pytest.mark.parametrize("windows", [[(4, 8), (8, 16)], [(4, 8), (8, 10), (10, 16)]])
def test_a_held_incident_escalates_when_it_worsens_in_a_later_window(tmp_path: Path, inbox: Inbox, windows: list[tuple[int, int]]):
    job = make_job(tmp_path, snooze=6)
    # 05:00 (0.95) is sent and snoozes eu; the incident from 09:00 starts at 0.945 (held), then peaks
    # at 0.99 at 10:00: escalated whether one window holds all of it or hourly windows split it.
    frame = output_rows("region=eu", anomalies={5: {"requests": 150}, 9: {"requests": 145}, 10: {"requests": 190}})
    summaries = [process_events(job, rows_in(frame, first, last), window(first, last)) for first, last in windows]
    assert sum(s.sent for s in summaries) == 2
    assert "escalated through the snooze" in next(d["reason"] for d in summaries[-1].decisions if d["decision"] == "sent")
    # Re-running any of the windows sends nothing more.
    assert sum(process_events(job, rows_in(frame, first, last), window(first, last)).sent for first, last in windows) == 0
    assert len(inbox.mails) == 2


@pytest.mark.parametrize(
    "windows",
    [
        [(4, 8), (8, 16)],
        # Hourly windows split the incident; re-running one of them counts its part once.
        [(4, 8), (8, 10), (10, 11), (10, 11), (11, 16)],
        # A longer re-run (a backfill over two of them) holds their parts: counted once.
        [(4, 8), (8, 10), (10, 11), (8, 11), (11, 16)],
    ],
    ids=["one-window", "split-and-rerun", "split-and-longer-rerun"],
)
@pytest.mark.parametrize("whole", [False, True], ids=["window-rows", "read-beyond"])
def test_an_escalated_held_incident_is_told_from_its_first_start(
    tmp_path: Path, inbox: Inbox, windows: list[tuple[int, int]], whole: bool
):
    job = make_job(tmp_path, snooze=6)
    # 05:00 (0.95) is sent and snoozes eu; the incident 09:00-11:00 is held at 0.945 and 0.94,
    # then peaks at 0.99 at 11:00: the escalated alert tells the whole incident, from 09:00.
    # read-beyond: as alert_window runs, each window's event read whole from what was published.
    scores = {5: 150, 9: 145, 10: 140, 11: 190}  # requests; scores 0.95, 0.945, 0.94, 0.99
    frame = output_rows("region=eu", anomalies={hour: {"requests": value} for hour, value in scores.items()})
    summaries = [
        process_events(job, rows_in(frame, first, last), window(first, last), read=published(frame, last) if whole else None)
        for first, last in windows
    ]
    assert sum(s.sent for s in summaries) == 2
    _, escalated = inbox.mails[-1]
    assert escalated["Subject"] == "[anomaly] web region=eu: rise 2024-03-01 09:00 UTC (score 0.990)"
    html, text = body(escalated)
    for content in (html, text):
        assert "2024-03-01 09:00 UTC to 2024-03-01 12:00 UTC (3 anomalous periods)" in content
        assert "more event(s) of this series while it was snoozed" not in content  # the incident is not listed as another one
    assert "Dashboard: https://airflow.example.com/anomaly-pipelines/dashboard/jobs/web?series=region%3Deu&start=2024-02-29T21" in text
    split = len(windows) > 2
    continues = "Escalated: continues an incident held since 2024-03-01 09:00 UTC while the series was snoozed"
    assert (continues in text) is split and (continues in html) is split
    reason = next(d["reason"] for d in summaries[-1].decisions if d["decision"] == "sent")
    assert ("it continues the incident held since 2024-03-01 09:00 UTC" in reason) is split
    assert "periods" not in AlertState.load(job).events["region=eu"][-1]  # kept only while held


@pytest.mark.parametrize(
    ("alerts", "expected"),
    [
        ({}, ["region=eu", "region=us", "site=berlin"]),
        ({"series": ["region=*"]}, ["region=eu", "region=us"]),
        ({"series": ["*=berlin", "region=us"]}, ["region=us", "site=berlin"]),
        ({"features": ["latency_ms"]}, ["region=us"]),  # eu and berlin were driven by requests
        ({"min_score": 0.96}, ["region=eu"]),
        ({"direction": "fall"}, ["region=us"]),
        ({"direction": "rise"}, ["region=eu", "site=berlin"]),
    ],
)
def test_filters_choose_the_events_sent(tmp_path: Path, inbox: Inbox, alerts: dict, expected: list[str]):
    job = make_job(tmp_path, **alerts)
    frame = pd.concat(
        [
            output_rows("region=eu", anomalies={3: {"requests": 170, "latency_ms": 120}}),  # rise, score 0.97
            output_rows("region=us", anomalies={3: {"latency_ms": 50}}),  # fall, score 0.95
            output_rows("site=berlin", anomalies={3: {"requests": 140}}, dimensions={"region": "berlin"}),  # 0.94
        ],
        ignore_index=True,
    )
    summary = process_events(job, frame, window(0, 24))
    assert sorted(s.split(": ")[0].removeprefix("[anomaly] web ") for s in inbox.subjects) == expected
    assert summary.sent == len(expected)
    assert summary.filtered == (3 - len(expected) if not (alerts.get("series") or alerts.get("features")) else 0)


def test_a_failed_send_fails_clearly_and_the_retry_sends_it(tmp_path: Path, smtp_port: int):
    from aiosmtpd.controller import Controller

    job = make_job(tmp_path)
    frame = output_rows(anomalies={4: {"requests": 160}})
    with pytest.raises(SinkError, match=r"job web: the alert for event web\|region=eu\|2024-03-01T04:00:00\+00:00 "
                       r"could not be sent by email \(Airflow connection 'smtp_default', to oncall@example.com") as failure:
        process_events(job, frame, window(0, 24))
    assert "the task's retry sends it" in str(failure.value)
    remembered = AlertState.load(job).events.get("region=eu", [])
    assert not [r for r in remembered if r["status"] == "sent" or r["channels"]]  # not marked sent

    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    try:
        assert process_events(job, frame, window(0, 24)).sent == 1
        assert process_events(job, frame, window(0, 24)).sent == 0
    finally:
        controller.stop()
    assert len(inbox.mails) == 1 and "region=eu" in str(inbox.mails[0][1]["Subject"])


class SlackStandIn(BaseHTTPRequestHandler):
    """Stands in for Slack's incoming-webhook endpoint and chat.postMessage: records the JSON posted.
    While ``rate_limited`` holds Retry-After values, each request takes one and is answered HTTP 429
    with it, as Slack answers an app posting too fast (and not recorded: Slack drops it)."""

    received: list[tuple[str, dict]] = []
    rate_limited: list[str] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's hook name
        payload = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if type(self).rate_limited:
            self.send_response(429)
            self.send_header("Retry-After", type(self).rate_limited.pop(0))
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        type(self).received.append((self.path, payload))
        answer = b'{"ok": true, "channel": "C1", "ts": "1.0"}' if self.path.startswith("/api/") else b"ok"
        if payload.get("channel") == "#missing":  # as Slack answers for a channel the bot cannot see
            answer = b'{"ok": false, "error": "channel_not_found"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json" if self.path.startswith("/api/") else "text/plain")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def slack() -> Iterator[tuple[int, list]]:
    SlackStandIn.received = []
    SlackStandIn.rate_limited = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlackStandIn)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], SlackStandIn.received
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def slack_webhook(slack: tuple[int, list], monkeypatch: pytest.MonkeyPatch) -> list:
    """The Slack stand-in behind the Airflow connection ``alerts_webhook``; what it received."""
    port, received = slack
    monkeypatch.setenv(
        "AIRFLOW_CONN_ALERTS_WEBHOOK", json.dumps({"conn_type": "slackwebhook", "password": f"http://127.0.0.1:{port}/services/T0/B0/x"})
    )
    return received


def test_slack_webhook_receives_the_event(tmp_path: Path, slack_webhook: list):
    received = slack_webhook
    job = make_job(tmp_path, email=None, slack={"webhook_conn_id": "alerts_webhook"})
    frame = output_rows("region=eu", anomalies={5: {"latency_ms": 30}})
    assert process_events(job, frame, window(0, 24)).sent == 1
    [(path, payload)] = received
    assert path == "/services/T0/B0/x"
    assert "region=eu" in payload["text"] and "latency_ms: actual 30 vs expected 100" in payload["text"]
    assert payload["blocks"][0]["text"]["text"] == "[anomaly] web region=eu: fall 2024-03-01 05:00 UTC (score 0.970)"
    assert "<https://airflow.example.com/anomaly-pipelines/dashboard/jobs/web?series=region%3Deu" in payload["blocks"][2]["text"]["text"]


@pytest.fixture
def slack_bot(slack: tuple[int, list], monkeypatch: pytest.MonkeyPatch) -> list:
    """The Slack stand-in behind the Airflow connection ``alerts_bot`` (Web API, bot token); what it received."""
    port, received = slack
    monkeypatch.setenv(
        "AIRFLOW_CONN_ALERTS_BOT",
        json.dumps({"conn_type": "slack", "password": "xoxb-test", "extra": {"base_url": f"http://127.0.0.1:{port}/api/"}}),
    )
    return received


def test_slack_web_api_posts_to_the_channel(tmp_path: Path, slack_bot: list):
    received = slack_bot
    job = make_job(tmp_path, email=None, slack={"api_conn_id": "alerts_bot", "channel": "#alerts"})
    assert process_events(job, output_rows(anomalies={5: {"requests": 150}}), window(0, 24)).sent == 1
    [(path, payload)] = received
    assert path == "/api/chat.postMessage"
    assert payload["channel"] == "#alerts" and "region=eu" in payload["text"]


def test_a_slack_channel_not_found_names_the_channel(tmp_path: Path, slack_bot: list):
    job = make_job(tmp_path, email=None, slack={"api_conn_id": "alerts_bot", "channel": "#missing"})
    with pytest.raises(SinkError, match=r"by slack \(Airflow connection 'alerts_bot', channel #missing\): (?s:.*)channel_not_found"):
        process_events(job, output_rows(anomalies={5: {"requests": 150}}), window(0, 24))


def test_digest_lists_the_days_events_once(tmp_path: Path, inbox: Inbox):
    job = make_job(tmp_path, immediate=False, digest={"hour": 8})
    frame = pd.concat(
        [output_rows("region=eu", anomalies={2: {"requests": 150}}), output_rows("region=us", anomalies={5: {"requests": 165}})],
        ignore_index=True,
    )
    early = process_events(job, rows_in(frame, 0, 4), window(0, 4))
    assert (early.queued, early.digest) == (1, None) and inbox.mails == []
    summary = process_events(job, rows_in(frame, 4, 8), window(4, 8))
    assert summary.digest == {"cutoff": "2024-03-01T08:00:00+00:00", "events": 2, "sent": True}
    [(_, message)] = inbox.mails
    assert message["Subject"] == "[anomaly digest] web: 2 event(s) in the day to 2024-03-01 08:00 UTC"
    _, text = body(message)
    assert text.index("Series: region=eu") < text.index("Series: region=us")
    assert process_events(job, rows_in(frame, 4, 8), window(4, 8)).digest["sent"] is False
    assert len(inbox.mails) == 1


def test_a_digest_of_a_day_of_thousands_of_events_stays_small_enough_to_mail(tmp_path: Path):
    # 2,000 events made 5 MB of HTML and text (7 MB encoded): over an SMTP server's size limit, the
    # digest failed on every retry and the day's summary never arrived.
    from pipelines.alerts import alertable, render_digest
    from pipelines.events import anomaly_events

    job = make_job(tmp_path, immediate=False, digest={"hour": 8})
    features = ("requests", *(f"signal_{i}" for i in range(9)))
    rows = output_rows("region=r", features=features, hours=8, anomalies={2: {"requests": 150}}, dimensions={"region": "r"})
    [event] = anomaly_events(alertable(job, rows), frequency=job.frequency, max_gap=1)
    events = [{**event.to_dict(), "series": f"region=<r&{i:04d}>", "status": "queued"} for i in range(3000)]
    message = render_digest(job, events, pd.Timestamp("2024-03-01 08:00", tz="UTC").to_pydatetime())
    assert len(message.html) + len(message.text) < 1_000_000
    assert message.subject == "[anomaly digest] web: 3000 event(s) in the day to 2024-03-01 08:00 UTC"
    assert message.text.count("Series: ") == 50  # detailed as an alert, then a line each
    assert "\n  region=<r&0050>: 2024-03-01 02:00 UTC to 2024-03-01 03:00 UTC, peak score " in message.text
    assert "region=&lt;r&amp;0999&gt;: 2024-03-01 02:00 UTC" in message.html and "r&1000" not in message.text
    assert message.text.endswith("… and 2000 more event(s), too many for one message: see the dashboard")
    assert "<r&" not in message.html  # names are escaped in the HTML

@pytest.mark.parametrize(
    "windows",
    [[(4, 8), (8, 16)], [(4, 8), (4, 8), (8, 10), (8, 10), (10, 16)], [(4, 8), (8, 10), (4, 10), (10, 16)]],
    ids=["two-windows", "split-and-rerun", "longer-rerun"],
)
def test_the_digest_counts_every_period_of_an_incident_split_by_the_windows(
    tmp_path: Path, inbox: Inbox, windows: list[tuple[int, int]]
):
    job = make_job(tmp_path, immediate=False, digest={"hour": 12})
    # One incident from 06:00 to 09:00 (4 periods), its peak in the second window.
    frame = output_rows("region=eu", anomalies={6: {"requests": 150}, 7: {"requests": 160}, 8: {"requests": 180}, 9: {"requests": 170}})
    for first, last in windows:
        process_events(job, rows_in(frame, first, last), window(first, last))
    [(_, message)] = inbox.mails
    _, text = body(message)
    assert "Time range: 2024-03-01 06:00 UTC to 2024-03-01 10:00 UTC (4 anomalous periods)" in text
    assert "Peak score: 0.9800 at 2024-03-01 08:00 UTC" in text



def test_a_subject_format_that_does_not_fit_its_field_is_a_config_error_naming_it(tmp_path: Path):
    # Loading the job checks the field names; "{peak_score:d}" (a float) only fails on an event.
    job = make_job(tmp_path, email={"to": ["oncall@example.com"], "subject": "{series}: {peak_score:d}"})
    with pytest.raises(ConfigError, match=r"job web: alerts.email.subject '\{series\}: \{peak_score:d\}' cannot be formatted "
                       r"for event web\|region=eu\|2024-03-01T05:00:00\+00:00: Unknown format code 'd'"):
        process_events(job, output_rows(anomalies={5: {"requests": 150}}), window(0, 24))
    assert not [r for r in AlertState.load(job).events.get("region=eu", []) if r["status"] == "sent"]

def test_alert_window_reads_the_published_rows_and_keeps_state_beside_the_models(tmp_path: Path, inbox: Inbox):
    job = make_job(tmp_path)
    frame = output_rows(anomalies={10: {"requests": 175}})
    w = window(0, 24)
    ParquetSink(job.outputs.parquet).write(frame, job="web", dimensions=["region"], start=w.start, end=w.end)
    summary = alert_window(job, w)
    assert (summary["events"], summary["sent"]) == (1, 1)
    assert summary["decisions"][0]["decision"] == "sent"
    assert state_url(job) == str(tmp_path / "models" / "web" / "_alerts" / "state.json")
    assert json.loads(Path(state_url(job)).read_text())["events"]["region=eu"][0]["status"] == "sent"


@pytest.mark.parametrize(
    ("alerts", "message"),
    [
        ({"email": None}, "configure at least one channel"),
        ({"features": ["cpu"]}, r"alerts.features: 'cpu' is not a feature of job 'web', whose features are requests, latency_ms"),
        ({"email": {"to": ["oncall"]}}, r"not e-mail addresses: \['oncall'\]"),
        ({"email": {"to": ["a@b.c"], "subject": "{job} {severity}"}}, r"unknown fields \['severity'\]"),
        ({"immediate": False}, "immediate: false needs a digest"),
        ({"slack": {"webhook_conn_id": "w", "channel": "#x"}}, "an incoming webhook posts to the channel"),
        ({"direction": "up"}, "direction"),
    ],
)
def test_bad_alert_settings_are_refused_with_the_reason(tmp_path: Path, alerts: dict, message: str):
    with pytest.raises(ConfigError, match=message):
        make_job(tmp_path, **alerts)


def test_an_event_a_person_called_a_false_alarm_is_not_sent_again(tmp_path: Path, inbox: Inbox, caplog: pytest.LogCaptureFixture):
    from pipelines.labels import label_store

    job = make_job(tmp_path)
    label_store(job).add(
        "web", "region=eu", "2024-02-20T03:00Z", "2024-02-20T04:00Z", False,
        feature="requests", value_min=140, value_max=190, author="ana", note="the weekly load test",
    )
    frame = pd.concat(
        [
            output_rows("region=eu", anomalies={3: {"requests": 150}, 4: {"requests": 185}}),  # the same again
            output_rows("region=eu", anomalies={3: {"requests": 250}}, start=START + 24 * H),  # beyond what was labelled
            output_rows("region=us", anomalies={3: {"requests": 150}}),  # another series
        ],
        ignore_index=True,
    )
    with caplog.at_level("INFO", logger="pipelines.alerts"):
        summary = process_events(job, frame, window(0, 48))
    assert (summary.events, summary.suppressed, summary.sent) == (3, 1, 2)
    assert sorted(inbox.subjects) == [
        "[anomaly] web region=eu: rise 2024-03-02 03:00 UTC (score 0.999)",
        "[anomaly] web region=us: rise 2024-03-01 03:00 UTC (score 0.950)",
    ]
    [decision] = [d for d in summary.decisions if d["decision"] == "suppressed"]
    assert decision["key"] == "web|region=eu|2024-03-01T03:00:00+00:00"
    assert "marked a false alarm by ana: the weekly load test" in decision["reason"]
    assert "suppressed" in caplog.text and "marked a false alarm by ana" in caplog.text


def test_a_false_alarm_people_later_confirmed_true_no_longer_silences_its_repeats(tmp_path: Path, inbox: Inbox):
    from pipelines.labels import label_store

    job = make_job(tmp_path)
    store = label_store(job)
    store.add("web", "region=eu", "2024-02-20T03:00Z", "2024-02-20T04:00Z", False, feature="requests",
              value_min=140, value_max=190, author="ana", note="the weekly load test")
    # Re-scored, the incident ran 02:00-04:00, and ben confirmed it: the later word on those values.
    store.add("web", "region=eu", "2024-02-20T02:00Z", "2024-02-20T04:00Z", True, feature="requests",
              value_min=140, value_max=230, author="ben", note="it was the cache")
    frame = output_rows("region=eu", anomalies={3: {"requests": 150}, 4: {"requests": 185}})
    summary = process_events(job, frame, window(0, 24))
    assert (summary.events, summary.suppressed, summary.sent) == (1, 0, 1)
    assert inbox.subjects == ["[anomaly] web region=eu: rise 2024-03-01 03:00 UTC (score 0.985)"]


def test_message_text_reaches_people_verbatim_not_templated(tmp_path: Path, inbox: Inbox):
    # Notifiers render their fields with Jinja; a series key holding template syntax must not be run.
    job = make_job(tmp_path)
    frame = output_rows("region={{ ds }}{% if x %}", anomalies={2: {"requests": 150}}, dimensions={"region": "{{ ds }}{% if x %}"})
    assert process_events(job, frame, window(0, 24)).sent == 1
    [(_, message)] = inbox.mails
    assert "region={{ ds }}{% if x %}" in str(message["Subject"])
    assert "Series: region={{ ds }}{% if x %}" in body(message)[1]


def test_a_retry_sends_only_on_the_channels_that_failed(
    tmp_path: Path, inbox: Inbox, slack: tuple[int, list], monkeypatch: pytest.MonkeyPatch
):
    port, received = slack
    webhook = {"conn_type": "slackwebhook", "password": f"http://127.0.0.1:{_free_port()}/services/T0/B0/x"}  # nobody there
    monkeypatch.setenv("AIRFLOW_CONN_ALERTS_WEBHOOK", json.dumps(webhook))
    job = make_job(tmp_path, slack={"webhook_conn_id": "alerts_webhook"})
    frame = output_rows(anomalies={4: {"requests": 160}})
    with pytest.raises(SinkError, match=r"could not be sent by slack \(Airflow connection 'alerts_webhook'\)"):
        process_events(job, frame, window(0, 24))
    assert len(inbox.mails) == 1  # e-mail went out before Slack failed

    webhook["password"] = f"http://127.0.0.1:{port}/services/T0/B0/x"
    monkeypatch.setenv("AIRFLOW_CONN_ALERTS_WEBHOOK", json.dumps(webhook))
    assert process_events(job, frame, window(0, 24)).sent == 1
    assert len(inbox.mails) == 1 and len(received) == 1
    assert AlertState.load(job).events["region=eu"][0]["channels"] == ["email", "slack"]


def test_slack_messages_escape_series_keys_so_they_cannot_ping_the_channel(tmp_path: Path, slack_webhook: list):
    # '&', '<' and '>' are mrkdwn's control characters: a dimension value "<!channel>" notified everyone.
    received = slack_webhook
    job = make_job(tmp_path, email=None, slack={"webhook_conn_id": "alerts_webhook"})
    value = "<!channel> & <https://evil.example|login>"
    assert process_events(job, output_rows(f"region={value}", anomalies={5: {"requests": 150}}, dimensions={"region": value}),
                          window(0, 24)).sent == 1
    [(_, payload)] = received
    details = payload["blocks"][1]["text"]
    assert details["type"] == "plain_text"  # Slack turns no name in the data into a link or mention
    for text in (payload["text"], details["text"]):
        assert "<!channel>" not in text and "<https://evil" not in text
        assert "Series: region=&lt;!channel&gt; &amp; &lt;https://evil.example|login&gt;" in text


def test_slack_details_too_long_for_a_section_say_how_many_lines_are_left_out(tmp_path: Path, slack_webhook: list):
    # A section holds at most 3,000 characters; the features at the peak of a wide job were cut mid-line.
    received = slack_webhook
    job = make_job(tmp_path, email=None, slack={"webhook_conn_id": "alerts_webhook"})
    features = tuple(f"feature_{i:03d}" for i in range(120))
    assert process_events(job, output_rows(features=features, anomalies={5: {"feature_000": 150}}), window(0, 24)).sent == 1
    [(_, payload)] = received
    details = payload["blocks"][1]["text"]["text"]
    assert len(details) <= 3000
    *shown, note = details.split("\n")
    assert note == f"… {120 + 6 - len(shown)} more line(s), too long for Slack: see the dashboard"  # 6 lines besides features
    assert all(line.endswith(("]", "(anomalous)")) for line in shown if line.startswith("  feature_"))  # whole lines


def test_a_slack_digest_of_more_events_than_blocks_lists_what_fits_and_counts_the_rest(tmp_path: Path, slack_webhook: list):
    received = slack_webhook
    job = make_job(tmp_path, email=None, slack={"webhook_conn_id": "alerts_webhook"}, immediate=False, digest={"hour": 8})
    features = ("requests", *(f"signal_{i}" for i in range(9)))  # about 1,000 characters of text per event
    frame = pd.concat(
        [output_rows(f"region=r{i:02d}", features=features, hours=8, anomalies={2: {"requests": 150}}, dimensions={"region": f"r{i:02d}"})
         for i in range(48)],
        ignore_index=True,
    )
    assert process_events(job, frame, window(0, 8)).digest == {"cutoff": "2024-03-01T08:00:00+00:00", "events": 48, "sent": True}
    [(_, payload)] = received
    # The text (what notifications show), beyond what Slack keeps (40,000 characters), is cut
    # between lines and says so, rather than cut by Slack without a word.
    assert len(payload["text"]) <= 40_000 and "region=r00" in payload["text"]
    assert payload["text"].rsplit("\n", 1)[-1].endswith("more line(s), too long for Slack: see the dashboard")
    blocks = payload["blocks"]
    assert len(blocks) <= 50  # Slack's limit
    # Times as in the e-mail: UTC stated, the end after the last anomalous period (was raw ISO, end = start).
    assert blocks[1]["text"]["text"] == "region=r00: 2024-03-01 02:00 UTC to 2024-03-01 03:00 UTC, peak score 0.9500"
    assert blocks[-1]["text"]["text"].startswith("… and 3 more event(s), too many for one Slack message")


def test_a_line_break_in_a_series_key_does_not_break_the_mail_subject(tmp_path: Path, inbox: Inbox):
    # The subject is one header line; the line break made every send (and retry) fail with
    # "header value appears to contain an embedded header", holding up the job's alerts.
    job = make_job(tmp_path)
    value = "eu\r\nBcc: someone@example.com"
    assert process_events(job, output_rows(f"region={value}", anomalies={5: {"requests": 150}}, dimensions={"region": value}),
                          window(0, 24)).sent == 1
    [(recipients, message)] = inbox.mails
    assert recipients == ["oncall@example.com", "ops@example.com"] and message["Bcc"] is None
    assert message["Subject"] == "[anomaly] web region=eu Bcc: someone@example.com: rise 2024-03-01 05:00 UTC (score 0.950)"


def test_dashboard_links_use_airflows_base_url_from_its_configuration(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # [api] base_url set in airflow.cfg (not in the environment) gave links to http://localhost:8080.
    from airflow.configuration import conf

    monkeypatch.delenv("AIRFLOW__API__BASE_URL", raising=False)
    conf.set("api", "base_url", "https://example.com/airflow/")
    try:
        sent: list = []
        job = make_job(tmp_path, dashboard_url=None)
        frame = output_rows("region=eu west/2", anomalies={5: {"requests": 150}}, dimensions={"region": "eu west/2"})
        process_events(job, frame, window(0, 24), send=lambda channel, message, context: sent.append(message))
    finally:
        conf.remove_option("api", "base_url")
    [message] = sent
    assert "Dashboard: https://example.com/airflow/anomaly-pipelines/dashboard/jobs/web?series=region%3Deu+west%2F2&start=" in message.text


class PickyInbox(Inbox):
    """An SMTP server refusing the mails whose subject holds ``refuse`` (as a content filter would)."""

    def __init__(self, refuse: str | None) -> None:
        super().__init__()
        self.refuse = refuse

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 - aiosmtpd's hook name
        if self.refuse and self.refuse in str(email.message_from_bytes(envelope.content, policy=default_policy)["Subject"]):
            return "554 5.7.1 Message rejected by the content filter"
        return await super().handle_DATA(server, session, envelope)


def test_an_event_that_cannot_be_sent_holds_up_no_other_and_the_retry_sends_only_it(
    tmp_path: Path, smtp_port: int, slack_webhook: list
):
    # One mail refused made the task stop there: the later events of the run were not sent at all,
    # the other channel not tried, until the refused one went through.
    from aiosmtpd.controller import Controller

    received = slack_webhook
    job = make_job(tmp_path, slack={"webhook_conn_id": "alerts_webhook"}, digest={"hour": 12})
    frame = pd.concat(
        [output_rows(f"region={r}", anomalies={hour: {"requests": 150}}, dimensions={"region": r}) for r, hour in
         (("eu", 2), ("us", 5), ("ap", 8))],
        ignore_index=True,
    )
    inbox = PickyInbox(refuse="region=us")
    controller = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    try:
        with pytest.raises(SinkError, match=r"job web: the alert for event web\|region=us\|2024-03-01T05:00:00\+00:00 could not be "
                           r"sent by email \(Airflow connection 'smtp_default', (?s:.*)rejected by the content filter(?s:.*)"
                           r"it stays unsent and the task's retry sends it"):
            process_events(job, frame, window(0, 24))
        # Every event was tried, on every channel; the digest waits for the one missing.
        assert [s.split(":")[0] for s in inbox.subjects] == ["[anomaly] web region=eu", "[anomaly] web region=ap"]
        assert ["region=us" in payload["text"] for _, payload in received] == [False, True, False]
        [us] = AlertState.load(job).events["region=us"]
        assert (us["status"], us["channels"]) == ("sending", ["slack"])

        inbox.refuse = None  # the task's retry: only the refused mail goes, then the digest
        retry = process_events(job, frame, window(0, 24))
        assert (retry.sent, retry.already_sent, retry.digest["events"]) == (1, 2, 3)
        assert process_events(job, frame, window(0, 24)).sent == 0
    finally:
        controller.stop()
    assert [s.split(":")[0] for s in inbox.subjects] == [
        "[anomaly] web region=eu", "[anomaly] web region=ap", "[anomaly] web region=us", "[anomaly digest] web"
    ]
    assert len(received) == 4  # three alerts and the digest, none twice


def test_every_failed_event_is_named_and_none_marked_sent(tmp_path: Path):
    job = make_job(tmp_path)
    frame = pd.concat(
        [output_rows(f"region={r}", anomalies={hour: {"requests": 150}}, dimensions={"region": r}) for r, hour in
         (("eu", 2), ("us", 5), ("ap", 8))],
        ignore_index=True,
    )

    def send(channel: str, message: Any, context: Any) -> None:
        if "region=ap" not in message.subject:
            raise ConnectionError("connection reset")

    with pytest.raises(SinkError, match=r"job web: 2 deliveries failed, the rest went out: the alert for event web\|region=eu\|.*"
                       r"; the alert for event web\|region=us\|.*; they stay unsent and the task's retry sends them"):
        process_events(job, frame, window(0, 24), send=send)
    state = AlertState.load(job)
    assert {series: records[0]["status"] for series, records in state.events.items()} == {
        "region=eu": "sending", "region=us": "sending", "region=ap": "sent"
    }


@pytest.mark.parametrize("via", ["slack_webhook", "slack_bot"])
def test_a_slack_rate_limit_is_waited_out_as_slack_asks(tmp_path: Path, via: str, request: pytest.FixtureRequest,
                                                          monkeypatch: pytest.MonkeyPatch):
    # An HTTP 429 failed the send at once, for the task's retry minutes later, whatever Retry-After said.
    import pipelines.alerts

    received = request.getfixturevalue(via)
    waits: list[float] = []
    monkeypatch.setattr(pipelines.alerts, "_rate_limit_wait", waits.append)
    slack = {"webhook_conn_id": "alerts_webhook"} if via == "slack_webhook" else {"api_conn_id": "alerts_bot", "channel": "#alerts"}
    job = make_job(tmp_path, email=None, slack=slack)
    SlackStandIn.rate_limited = ["1"]
    assert process_events(job, output_rows(anomalies={5: {"requests": 150}}), window(0, 24)).sent == 1
    assert waits == [1.0] and len(received) == 1


@pytest.mark.parametrize(
    ("retry_after", "waited", "why"),
    [
        (["120"], [], r"it asked to wait 120 s, longer than a send waits \(60 s\)"),
        (["1"] * 10, [1.0] * 3, r"still so after 3 wait\(s\) as it asked \(last: 1 s\)"),
    ],
    ids=["beyond-the-cap", "beyond-the-retries"],
)
def test_a_slack_rate_limit_beyond_what_a_send_waits_fails_saying_when_to_retry(
    tmp_path: Path, slack_webhook: list, monkeypatch: pytest.MonkeyPatch, retry_after: list[str], waited: list[float], why: str
):
    import pipelines.alerts

    waits: list[float] = []
    monkeypatch.setattr(pipelines.alerts, "_rate_limit_wait", waits.append)
    job = make_job(tmp_path, email=None, slack={"webhook_conn_id": "alerts_webhook"})
    SlackStandIn.rate_limited = retry_after
    with pytest.raises(SinkError, match=rf"by slack \(Airflow connection 'alerts_webhook'\): rate-limited by Slack \(HTTP 429\): "
                       rf"{why}; retry after \d\d:\d\d:\d\d UTC; it stays unsent"):
        process_events(job, output_rows(anomalies={5: {"requests": 150}}), window(0, 24))
    assert waits == waited and slack_webhook == []


def test_slack_shows_formatting_characters_of_the_data_literally(tmp_path: Path, slack_webhook: list):
    # Sections were mrkdwn (verbatim stops only links and mentions): "*prod_db*" showed as bold "prod_db".
    received = slack_webhook
    job = make_job(tmp_path, email=None, slack={"webhook_conn_id": "alerts_webhook"}, digest={"hour": 8})
    value = "*prod_db* _x_ ~y~ `z` :fire:"
    assert process_events(job, output_rows(f"db={value}", anomalies={5: {"requests": 150}}, dimensions={"db": value}),
                          window(0, 8)).sent == 1
    [(_, alert), (_, digest)] = received
    for block in (alert["blocks"][1], digest["blocks"][1]):
        assert block["text"]["type"] == "plain_text" and block["text"]["emoji"] is False
        assert "db=*prod_db* _x_ ~y~ `z` :fire:" in block["text"]["text"]
    assert alert["blocks"][1]["text"]["text"].startswith("Series: db=*prod_db* _x_ ~y~ `z` :fire:\n")
    assert alert["blocks"][0]["text"]["emoji"] is False and ":fire:" in alert["blocks"][0]["text"]["text"]  # the subject



@pytest.mark.parametrize("via", ["slack_webhook", "slack_bot"])
def test_slack_notification_text_shows_formatting_characters_of_the_data_literally(
    tmp_path: Path, via: str, request: pytest.FixtureRequest
):
    # The top-level text (notifications, screen readers) was mrkdwn: "*prod_db*" showed as bold
    # "prod_db" there, and Slack has no escape for * _ ~; mrkdwn: false takes the text as written.
    received = request.getfixturevalue(via)
    slack = {"webhook_conn_id": "alerts_webhook"} if via == "slack_webhook" else {"api_conn_id": "alerts_bot", "channel": "#alerts"}
    job = make_job(tmp_path, email=None, slack=slack)
    value = "*prod_db* _x_ ~y~ <!here>"
    assert process_events(job, output_rows(f"db={value}", anomalies={5: {"requests": 150}}, dimensions={"db": value}),
                          window(0, 24)).sent == 1
    [(_, payload)] = received
    assert payload["mrkdwn"] is False
    assert "Series: db=*prod_db* _x_ ~y~ &lt;!here&gt;\n" in payload["text"]  # control characters still escaped

class FlakySend:
    """A send failing as a server down does (every message, while ``down``) or as one refusing the
    alerts of some hours of 2024-03-01 (``hours``), keeping the messages that went out."""

    def __init__(self, *, down: bool = False, hours: Iterable[str] = ()) -> None:
        self.down, self.hours, self.sent = down, list(hours), []

    def __call__(self, channel: str, message: Any, context: Any) -> None:
        if self.down or any(f"2024-03-01 {hour} UTC" in message.subject for hour in self.hours):
            raise ConnectionError("connection refused")
        self.sent.append(message)


@pytest.mark.parametrize("sent_by", ["its-windows-retry", "a-later-run"])
def test_a_retried_earlier_event_does_not_shorten_the_snooze_of_a_later_one(tmp_path: Path, sent_by: str):
    # 02:00 fails; the next window's 12:00 (same series) goes out, snoozing it to 19:00; the retry
    # of the first window sending 02:00 set the snooze back to 09:00, so 16:00 paged again. A later
    # run sending 02:00 (the first window's retries ran out) must not shorten it either.
    job = make_job(tmp_path, snooze=6)
    frame = output_rows("region=eu", anomalies={2: {"requests": 150}, 12: {"requests": 150}, 16: {"requests": 150}})
    send = FlakySend(hours=["02:00"])

    def run(first: int, last: int):
        return process_events(job, rows_in(frame, first, last), window(first, last), send=send)

    with pytest.raises(SinkError, match="02:00"):
        run(0, 8)
    with pytest.raises(SinkError, match="02:00"):  # the next run tries 02:00 again; 12:00 still goes out
        run(8, 14)
    assert len(send.sent) == 1
    send.hours.clear()
    if sent_by == "its-windows-retry":
        assert run(0, 8).sent == 1
    later = run(14, 24)
    assert (later.sent, later.held, later.sent_late) == (0, 1, int(sent_by == "a-later-run"))
    assert [m.subject.split("rise ")[1][11:16] for m in send.sent] == ["12:00", "02:00"]


def test_an_alert_whose_retries_ran_out_is_sent_by_the_next_run_only_where_it_was_not(
    tmp_path: Path, smtp_port: int, slack_webhook: list
):
    # The SMTP server was down for the first window's run and its retries: the next window's run,
    # whose rows no longer hold that event, never sent it (nor did any later one).
    from aiosmtpd.controller import Controller

    received = slack_webhook
    job = make_job(tmp_path, slack={"webhook_conn_id": "alerts_webhook"})
    frame = output_rows("region=eu", anomalies={4: {"requests": 160}, 14: {"requests": 170}})
    with pytest.raises(SinkError, match=r"web\|region=eu\|2024-03-01T04:00:00\+00:00 could not be sent by email"):
        process_events(job, rows_in(frame, 0, 8), window(0, 8))  # nobody listens on the SMTP port
    assert len(received) == 1  # Slack had it

    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    try:
        summary = process_events(job, rows_in(frame, 8, 16), window(8, 16))
        assert (summary.events, summary.sent, summary.sent_late) == (1, 1, 1)
        late = next(d for d in summary.decisions if d["decision"] == "sent late")
        assert late["key"] == "web|region=eu|2024-03-01T04:00:00+00:00" and late["reason"].startswith("by email")
        # Re-running either window sends nothing more, on any channel.
        for first, last in ((8, 16), (0, 8), (8, 16)):
            again = process_events(job, rows_in(frame, first, last), window(first, last))
            assert (again.sent, again.sent_late) == (0, 0)
    finally:
        controller.stop()
    # In time order, the late one told in full, as its own run would have told it.
    assert [s.split("rise ")[1][11:16] for s in inbox.subjects] == ["04:00", "14:00"]
    _, text = body(inbox.mails[0][1])
    assert "requests: actual 160 vs expected 100 [90, 110] (anomalous)" in text
    assert "Time range: 2024-03-01 04:00 UTC to 2024-03-01 05:00 UTC (1 anomalous periods)" in text
    assert ["14:00" in payload["text"] for _, payload in received] == [False, True]  # Slack: not twice
    [record] = [r for r in AlertState.load(job).events["region=eu"] if r["key"].endswith("04:00:00+00:00")]
    assert (record["status"], record["channels"], "event" in record) == ("sent", ["slack", "email"], False)


@pytest.mark.parametrize(("days", "decision"), [(6, "sent late"), (8, "given up")])
def test_an_unsent_alert_older_than_the_limit_is_given_up_and_said_so(
    tmp_path: Path, days: int, decision: str, caplog: pytest.LogCaptureFixture
):
    job = make_job(tmp_path, digest={"hour": 7})
    send = FlakySend(down=True)

    with pytest.raises(SinkError):
        process_events(job, output_rows(anomalies={4: {"requests": 160}}, hours=8), window(0, 8), send=send)
    send.down = False
    later = output_rows(start=START + days * 24 * H, hours=8)  # no anomaly; passes the digest's 07:00
    with caplog.at_level("WARNING", logger="pipelines.alerts"):
        summary = process_events(job, later, window(days * 24, days * 24 + 8), send=send)
    [made] = summary.decisions
    assert made["decision"] == decision and made["key"] == "web|region=eu|2024-03-01T04:00:00+00:00"
    assert (summary.sent_late, summary.given_up, summary.digest["events"]) == ((1, 0, 1) if days < 7 else (0, 1, 1))
    if decision == "given up":
        assert "never sent by email: it ended 8 days, 4:00:00 before this window's end, more than 7 days" in made["reason"]
        assert "given up" in caplog.text
        assert AlertState.load(job).events["region=eu"][0]["status"] == "given up"
    # Not paged about after the limit; the digest lists it either way, saying which.
    assert [m.subject.split(":")[0] for m in send.sent] == ["[anomaly] web region=eu"] * (days < 7) + ["[anomaly digest] web"]
    assert f"[{'sent' if days < 7 else 'given up'}]\nSeries: region=eu" in send.sent[-1].text
    # Decided once: later runs neither send it nor report it again.
    again = process_events(job, later, window(days * 24, days * 24 + 8), send=send)
    assert (again.decisions, len(send.sent)) == ([], 1 + (days < 7))


def test_an_unsent_alert_kept_without_its_event_by_an_older_state_is_given_up(tmp_path: Path):
    job = make_job(tmp_path)

    def refuse(channel: str, message: Any, context: Any) -> None:
        raise ConnectionError("connection refused")

    with pytest.raises(SinkError):
        process_events(job, output_rows(anomalies={4: {"requests": 160}}), window(0, 8), send=refuse)
    state = AlertState.load(job)
    del state.events["region=eu"][0]["event"], state.events["region=eu"][0]["continues_held"]  # as fb37c00 wrote it
    state.save(job)
    sent: list[str] = []
    summary = process_events(job, output_rows(anomalies={}), window(8, 16), send=lambda c, m, ctx: sent.append(m.subject))
    assert summary.given_up == 1 and sent == []
    assert "kept no details of it to tell" in summary.decisions[0]["reason"]


def test_an_unsent_alert_is_not_forgotten_among_many_later_events_of_its_series(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # The oldest remembered events of a series are dropped beyond REMEMBERED_PER_SERIES: an unsent one with them.
    import pipelines.alerts

    monkeypatch.setattr(pipelines.alerts, "REMEMBERED_PER_SERIES", 2)
    job = make_job(tmp_path)
    frame = output_rows(anomalies={hour: {"requests": 150} for hour in (2, 10, 14, 18)}, hours=30)
    send = FlakySend(hours=["02:00"])

    for first, last in ((0, 8), (8, 24)):
        with pytest.raises(SinkError, match="02:00"):
            process_events(job, rows_in(frame, first, last), window(first, last), send=send)
    send.hours.clear()
    assert process_events(job, rows_in(frame, 24, 30), window(24, 30), send=send).sent_late == 1
    assert [m.subject.split("rise ")[1][11:16] for m in send.sent] == ["10:00", "14:00", "18:00", "02:00"]


def test_an_unsent_alert_of_an_incident_going_on_is_tried_once_per_run_and_told_whole(tmp_path: Path):
    # The incident (06:00-09:00) goes on into the next window while its alert still cannot be sent:
    # that run tries the alert once (not again as the 08:00 part), and it goes out whole when it can.
    job = make_job(tmp_path)
    frame = output_rows(anomalies={6: {"requests": 150}, 7: {"requests": 160}, 8: {"requests": 190}, 9: {"requests": 170}})
    send = FlakySend(down=True)

    def run(first: int, last: int):
        return process_events(job, rows_in(frame, first, last), window(first, last), send=send)

    with pytest.raises(SinkError):
        run(0, 8)
    with pytest.raises(SinkError, match=r"job web: the alert for event web\|region=eu\|2024-03-01T06:00:00\+00:00 could not be sent"):
        run(8, 16)  # one failure, not two
    send.down = False
    assert run(16, 24).sent_late == 1
    [message] = send.sent
    assert message.subject == "[anomaly] web region=eu: rise 2024-03-01 06:00 UTC (score 0.990)"
    assert "Time range: 2024-03-01 06:00 UTC to 2024-03-01 10:00 UTC (4 anomalous periods)" in message.text
    assert "Peak score: 0.9900 at 2024-03-01 08:00 UTC (rise)" in message.text
    assert (run(8, 16).sent, run(0, 8).sent, len(send.sent)) == (0, 0, 1)


def test_an_unsent_alert_marked_a_false_alarm_meanwhile_is_not_sent_late(tmp_path: Path):
    # Slack had it, e-mail did not; someone on Slack called it a false alarm before the next run.
    from pipelines.labels import label_store

    job = make_job(tmp_path, slack={"webhook_conn_id": "alerts_webhook"})
    sent: list[str] = []
    mail_down = True

    def send(channel: str, message: Any, context: Any) -> None:
        if channel == "email" and mail_down:
            raise ConnectionError("connection refused")
        sent.append(channel)

    with pytest.raises(SinkError):
        process_events(job, output_rows(anomalies={4: {"requests": 160}}), window(0, 8), send=send)
    label_store(job).add("web", "region=eu", "2024-03-01T04:00Z", "2024-03-01T05:00Z", False, feature="requests",
                         value_min=150, value_max=170, author="ana", note="a deploy")
    mail_down = False
    summary = process_events(job, output_rows(anomalies={}), window(8, 16), send=send)
    assert (summary.suppressed, summary.sent_late, sent) == (1, 0, ["slack"])
    assert "marked a false alarm by ana: a deploy" in summary.decisions[0]["reason"]
    assert process_events(job, output_rows(anomalies={}), window(8, 16), send=send).decisions == []


def test_a_digest_that_reached_some_channels_is_finished_on_the_others_and_never_listed_twice(tmp_path: Path):
    # 1 March's digest went out by e-mail; Slack refused it until the retries ran out. E-mail listed
    # 02:00 once more in 2 March's digest, and Slack got 1 March's events only inside 2 March's.
    job = make_job(tmp_path, immediate=False, digest={"hour": 8}, slack={"webhook_conn_id": "alerts_webhook"})
    frame = output_rows(anomalies={2: {"requests": 150}, 26: {"requests": 160}}, hours=48)
    got: dict[str, list[tuple[str, list[str]]]] = {"email": [], "slack": []}
    slack_down = True

    def send(channel: str, message: Any, context: Any) -> None:
        if channel == "slack" and slack_down:
            raise ConnectionError("connection refused")
        starts = [line.split(" to ")[0].removeprefix("Time range: ") for line in message.text.splitlines() if line.startswith("Time range")]
        got[channel].append((message.subject.removeprefix("[anomaly digest] web: "), starts))

    for _ in range(3):  # the run and its retries
        with pytest.raises(SinkError, match="the digest of 2024-03-01 08:00 UTC could not be sent by slack"):
            process_events(job, rows_in(frame, 0, 8), window(0, 8), send=send)
    slack_down = False
    process_events(job, rows_in(frame, 8, 16), window(8, 16), send=send)  # Slack is back: it gets 1 March's
    assert AlertState.load(job).digest_progress == {}
    summary = process_events(job, rows_in(frame, 24, 32), window(24, 32), send=send)
    assert summary.digest == {"cutoff": "2024-03-02T08:00:00+00:00", "events": 1, "sent": True}
    assert got["email"] == [
        ("1 event(s) in the day to 2024-03-01 08:00 UTC", ["2024-03-01 02:00 UTC"]),
        ("1 event(s) in the day to 2024-03-02 08:00 UTC", ["2024-03-02 02:00 UTC"]),
    ]
    assert got["slack"] == got["email"]
    for first, last in ((0, 8), (8, 16), (24, 32)):  # re-runs send nothing, anywhere
        process_events(job, rows_in(frame, first, last), window(first, last), send=send)
    assert len(got["email"]) == len(got["slack"]) == 2


def test_rerunning_the_window_that_sent_the_digest_does_not_list_its_events_in_the_next_one(tmp_path: Path, inbox: Inbox):
    job = make_job(tmp_path, immediate=False, digest={"hour": 8})
    frame = output_rows(anomalies={2: {"requests": 150}, 26: {"requests": 160}}, hours=48)
    for first, last in ((0, 8), (0, 8), (8, 24), (24, 32)):
        process_events(job, rows_in(frame, first, last), window(first, last))
    assert [s[-20:-10] for s in inbox.subjects] == ["2024-03-01", "2024-03-02"]
    assert "1 event(s)" in inbox.subjects[1] and "2024-03-01 02:00" not in body(inbox.mails[1][1])[1]


def test_a_digest_half_sent_by_an_older_state_is_finished_where_it_was_not(tmp_path: Path):
    # State written before digests were kept per cut-off: {"cutoff", "channels"}, its events still queued.
    job = make_job(tmp_path, immediate=False, digest={"hour": 8}, slack={"webhook_conn_id": "alerts_webhook"})
    frame = output_rows(anomalies={2: {"requests": 150}}, hours=24)
    with pytest.raises(SinkError):
        process_events(job, rows_in(frame, 0, 8), window(0, 8), send=FlakySend(down=True))
    state = AlertState.load(job)
    queued = state.digest_progress.pop("2024-03-01T08:00:00+00:00")["events"]
    state.digest, state.digest_progress = queued, {"cutoff": "2024-03-01T08:00:00+00:00", "channels": ["email"]}
    state.save(job)
    sent: list[tuple[str, str]] = []
    process_events(job, rows_in(frame, 8, 16), window(8, 16), send=lambda c, m, ctx: sent.append((c, m.subject)))
    assert sent == [("slack", "[anomaly digest] web: 1 event(s) in the day to 2024-03-01 08:00 UTC")]
    assert (AlertState.load(job).digest, AlertState.load(job).digest_progress) == ({}, {})


@pytest.mark.parametrize("earlier", ["below-min-score", "run-skipped"])
def test_an_incident_begun_in_an_earlier_window_is_alerted_whole_under_the_apis_key(tmp_path: Path, inbox: Inbox, earlier: str):
    # 06:00-09:00, one incident; the 06:00-08:00 window's part alone was no alert (too weak, or that
    # window's alert task never ran). The next window's alert said it began at 08:00 (2 periods),
    # keyed ...T08:00, while the dashboard and the labels API know it from 06:00 (4 periods).
    from pipelines.events import published_events

    job = make_job(tmp_path, min_score=0.95)
    frame = output_rows(anomalies={6: {"requests": 130}, 7: {"requests": 135}, 8: {"requests": 190}, 9: {"requests": 170}})
    sink = ParquetSink(job.outputs.parquet)
    decisions = []
    for first, last in ((0, 8), (8, 16)):
        w = window(first, last)
        sink.write(rows_in(frame, first, last), job="web", dimensions=["region"], start=w.start, end=w.end)
        if earlier == "below-min-score" or first == 8:
            decisions += alert_window(job, w)["decisions"]
    [api_event] = published_events(job)
    assert [(d["key"], d["decision"]) for d in decisions][-1] == (api_event.key, "sent")
    [(_, message)] = inbox.mails
    assert message["Subject"] == "[anomaly] web region=eu: rise 2024-03-01 06:00 UTC (score 0.990)"
    assert "2024-03-01 06:00 UTC to 2024-03-01 10:00 UTC (4 anomalous periods)" in body(message)[1]
    assert alert_window(job, window(8, 16))["sent"] == 0 and alert_window(job, window(0, 8))["sent"] == 0


def test_an_incident_flagged_for_longer_than_a_week_is_read_back_a_week_only(tmp_path: Path):
    # A series flagged for months must not make every run read months of published rows.
    job = make_job(tmp_path)
    days = 12
    frame = output_rows(anomalies={hour: {"requests": 150} for hour in range(days * 24)}, hours=days * 24)
    asked: list[tuple[Any, Any]] = []
    read = published(frame, days * 24)

    def reader(low, high):
        asked.append((low, high))
        return read(low, high)

    last = days * 24
    summary = process_events(job, rows_in(frame, last - 8, last), window(last - 8, last), read=reader, send=lambda *a: None)
    assert min(low for low, _ in asked) == window(last - 8, last).start - pd.Timedelta(days=7)
    assert summary.decisions[0]["key"] == f"web|region=eu|{(START + (last - 8) * H - pd.Timedelta(days=7)).isoformat()}"


@pytest.mark.parametrize(("days", "decision"), [(1, "sent late"), (8, "given up")])
def test_a_digest_of_an_earlier_day_sent_late_or_given_up_is_in_the_runs_summary(tmp_path: Path, days: int, decision: str):
    # Only the log said so: the task's summary (its XCom) showed nothing of an earlier digest.
    job = make_job(tmp_path, immediate=False, digest={"hour": 8}, slack={"webhook_conn_id": "alerts_webhook"})
    slack_down = True

    def send(channel: str, message: Any, context: Any) -> None:
        if channel == "slack" and slack_down:
            raise ConnectionError("connection refused")

    with pytest.raises(SinkError):
        process_events(job, output_rows(anomalies={2: {"requests": 150}}, hours=8), window(0, 8), send=send)
    slack_down = False
    later = window(days * 24 + 8, days * 24 + 16)  # after that day's digest hour: no digest of its own
    summary = process_events(job, output_rows(start=START + (days * 24 + 8) * H, hours=8), later, send=send)
    [outcome] = summary.earlier_digests
    assert outcome["cutoff"] == "2024-03-01T08:00:00+00:00" and (outcome["events"], outcome["decision"]) == (1, decision)
    assert outcome["reason"].startswith("by slack" if days < 7 else "never sent by slack: it is 8 days, 8:00:00 old")
    assert summary.to_dict()["earlier_digests"] == [outcome]
    assert process_events(job, output_rows(start=START + (days * 24 + 8) * H, hours=8), later, send=send).earlier_digests == []


def test_a_state_save_failing_after_a_send_names_what_went_out_and_only_that_is_sent_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # The state is saved after each delivery; one that cannot be (the registry's store refusing the
    # write) failed the task with a bare PermissionError, saying nothing of the alert that went out.
    job = make_job(tmp_path, slack={"webhook_conn_id": "alerts_webhook"})
    frame = pd.concat(
        [output_rows("region=eu", anomalies={2: {"requests": 150}}), output_rows("region=us", anomalies={3: {"requests": 150}})],
        ignore_index=True,
    )
    sent: list[tuple[str, str]] = []
    saves = {"left": 2}  # the run's first save (before sending) and its first delivery are recorded, the second one is not
    _state_writes_fail_after(monkeypatch, saves)
    send = lambda channel, message, context: sent.append((channel, message.subject[14:23]))  # noqa: E731
    with pytest.raises(SinkError, match=r"job web: the alert for event web\|region=eu\|2024-03-01T02:00:00\+00:00 went out by slack, "
                       r"but the alert state .*state.json could not be saved afterwards \(\[Errno 13\] Permission denied.*\); "
                       r"the task's retry sends it by slack once more"):
        process_events(job, frame, window(0, 8), send=send)
    saves["left"] = 1_000
    assert process_events(job, frame, window(0, 8), send=send).sent == 2
    assert sent == [("email", "region=eu"), ("slack", "region=eu"), ("slack", "region=eu"), ("email", "region=us"), ("slack", "region=us")]


def _state_writes_fail_after(monkeypatch: pytest.MonkeyPatch, saves: dict[str, int]) -> None:
    """The alert state's writes succeed ``saves["left"]`` times, then fail as a read-only store
    does (PermissionError); raising ``saves["left"]`` lets later ones through."""
    import pipelines.alerts

    real_write = pipelines.alerts.storage.atomic_write

    def atomic_write(url: str, data: bytes, storage_options: Any = None) -> None:
        if saves["left"] == 0:
            raise PermissionError(13, "Permission denied", url)
        saves["left"] -= 1
        real_write(url, data, storage_options)

    monkeypatch.setattr(pipelines.alerts.storage, "atomic_write", atomic_write)


def test_a_store_refusing_the_state_fails_the_run_before_anything_is_sent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # A registry store that refuses writes (read-only, full): the run and each of its retries sent
    # the alert, then failed to record it, so people got it once per attempt.
    import pipelines.alerts

    job = make_job(tmp_path)
    refusing = True
    real_write = pipelines.alerts.storage.atomic_write

    def atomic_write(url: str, data: bytes, storage_options: Any = None) -> None:
        if refusing:
            raise PermissionError(13, "Permission denied", url)
        real_write(url, data, storage_options)

    monkeypatch.setattr(pipelines.alerts.storage, "atomic_write", atomic_write)
    sent: list[str] = []
    frame = output_rows(anomalies={2: {"requests": 150}})
    for _ in range(3):  # the run and its retries
        with pytest.raises(SinkError, match=r"job web: the alert state .*state.json cannot be saved \(\[Errno 13\] Permission denied"
                           r".*\); nothing was sent: check that the job's registry storage is reachable and writable"):
            process_events(job, frame, window(0, 8), send=lambda channel, message, context: sent.append(channel))
    assert sent == []
    refusing = False
    assert process_events(job, frame, window(0, 8), send=lambda channel, message, context: sent.append(channel)).sent == 1
    assert sent == ["email"]



def test_a_state_save_failing_after_every_delivery_names_the_job_and_the_file_and_the_retry_sends_nothing_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # The save marking an alert sent (after its deliveries were each saved) failed the task with a
    # bare PermissionError, naming neither the job nor the state file.

    job = make_job(tmp_path)
    saves = {"left": 2}  # the run's first save and the one after the e-mail went out; not the one marking it sent
    _state_writes_fail_after(monkeypatch, saves)
    sent: list[str] = []
    frame = output_rows(anomalies={2: {"requests": 150}})
    with pytest.raises(SinkError, match=r"job web: the alert state .*state.json could not be saved \(\[Errno 13\] Permission "
                       r"denied.*\); every delivery so far is recorded, so the task's retry sends nothing twice") as caught:
        process_events(job, frame, window(0, 8), send=lambda channel, message, context: sent.append(channel))
    assert isinstance(caught.value.__cause__, PermissionError)
    saves["left"] = 1_000
    process_events(job, frame, window(0, 8), send=lambda channel, message, context: sent.append(channel))
    assert sent == ["email"]
    assert [r["status"] for r in AlertState.load(job).events["region=eu"]] == ["sent"]


@pytest.mark.parametrize(
    ("content", "said"),
    [("[]", "holds an array, not an object"), ("null", "holds null, not an object"),
     ('{"events": []}', "has 'events' as an array, not an object"), ('{"digests_sent": {}}', "has 'digests_sent' as an object, not an array")],
)
def test_an_alert_state_of_valid_json_but_another_shape_is_refused_naming_the_file(tmp_path: Path, content: str, said: str):
    # Failed as a bare AttributeError ('list' object has no attribute 'get') or TypeError.
    job = make_job(tmp_path)
    path = Path(state_url(job))
    path.parent.mkdir(parents=True)
    path.write_text(content)
    with pytest.raises(ConfigError, match=rf"job web: the alert state {path}.* {said}; restore it from a backup, or delete it"):
        AlertState.load(job)


def test_an_alert_state_that_cannot_be_read_names_the_job_and_the_file(tmp_path: Path):
    # A folder in the state file's place (as a store refusing the read) failed as a bare IsADirectoryError.
    job = make_job(tmp_path)
    Path(state_url(job)).mkdir(parents=True)
    with pytest.raises(SinkError, match=r"job web: the alert state .*state.json could not be read \(\[Errno 21\] Is a directory.*\); "
                       r"nothing was sent: check that the job's registry storage is reachable and readable"):
        process_events(job, output_rows(anomalies={2: {"requests": 150}}), window(0, 8), send=lambda *args: None)


def _outage(series: int, hours: Iterable[int] = (2,)) -> pd.DataFrame:
    """Published rows of ``series`` series all flagged at ``hours``: an outage they share."""
    return pd.concat(
        [output_rows(f"region=r{i:03d}", anomalies={h: {"requests": 150 + i} for h in hours}, dimensions={"region": f"r{i:03d}"})
         for i in range(series)],
        ignore_index=True,
    )


def test_an_outage_flagging_many_series_pages_up_to_the_cap_and_tells_the_rest_in_one_message(
    tmp_path: Path, inbox: Inbox, monkeypatch: pytest.MonkeyPatch
):
    # Every series of a job flagged by one shared outage paged once per series: 30 mails here, thousands for a big job.
    job = make_job(tmp_path, digest={"hour": 8}, max_per_run=5)
    frame = _outage(30, hours=(2, 3))
    summary = process_events(job, rows_in(frame, 0, 3), window(0, 3))
    assert (summary.events, summary.sent, summary.summarized) == (30, 5, 25)
    assert len(inbox.mails) == 6
    subject = inbox.subjects[-1]
    assert subject == ("[anomaly] web: 25 more event(s) in 25 series, 2024-03-01 02:00 UTC to 2024-03-01 03:00 UTC "
                       "(peak score 0.979, region=r029)")
    html, text = body(inbox.mails[-1][1])
    assert "beyond the 5 alerts a run sends one by one (alerts.max_per_run)" in text
    assert text.count("\n  region=r") == 25 and "region=r004:" not in text  # the 5 alerted are not repeated
    assert text.index("region=r029:") < text.index("region=r005:")  # the worst first
    assert "Dashboard: https://airflow.example.com/anomaly-pipelines/dashboard/jobs/web?start=" in text
    assert html.count("jobs/web?series=region%3Dr") == 25  # a link per event
    # The link opens the dashboard on the outage, only the series flagged in it.
    from pipelines.web.dashboard_data import Filters

    query = parse_qs(urlsplit(text.rsplit("Dashboard: ", 1)[1]).query)
    shown = Filters.parse(start=query["start"][0], end=query["end"][0], only_anomalies=query["only_anomalies"][0])
    assert shown.start < START + 2 * H and shown.end > START + 3 * H and shown.only_anomalies
    assert {d["decision"] for d in summary.decisions} == {"sent", "summarized"}
    assert summary.overflow == [{"window": "2024-03-01T00:00:00+00:00/2024-03-01T03:00:00+00:00", "events": 25,
                                 "decision": "sent", "reason": "by email"}]
    # Nothing lost and nothing twice: a re-run sends nothing, the incidents going on page no one,
    # and the digest lists all 30.
    assert process_events(job, rows_in(frame, 0, 3), window(0, 3)).summarized == 0
    later = process_events(job, rows_in(frame, 3, 8), window(3, 8))
    assert (later.sent, later.summarized, later.already_sent) == (0, 0, 30)
    assert later.digest == {"cutoff": "2024-03-01T08:00:00+00:00", "events": 30, "sent": True}
    assert len(inbox.mails) == 7
    _, digest = body(inbox.mails[-1][1])
    assert digest.count("[summarized]") == 25 and digest.count("[sent]") == 5


def test_a_summary_message_that_fails_is_retried_alone_and_finished_by_a_later_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    job = make_job(tmp_path, max_per_run=3)
    frame = _outage(8)

    class Send(FlakySend):
        def __call__(self, channel: str, message: Any, context: Any) -> None:
            if "more event(s)" in message.subject and self.down:
                raise ConnectionError("connection refused")
            self.sent.append(message)

    send = Send(down=True)
    with pytest.raises(SinkError, match=r"job web: the summary message of 5 event\(s\) over the cap, window "
                       r"2024-03-01T00:00:00\+00:00 to 2024-03-01T08:00:00\+00:00 could not be sent by email .*connection refused"):
        process_events(job, rows_in(frame, 0, 8), window(0, 8), send=send)
    assert len(send.sent) == 3
    with pytest.raises(SinkError, match="summary message of 5 event"):  # the retry: still down, nothing sent twice
        process_events(job, rows_in(frame, 0, 8), window(0, 8), send=send)
    assert len(send.sent) == 3
    send.down = False
    later = process_events(job, rows_in(frame, 8, 16), window(8, 16), send=send)  # the retries ran out: the next run
    assert [m.subject.split(" in ")[0] for m in send.sent[3:]] == ["[anomaly] web: 5 more event(s)"]
    assert later.overflow[0]["decision"] == "sent late" and AlertState.load(job).overflow == {}
    process_events(job, rows_in(frame, 0, 8), window(0, 8), send=send)
    assert len(send.sent) == 4


def test_alerts_left_unsent_by_a_channel_down_are_sent_late_up_to_the_cap_and_the_rest_in_one_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # Alerts unsent when a run's retries ran out are sent by the next run: all of them, uncapped,
    # however many windows a channel was down for (or left by a version without the cap).
    job = make_job(tmp_path)
    frame = _outage(10)
    send = FlakySend(down=True)
    with pytest.raises(SinkError, match="10 deliveries failed"):
        process_events(job, rows_in(frame, 0, 8), window(0, 8), send=send)
    job = job.model_copy(update={"alerts": job.alerts.model_copy(update={"max_per_run": 3})})
    send.down = False
    later = process_events(job, rows_in(frame, 8, 16), window(8, 16), send=send)
    assert (later.sent_late, later.summarized) == (3, 7)
    assert [m.subject.split(" in ")[0] for m in send.sent[3:]] == ["[anomaly] web: 7 more event(s)"]
    assert "region=r009: 2024-03-01 02:00 UTC to 2024-03-01 03:00 UTC" in send.sent[-1].text
    assert AlertState.load(job).pending() == []
    process_events(job, rows_in(frame, 16, 24), window(16, 24), send=send)
    assert len(send.sent) == 4


def test_a_run_stopped_while_summarizing_sends_the_summary_message_from_its_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    # The worker killed (a timeout, out of memory) after some events over the cap were marked
    # summarized: they must not end up in no message at all.
    from pipelines import alerts

    job = make_job(tmp_path, max_per_run=2)
    frame = _outage(6)
    matching, calls = alerts._FalseAlarms.matching, []

    def killed_at_the_fifth(self, event):
        calls.append(event.key)
        if len(calls) == 5:
            raise SystemExit("worker killed")
        return matching(self, event)

    monkeypatch.setattr(alerts._FalseAlarms, "matching", killed_at_the_fifth)
    send = FlakySend()
    with pytest.raises(SystemExit):
        process_events(job, frame, window(0, 24), send=send)
    assert len(send.sent) == 2
    retry = process_events(job, frame, window(0, 24), send=send)
    assert (retry.already_sent, retry.summarized) == (4, 2)
    [message] = send.sent[2:]
    assert message.subject.startswith("[anomaly] web: 4 more event(s) in 4 series")


def test_a_slack_digest_links_to_the_dashboard(tmp_path: Path, slack_webhook: list):
    # Slack shows the blocks, not the text: the digest's blocks held no link, so a person had to
    # find the job's dashboard page by hand.
    job = make_job(tmp_path, email=None, slack={"webhook_conn_id": "alerts_webhook"}, immediate=False, digest={"hour": 8})
    frame = pd.concat(
        [output_rows("region=eu", hours=8, anomalies={2: {"requests": 150}}),
         output_rows("region=us", hours=8, anomalies={5: {"requests": 150}}, dimensions={"region": "us"})],
        ignore_index=True,
    )
    assert process_events(job, frame, window(0, 8)).digest["sent"] is True
    [(_, payload)] = slack_webhook
    last = payload["blocks"][-1]["text"]
    assert last["type"] == "mrkdwn" and last["text"].endswith("|Open the day in the dashboard>")
    link = last["text"][1:].split("|")[0]
    assert link.startswith("https://airflow.example.com/anomaly-pipelines/dashboard/jobs/web?start=")
    from pipelines.web.dashboard_data import Filters

    query = parse_qs(urlsplit(link).query)
    shown = Filters.parse(start=query["start"][0], end=query["end"][0], only_anomalies=query["only_anomalies"][0])
    assert shown.start <= START + 2 * H and shown.end >= START + 8 * H and shown.only_anomalies
