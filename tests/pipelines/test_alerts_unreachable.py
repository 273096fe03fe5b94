"""Alerts (pipelines/alerts.py) when a channel's server never answers: a real listening socket
that never accepts (a blackholed host), beside a real SMTP server (aiosmtpd) and the Slack stand-in."""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from pipelines.alerts import AlertState, process_events
from pipelines.errors import SinkError
from tests.pipelines import test_alerts
from tests.pipelines.test_alerts import Inbox, make_job, window
from tests.pipelines.test_events import output_rows

slack, slack_webhook = test_alerts.slack, test_alerts.slack_webhook  # the Slack stand-in's fixtures

TIMEOUT = 1  # seconds a send waits for the server (30 by default)


@pytest.fixture(name="hole")
def hole_fixture() -> Iterator[socket.socket]:
    """A socket that listens and never accepts nor answers: connections complete in the kernel's
    backlog and then wait, as with a server that hangs or a firewall holding them."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(32)
    try:
        yield sock
    finally:
        sock.close()


class Records(logging.Handler):
    """What ``pipelines.alerts`` logged (Airflow's logging setup, run on its first use, drops pytest's caplog handler)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


@pytest.fixture(name="logged")
def logged_fixture() -> Iterator[Records]:
    handler, logger = Records(), logging.getLogger("pipelines.alerts")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def connections(sock: socket.socket) -> int:
    """How many connections reached ``sock`` (taken off its backlog)."""
    sock.setblocking(False)
    count = 0
    while True:
        try:
            sock.accept()[0].close()
        except BlockingIOError:
            return count
        count += 1


def smtp_connection(port: int) -> str:
    extra = {"disable_ssl": True, "disable_tls": True, "retry_limit": 2, "timeout": TIMEOUT}
    return json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": port, "extra": extra})


def three_events() -> pd.DataFrame:
    return pd.concat(
        [output_rows(f"region={r}", anomalies={hour: {"requests": 150}}, dimensions={"region": r}) for r, hour in
         (("eu", 2), ("us", 5), ("ap", 8))],
        ignore_index=True,
    )


def test_a_blackholed_smtp_host_is_tried_once_per_run_and_the_retry_sends_each_mail_once(
    tmp_path: Path, hole: socket.socket, slack_webhook: list, monkeypatch: pytest.MonkeyPatch, logged: Records
):
    # Each mail waited the timeout, times 1 + the connection's retry_limit (30 s x 6 by default):
    # minutes per run for a host that answers none of them.
    from aiosmtpd.controller import Controller

    port = hole.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", smtp_connection(port))
    job = make_job(tmp_path, slack={"webhook_conn_id": "alerts_webhook"}, digest={"hour": 12})
    frame = three_events()
    with pytest.raises(
        SinkError, match=r"3 deliveries failed(?s:.*)SMTP host 127\.0\.0\.1:\d+ could not be reached \(TimeoutError"
        r"(?s:.*)not tried: SMTP host 127\.0\.0\.1:\d+ could not be reached earlier in this run"
    ):
        process_events(job, frame, window(0, 24))
    # The first mail's three tries (each waiting TIMEOUT), no other mail's: time is not asserted, a
    # loaded machine's first import of Airflow takes longer than the waits.
    assert connections(hole) == 3
    assert f"SMTP host 127.0.0.1:{port} (Airflow connection 'smtp_default', to oncall@example.com, ops@example.com) " \
           "could not be reached" in logged.text
    assert "the run's other messages by email are not tried" in logged.text
    # Slack, reachable, got every alert; no mail is marked sent, and the digest waits for them.
    assert ["region=" + r in payload["text"] for (_, payload), r in zip(slack_webhook, ("eu", "us", "ap"))] == [True] * 3
    assert len(slack_webhook) == 3
    state = AlertState.load(job)
    assert {s: (r[0]["status"], r[0]["channels"]) for s, r in state.events.items()} == {
        s: ("sending", ["slack"]) for s in ("region=eu", "region=us", "region=ap")
    }

    hole.close()  # the host answers again: the task's retry
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        retry = process_events(job, frame, window(0, 24))
        assert (retry.sent, retry.digest["sent"]) == (3, True)
        assert process_events(job, frame, window(0, 24)).sent == 0
    finally:
        controller.stop()
    assert sorted(s.split(":")[0] for s in inbox.subjects) == [
        "[anomaly digest] web", "[anomaly] web region=ap", "[anomaly] web region=eu", "[anomaly] web region=us"
    ]
    assert len(slack_webhook) == 4  # the digest only: no alert twice


def test_a_webhook_that_never_answers_is_tried_once_per_run_and_its_secret_is_not_logged(
    tmp_path: Path, hole: socket.socket, monkeypatch: pytest.MonkeyPatch, logged: Records
):
    from aiosmtpd.controller import Controller

    port = hole.getsockname()[1]
    url = f"http://127.0.0.1:{port}/services/T0/B0/secret-token"
    monkeypatch.setenv("AIRFLOW_CONN_ALERTS_WEBHOOK", json.dumps({"conn_type": "slackwebhook", "password": url, "extra": {"timeout": TIMEOUT}}))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        smtp_port = probe.getsockname()[1]
    monkeypatch.setenv("AIRFLOW_CONN_SMTP_DEFAULT", smtp_connection(smtp_port))
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=smtp_port)
    controller.start()
    try:
        job = make_job(tmp_path, slack={"webhook_conn_id": "alerts_webhook"})
        with pytest.raises(SinkError, match=r"Slack host 127\.0\.0\.1:\d+ could not be reached \(TimeoutError") as failure:
            process_events(job, three_events(), window(0, 24))
    finally:
        controller.stop()
    assert connections(hole) == 1
    assert f"Slack host 127.0.0.1:{port} (Airflow connection 'alerts_webhook') could not be reached" in logged.text
    assert "secret-token" not in logged.text + str(failure.value)
    assert len(inbox.mails) == 3  # e-mail, reachable, sent every alert
    assert {r[0]["channels"][0] for r in AlertState.load(job).events.values()} == {"email"}


def test_a_message_refused_does_not_give_up_its_channel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    # Only an unreachable server stops a channel for the run: a refusal is about one message.
    job = make_job(tmp_path)
    tried: list[str] = []

    def send(channel: str, message, context) -> None:
        tried.append(message.subject)
        if "region=eu" in message.subject:
            import smtplib

            raise smtplib.SMTPDataError(554, b"rejected by the content filter")

    with pytest.raises(SinkError, match="rejected by the content filter"):
        process_events(job, three_events(), window(0, 24), send=send)
    assert len(tried) == 3


def test_alerts_summarized_after_a_channel_was_down_are_not_told_again_where_they_arrived(tmp_path: Path):
    # Slack down until a window's retries ran out, e-mail fine: the next run sends the alerts to
    # Slack up to the cap and the rest in one summary message, which e-mail, that had every alert
    # already, got too ("4 more event(s)" it had been paged about one by one).
    from tests.pipelines.test_alerts import _outage, rows_in

    sent: list[tuple[str, str]] = []
    down = {"slack"}

    def send(channel: str, message, context) -> None:
        if channel in down:
            raise RuntimeError("Slack answered HTTP 503")
        sent.append((channel, message.subject))

    job = make_job(tmp_path, slack={"webhook_conn_id": "alerts_webhook"})
    frame = _outage(6)
    with pytest.raises(SinkError, match="6 deliveries failed"):
        process_events(job, rows_in(frame, 0, 8), window(0, 8), send=send)
    assert [c for c, _ in sent] == ["email"] * 6
    down.clear()
    job = job.model_copy(update={"alerts": job.alerts.model_copy(update={"max_per_run": 2})})
    later = process_events(job, rows_in(frame, 8, 16), window(8, 16), send=send)
    assert (later.sent_late, later.summarized) == (2, 4)
    assert [(c, s.split(":")[0]) for c, s in sent[6:]] == [
        ("slack", "[anomaly] web region=r000"), ("slack", "[anomaly] web region=r001"), ("slack", "[anomaly] web")
    ]
    assert "4 more event(s)" in sent[-1][1]
    assert [o["decision"] for o in later.overflow] == ["sent"]
    assert AlertState.load(job).overflow == {} and AlertState.load(job).pending() == []
    process_events(job, rows_in(frame, 16, 24), window(16, 24), send=send)
    assert len(sent) == 9
