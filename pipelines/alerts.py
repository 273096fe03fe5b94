"""Alerts: tell people about anomaly events through Airflow's notifiers (e-mail, Slack).

After ``publish`` the predict DAG's ``alert`` task calls :func:`alert_window`: the window's
published rows are grouped into events (:mod:`pipelines.events`; one overlapping an edge of the
window is read on beyond it, told whole as the API tells it), filtered by the job's
``alerts`` settings, checked against people's "false alarm" verdicts (:mod:`pipelines.labels`),
held while their series is snoozed, and sent through the providers' ``SmtpNotifier`` and
``SlackWebhookNotifier`` / ``SlackNotifier``. A daily digest goes out from the run whose window
passes the configured hour.

What was sent is kept per job in ``<registry>/<job>/_alerts/state.json``, written atomically
after every delivery: re-running an interval never sends an event twice, and a delivery that
fails leaves its event unsent, so the task's retry sends it (or, once the retries ran out, the
job's next runs, for up to ``PENDING_MAX_AGE``), while the run's other events are still sent.
See docs/ALERTS.md.
"""

from __future__ import annotations

import fnmatch
import html
import json
import logging
import math
import os
import re
import smtplib
import socket
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta, timezone
from time import sleep
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import pandas as pd

from pipelines import storage
from pipelines.config import AlertsConfig, JobConfig, resolve_path
from pipelines.errors import ConfigError, MissingDependencyError, PipelineError, SinkError, StorageError
from pipelines.events import MAX_EXTENSION_PERIODS, AnomalyEvent, RowReader, anomaly_events, window_events
from pipelines.web import URL_PREFIX
from pipelines.workspace import Window

log = logging.getLogger(__name__)

STATE_FILE = "state.json"
#: Events of a series remembered for matching continuations and re-runs (oldest dropped first).
REMEMBERED_PER_SERIES = 50
#: An alert that could not be sent everywhere (the task's retries ran out) is sent by later runs
#: of the job, on the channels it did not reach, until it goes through; one whose event ended more
#: than this long (data time) before a run's window ends is given up, with a warning and a decision
#: in that run's summary (and in the next digest, marked "given up"): a week after the fact, an
#: incident has been found and handled otherwise (the dashboard, someone clearing the task), and a
#: page about it is noise, not news. (Clearing the event's own window still sends it: a person asked.)
PENDING_MAX_AGE = timedelta(days=7)
#: Periods shown on each side of an event in the dashboard link.
LINK_PADDING_PERIODS = 12
DEFAULT_AIRFLOW_URL = "http://localhost:8080"
TEXT_ATTACHMENT = "anomaly-alert.txt"
#: Slack's limits: a section's text holds at most 3,000 characters, a message at most 50 blocks,
#: and Slack truncates a message's ``text`` beyond 40,000 characters.
SLACK_SECTION_CHARS = 3000
SLACK_TEXT_CHARS = 40_000
SLACK_DIGEST_EVENTS = 45
#: A digest e-mail details its first events as an alert does, lists the next ones a line each,
#: and counts the rest: a bad day of thousands of events (many series, an upstream outage) made an
#: e-mail of many megabytes, which SMTP servers refuse over their size limit on every retry.
DIGEST_DETAILED_EVENTS = 50
DIGEST_LISTED_EVENTS = 1000
#: Slack answers HTTP 429 with ``Retry-After`` (seconds) when an app posts faster than it allows
#: (about one message a second per channel, more in bursts): a send waits that long and tries
#: again, at most this many times. A wait longer than ``SLACK_RATE_LIMIT_MAX_WAIT`` seconds is left
#: to the task's retry: the task holds a worker slot while it sleeps, and a long wait means a
#: throttled app that a few more tries in a row would not cure.
SLACK_RATE_LIMIT_RETRIES = 3
SLACK_RATE_LIMIT_MAX_WAIT = 60.0

Notify = Callable[[str, "Message", Mapping[str, Any]], None]


# -- state ----------------------------------------------------------------------------------------


def state_url(job: JobConfig) -> str:
    """Where the alert state of ``job`` lives: beside its models, so it moves with the registry."""
    return storage.join(resolve_path(job.registry), job.name, "_alerts", STATE_FILE)


@dataclass
class AlertState:
    """What was sent for a job, which series are snoozed, and what the digest still has to list.

    ``events`` maps a series to the events of it already dealt with (``key``, ``start``, ``end``,
    ``status`` sent/held/queued/sending/given up/suppressed/summarized (told in a run's summary
    message, over ``alerts.max_per_run``), ``channels`` delivered; while held, ``periods``:
    the anomalous periods of each window's part, by the part's start; while its alert is not sent
    everywhere, ``event``: the event told, as :meth:`AnomalyEvent.to_dict`, and ``continues_held``,
    from which a later run re-renders it); ``snoozed_until`` maps a series to the
    last timestamp its snooze covers and ``snooze_peak`` to the peak score of the alert that
    snoozed it (an event beating it escalates through the snooze); ``held`` maps a series to the
    events held while snoozed (listed in its next message); ``digest`` holds the events of the
    digest still to be sent, by key (``parts``: the anomalous periods of each window's part, by
    the part's start); ``digest_progress`` the digests that went out on some channels but not yet
    on all, by cut-off time: ``channels`` reached and ``events``, what the digest lists (taken out
    of ``digest`` when it was first tried, so each channel lists each event once); ``digests_sent``
    the cut-off times of the digests sent on every channel. A record of ``events`` listed by a
    digest keeps ``digested_until``: the end of what the digest listed, which a re-run of its
    window does not queue again.
    """

    events: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    snoozed_until: dict[str, str] = field(default_factory=dict)
    snooze_peak: dict[str, float] = field(default_factory=dict)
    held: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    digest: dict[str, dict[str, Any]] = field(default_factory=dict)
    digest_progress: dict[str, Any] = field(default_factory=dict)
    digests_sent: list[str] = field(default_factory=list)
    #: The summary messages of events over ``alerts.max_per_run`` not yet sent on every channel,
    #: by window: ``start``, ``end``, ``channels`` reached, ``reached`` (channels skipped: they had
    #: its events' alerts already) and ``events`` (by key, as ``to_dict``).
    overflow: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, job: JobConfig) -> AlertState:
        url = state_url(job)
        try:
            document = json.loads(storage.read_bytes(url, job.outputs.storage_options))
        except FileNotFoundError:
            return cls()
        except ValueError as exc:
            raise ConfigError(
                f"job {job.name}: the alert state {url} is not valid JSON ({exc}); "
                "restore it from a backup, or delete it to start afresh (events of the current window would be sent again)"
            ) from exc
        except (OSError, StorageError) as exc:
            # A store refusing the read (access denied, a folder in the file's place) failed as a bare
            # PermissionError or IsADirectoryError naming no job; as a save that fails, it is retried.
            raise SinkError(
                f"job {job.name}: the alert state {url} could not be read ({exc}); nothing was sent: check that the "
                "job's registry storage is reachable and readable, and the task's retry sends the alerts"
            ) from exc
        wrong = cls._misshapen(document)
        if wrong:
            # Valid JSON of another shape (edited by hand, or overwritten by something else) failed
            # later as a bare AttributeError or TypeError, naming neither the job nor the file.
            raise ConfigError(
                f"job {job.name}: the alert state {url} {wrong}; restore it from a backup, or delete it to start "
                "afresh (events of the current window would be sent again)"
            )
        state = cls(**{k: document.get(k, getattr(cls(), k)) for k in cls.__dataclass_fields__})
        if "cutoff" in state.digest_progress:
            # Written before digests were kept per cut-off: one digest, its events still queued.
            old = state.digest_progress
            state.digest_progress = {}
            state.take_digest(old["cutoff"])["channels"] = list(old.get("channels", []))
        return state

    @classmethod
    def _misshapen(cls, document: Any) -> str | None:
        """What is wrong with the shape of a state ``document`` read from JSON, or ``None``."""
        if not isinstance(document, dict):
            return f"holds {_json_kind(document)}, not an object"
        for key, empty in cls().__dict__.items():
            if key in document and not isinstance(document[key], type(empty)):
                return f"has {key!r} as {_json_kind(document[key])}, not {_json_kind(empty)}"
        return None

    def save(self, job: JobConfig) -> None:
        """Write the state; a store that refuses it is a :class:`SinkError` naming the job and the file.

        Saved after each delivery (see :func:`_deliver`), so a save failing elsewhere (marking an
        alert sent, held or given up, taking or finishing a digest) loses no record of what went
        out: the retry sends nothing twice, only records the rest. It failed as a bare
        PermissionError or StorageError, naming neither.
        """
        try:
            self._write(job)
        except Exception as exc:
            raise SinkError(
                f"job {job.name}: the alert state {state_url(job)} could not be saved ({exc}); every delivery so far is "
                "recorded, so the task's retry sends nothing twice and records the rest: check that the job's registry "
                "storage is reachable and writable"
            ) from exc

    def _write(self, job: JobConfig) -> None:
        """:meth:`save` without its error, for callers that say more precisely what a failure means."""
        document = json.dumps(self.__dict__, indent=1, sort_keys=True).encode()
        storage.atomic_write(state_url(job), document, job.outputs.storage_options)

    def match(self, event: AnomalyEvent, limit: timedelta) -> dict[str, Any] | None:
        """The remembered event ``event`` continues or repeats (overlapping, or at most ``limit`` apart)."""
        for record in self.events.get(event.series, []):
            start, end = datetime.fromisoformat(record["start"]), datetime.fromisoformat(record["end"])
            if event.start <= end + limit and event.end >= start - limit:
                return record
        return None

    def remember(self, event: AnomalyEvent, status: str) -> dict[str, Any]:
        record: dict[str, Any] = {
            "key": event.key, "start": event.start.isoformat(), "end": event.end.isoformat(), "status": status, "channels": []
        }
        if status == "held":
            record["periods"] = {event.start.isoformat(): event.rows}
        remembered = self.events.setdefault(event.series, [])
        remembered.append(record)
        while len(remembered) > REMEMBERED_PER_SERIES:
            # The oldest finished record goes first: a pending alert forgotten would never be sent.
            del remembered[next((i for i, r in enumerate(remembered) if not _pending(r)), 0)]
        return record

    def take_digest(self, cutoff: str) -> dict[str, Any]:
        """The digest of ``cutoff``: the queued events that started before it, taken out of the
        queue (events queued later, and later parts of these, go to the next digest) and kept with
        the channels it reached until it reached every one; a re-run of a window does not queue
        again what it lists (``digested_until``)."""
        due = {k: e for k, e in self.digest.items() if datetime.fromisoformat(e["start"]) < datetime.fromisoformat(cutoff)}
        for key, entry in due.items():
            del self.digest[key]
            for record in self.events.get(entry["series"], []):
                if record["key"] == key:
                    record["digested_until"] = max(record.get("digested_until", ""), entry["end"])
        self.digest_progress[cutoff] = {"channels": [], "events": due}
        return self.digest_progress[cutoff]

    def pending(self) -> list[tuple[str, dict[str, Any]]]:
        """(series, record) of the alerts still to be sent on some channel (of any window), oldest first."""
        found = [(series, r) for series, records in self.events.items() for r in records if _pending(r)]
        return sorted(found, key=lambda item: (item[1]["start"], item[0]))


def _json_kind(value: Any) -> str:
    """What ``value`` (parsed from JSON) is, in JSON's words."""
    if value is None:
        return "null"
    for kind, name in ((bool, "a boolean"), (dict, "an object"), (list, "an array"), (str, "a string")):
        if isinstance(value, kind):
            return name
    return "a number"


def _pending(record: dict[str, Any]) -> bool:
    """Whether ``record``'s alert was started and is not sent on every channel: ``sending``, or a
    held incident whose escalated alert failed (it stays ``held`` for its window's retry)."""
    return record["status"] == "sending" or (record["status"] == "held" and "event" in record)


def _with_part(parts: dict[str, int], event: AnomalyEvent) -> dict[str, int]:
    """``parts`` (anomalous periods of an incident's parts, by part start) with ``event``'s part.

    Windows split an incident into parts, one per window. Keyed by its start, a re-run window's
    part replaces itself rather than being counted twice; a longer re-run's part (a backfill over
    several windows) replaces the parts that start inside it, which it holds.
    """
    start, end = event.start.isoformat(), event.end.isoformat()
    return {**{s: n for s, n in parts.items() if not start <= s <= end}, start: event.rows}


def _whole_incident(event: AnomalyEvent, record: dict[str, Any]) -> AnomalyEvent:
    """``event``, the part of a held incident found in a later window, as the whole incident:
    from the incident's first start, counting the periods held in earlier windows."""
    periods = _with_part(record.get("periods", {}), event)
    first = min(event.start, datetime.fromisoformat(record["start"]))
    return replace(event, start=first, rows=sum(periods.values()))


# -- selection ------------------------------------------------------------------------------------


def _series_wanted(alerts: AlertsConfig, series: str) -> bool:
    return not alerts.series or any(fnmatch.fnmatchcase(series, pattern) for pattern in alerts.series)


def alertable(job: JobConfig, frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with ``is_anomaly`` kept only where the job's ``series`` and ``features`` filters allow.

    With ``features``, a timestamp stays anomalous only when a watched feature drove it: the
    watched feature has the largest ``feature_score`` among the anomalous rows of that timestamp.
    (A multivariate model flags every feature of a timestamp; its ``feature_score`` says which.)
    """
    alerts = _alerts(job)
    wanted = [s for s in frame["series"].unique() if _series_wanted(alerts, str(s))]
    keep = frame["series"].isin(wanted) & frame["is_anomaly"].astype(bool)
    if alerts.features:
        flagged = frame[keep]
        leaders = (
            flagged.sort_values(["feature_score", "feature"], ascending=[False, True], kind="stable", na_position="last")
            .drop_duplicates(["series", "timestamp"])
        )
        driven = leaders[leaders["feature"].isin(alerts.features)][["series", "timestamp"]]
        pairs = pd.MultiIndex.from_frame(frame[["series", "timestamp"]])
        keep &= pairs.isin(pd.MultiIndex.from_frame(driven))
    return frame.assign(is_anomaly=keep)


def _filtered_out(alerts: AlertsConfig, event: AnomalyEvent) -> str | None:
    """Why ``event`` is not alerted, or ``None`` when it is."""
    if event.peak_score < alerts.min_score:
        return f"peak score {event.peak_score:.4f} below min_score {alerts.min_score}"
    if alerts.direction != "both" and event.direction != alerts.direction:
        return f"direction {event.direction}, only {alerts.direction} alerted"
    return None


def _false_alarm_reason(label: Any) -> str:
    return (
        f"an identical event ({label.series}, {label.feature or 'any feature'}, values {label.value_min:g}..{label.value_max:g}, "
        f"{label.start.isoformat()}..{label.end.isoformat()}) was marked a false alarm by {label.author or 'someone'}"
        + (f": {label.note}" if label.note else "")
    )


class _FalseAlarms:
    """People's "false alarm" verdicts (:mod:`pipelines.labels`), opened once per run."""

    def __init__(self, job: JobConfig):
        self.job = job
        self._store: Any = None

    def matching(self, event: AnomalyEvent) -> Any | None:
        """The label of a person who called an identical event (same series and top feature,
        values within the labelled range) a false alarm, if there is one and no later or more
        specific label overrules it, nor confirms this event (:meth:`~pipelines.labels.LabelStore.known_false_alarm`)."""
        feature = event.top_feature
        low, high = event.value_ranges.get(feature, (None, None))
        if low is None or high is None:
            return None
        try:
            if self._store is None:
                from pipelines.labels import label_store

                self._store = label_store(self.job)
            return self._store.known_false_alarm(
                self.job.name, event.series, feature, low, high, span=(event.start, event.end), flagged=event.value_ranges
            )
        except PipelineError as exc:
            # An unreachable labels table must not silence alerts: the event is sent, and said why.
            log.warning("job %s: cannot check event %s against false-alarm labels, sending it: %s", self.job.name, event.key, exc)
            return None


# -- messages -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Message:
    """One alert or digest, rendered for every channel."""

    subject: str
    text: str
    html: str
    slack_blocks: list[dict[str, Any]]


def _moment(value: datetime) -> str:
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _airflow_base_url() -> str | None:
    """Airflow's ``[api] base_url``: from airflow.cfg as well as $AIRFLOW__API__BASE_URL, as the
    dashboard's own links take it (reading the variable alone sent links from a deployment
    configured in airflow.cfg to localhost)."""
    try:
        from airflow.configuration import conf
    except ImportError:  # the library without Airflow
        return os.environ.get("AIRFLOW__API__BASE_URL")
    return conf.get("api", "base_url", fallback=None)


def dashboard_link(job: JobConfig, event: AnomalyEvent) -> str:
    """The dashboard page of the event's job and series, around the event."""
    base = _alerts(job).dashboard_url or _airflow_base_url() or DEFAULT_AIRFLOW_URL
    pad = max(job.frequency * LINK_PADDING_PERIODS, event.end - event.start)
    query = urlencode(
        [
            ("series", event.series),
            ("start", (event.start - pad).isoformat()),
            ("end", (event.end + job.frequency + pad).isoformat()),
        ]
    )
    return f"{base.rstrip('/')}{URL_PREFIX}/dashboard/jobs/{quote(job.name)}?{query}"


def _subject_fields(job: JobConfig, event: AnomalyEvent) -> dict[str, Any]:
    return {
        "job": job.name,
        "series": event.series,
        "start": _moment(event.start),
        "end": _moment(event.end + job.frequency),
        "peak_score": event.peak_score,
        "peak_timestamp": _moment(event.peak_timestamp),
        "direction": event.direction,
        "features": ", ".join(event.top_features),
        "rows": event.rows,
    }


def _event_lines(job: JobConfig, event: AnomalyEvent) -> list[str]:
    lines = [
        f"Series: {event.series}",
        f"Time range: {_moment(event.start)} to {_moment(event.end + job.frequency)} ({event.rows} anomalous periods)",
        f"Peak score: {event.peak_score:.4f} at {_moment(event.peak_timestamp)} ({event.direction})",
        f"Top contributing signals: {', '.join(event.top_features) or 'n/a'}",
        "At the peak (actual vs expected [lower, upper]):",
    ]
    lines += [
        f"  {f.feature}: actual {_num(f.actual)} vs expected {_num(f.expected)} [{_num(f.lower)}, {_num(f.upper)}]"
        f"{' (anomalous)' if f.is_anomaly else ''}"
        for f in event.at_peak
    ]
    lines.append(f"Model: {event.model} version {event.model_version}")
    return lines


def _mrkdwn(text: str) -> str:
    """``text`` escaped for Slack's mrkdwn, where ``&``, ``<`` and ``>`` are control characters:
    a series key such as ``region=<!channel>`` would otherwise notify the whole channel."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _slack_data(text: str) -> dict[str, Any]:
    """A Block Kit text object showing ``text`` (escaped by :func:`_mrkdwn`) literally.

    Series keys, feature and model names are data: in a ``mrkdwn`` object, even ``verbatim``
    (which only stops links and mentions), ``*prod_db*`` showed as bold "prod_db", ``_x_`` as
    italics, ``~`` as strikethrough, backticks as code, and Slack documents no escape for those
    characters. ``plain_text`` is what Slack offers for unformatted text; ``&``, ``<`` and ``>``
    stay escaped as Slack asks for every text object, and ``emoji: false`` keeps ``:name:`` as
    written.
    """
    return {"type": "plain_text", "emoji": False, "text": text}


def _slack_fit(lines: list[str], limit: int) -> str:
    """``lines`` (mrkdwn) joined, within ``limit`` characters: whole lines are kept while they fit,
    then one line says how many were left out, rather than Slack cutting the text anywhere."""
    text = "\n".join(lines)
    if len(text) <= limit:
        return text

    def note(left: int) -> str:
        return f"… {left} more line(s), too long for Slack: see the dashboard" if left else ""

    kept: list[str] = []
    size = 0
    for index, line in enumerate(lines):
        left = len(lines) - index
        if size + len(line) + 1 + len(note(left)) > limit:
            if not kept:  # one line longer than the limit (a huge series key): cut it, not inside an entity
                left -= 1
                kept.append(re.sub(r"&[a-z]*$", "", line[: max(0, limit - len(note(left)) - 2)]) + "…")
            return "\n".join(filter(None, [*kept, note(left)]))
        kept.append(line)
        size += len(line) + 1
    return "\n".join(kept)


def _held_lines(held: list[dict[str, Any]]) -> list[str]:
    if not held:
        return []
    return [f"{len(held)} more event(s) of this series while it was snoozed:"] + [
        f"  {h['start']} to {h['end']}, peak score {h['peak_score']:.4f}" for h in held
    ]


def _html_event(job: JobConfig, event: AnomalyEvent, link: str) -> str:
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(f.feature)}</td><td>{esc(_num(f.actual))}</td><td>{esc(_num(f.expected))}</td>"
        f"<td>{esc(_num(f.lower))} – {esc(_num(f.upper))}</td><td>{esc(_num(f.feature_score))}</td>"
        f"<td>{'yes' if f.is_anomaly else ''}</td></tr>"
        for f in event.at_peak
    )
    return (
        f"<h3>{esc(job.name)}: {esc(event.series)}</h3>"
        f"<p><b>Time range:</b> {esc(_moment(event.start))} to {esc(_moment(event.end + job.frequency))} "
        f"({event.rows} anomalous periods)<br>"
        f"<b>Peak score:</b> {event.peak_score:.4f} at {esc(_moment(event.peak_timestamp))} ({esc(event.direction)})<br>"
        f"<b>Top contributing signals:</b> {esc(', '.join(event.top_features) or 'n/a')}<br>"
        f"<b>Model:</b> {esc(event.model)} version {esc(event.model_version)}</p>"
        "<table border=\"1\" cellpadding=\"4\" cellspacing=\"0\"><tr><th>feature</th><th>actual</th><th>expected</th>"
        f"<th>normal range</th><th>contribution</th><th>anomalous</th></tr>{rows}</table>"
        f"<p><a href=\"{esc(link, quote=True)}\">Open in the dashboard</a></p>"
    )


def _escalation_line(event: AnomalyEvent) -> str:
    return (
        f"Escalated: continues an incident held since {_moment(event.start)} while the series was snoozed; "
        "its peak beat the alert that snoozed it"
    )


def render_event(
    job: JobConfig, event: AnomalyEvent, held: list[dict[str, Any]] | None = None, *, continues_held: bool = False
) -> Message:
    """The message of one event: subject, plain text, HTML and Slack blocks.

    ``continues_held``: ``event`` is a held incident escalating in a later window (from its first start).
    """
    held = held or []
    email = _alerts(job).email
    template = email.subject if email else "[anomaly] {job} {series}: {direction} {start} (score {peak_score:.3f})"
    try:
        # A subject is one header line: a line break in a series key (a dimension value) made every
        # send fail ("header value appears to contain an embedded header"), and so every retry.
        subject = " ".join(template.format(**_subject_fields(job, event)).splitlines())
    except (ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
        # Loading the job checks the field names only: a format spec that does not fit the field's
        # value ("{peak_score:d}" on a float, "{start:%Y}" on text) fails here, on the first event.
        raise ConfigError(
            f"job {job.name}: alerts.email.subject {template!r} cannot be formatted for event {event.key}: {exc}; "
            "start, end and peak_timestamp are text, peak_score a number, rows an integer (see docs/ALERTS.md)"
        ) from exc
    link = dashboard_link(job, event)
    escalation = [_escalation_line(event)] if continues_held else []
    lines = [f"Anomaly in job {job.name}", *_event_lines(job, event), *escalation, *_held_lines(held), f"Dashboard: {link}"]
    held_html = "".join(f"<li>{html.escape(line.strip())}</li>" for line in _held_lines(held)[1:])
    body = (
        _html_event(job, event, link)
        + "".join(f"<p><b>{html.escape(line)}</b></p>" for line in escalation)
        + (f"<p>{len(held)} more event(s) of this series while it was snoozed:</p><ul>{held_html}</ul>" if held else "")
    )
    text = "\n".join(lines)
    details = _slack_fit([_mrkdwn(line) for line in lines[1:-1]], SLACK_SECTION_CHARS)
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "emoji": False, "text": subject[:150]}},
        # plain text: no mention, channel name or formatting character in the data is acted on.
        {"type": "section", "text": _slack_data(details)},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"<{link}|Open in the dashboard>"}},
    ]
    return Message(subject=subject, text=text, html=f"<html><body>{body}</body></html>", slack_blocks=blocks)


def range_link(job: JobConfig, start: datetime, end: datetime) -> str:
    """The job's dashboard page, series with anomalies only, from ``start`` to ``end`` (padded)."""
    base = _alerts(job).dashboard_url or _airflow_base_url() or DEFAULT_AIRFLOW_URL
    pad = job.frequency * LINK_PADDING_PERIODS
    query = urlencode([("start", (start - pad).isoformat()), ("end", (end + pad).isoformat()), ("only_anomalies", "true")])
    return f"{base.rstrip('/')}{URL_PREFIX}/dashboard/jobs/{quote(job.name)}?{query}"


def render_digest(job: JobConfig, events: list[dict[str, Any]], cutoff: datetime) -> Message:
    """The daily digest: every queued event of the day before ``cutoff``, in time order."""
    ordered = sorted(events, key=lambda e: (e["start"], e["series"]))
    subject = f"[anomaly digest] {job.name}: {len(ordered)} event(s) in the day to {_moment(cutoff)}"
    lines = [subject]
    parts = []
    for data in ordered[:DIGEST_DETAILED_EVENTS]:
        event = AnomalyEvent.from_dict(data)
        status = data.get("status", "")
        lines += ["", f"[{status}]" if status else "", *_event_lines(job, event), f"Dashboard: {dashboard_link(job, event)}"]
        parts.append(_html_event(job, event, dashboard_link(job, event)))
    brief = ordered[DIGEST_DETAILED_EVENTS:DIGEST_LISTED_EVENTS]
    if brief:
        lines += ["", f"{len(brief)} more event(s), a line each:"]
        rows = []
        for data in brief:
            event = AnomalyEvent.from_dict(data)
            status = f" [{data['status']}]" if data.get("status") else ""
            line = f"{event.series}: {_moment(event.start)} to {_moment(event.end + job.frequency)}, peak score {event.peak_score:.4f}"
            lines.append(f"  {line}{status}")
            rows.append(f"<li><a href=\"{html.escape(dashboard_link(job, event), quote=True)}\">{html.escape(line)}</a>"
                        f"{html.escape(status)}</li>")
        parts.append(f"<h3>{len(brief)} more event(s)</h3><ul>{''.join(rows)}</ul>")
    if len(ordered) > DIGEST_LISTED_EVENTS:
        more = f"… and {len(ordered) - DIGEST_LISTED_EVENTS} more event(s), too many for one message: see the dashboard"
        lines += ["", more]
        parts.append(f"<p>{html.escape(more)}</p>")
    text = "\n".join(line for line in lines if line is not None)
    listed = [AnomalyEvent.from_dict(data) for data in ordered[:SLACK_DIGEST_EVENTS]]  # Slack takes at most 50 blocks
    blocks = [{"type": "header", "text": {"type": "plain_text", "emoji": False, "text": subject[:150]}}] + [
        {
            "type": "section",
            "text": _slack_data(
                _slack_fit(
                    [f"{_mrkdwn(e.series)}: {_moment(e.start)} to {_moment(e.end + job.frequency)}, peak score {e.peak_score:.4f}"],
                    SLACK_SECTION_CHARS,
                )
            ),
        }
        for e in listed
    ]
    # Slack shows the blocks, not the text and its links: without this, its digest linked nowhere.
    link = range_link(job, datetime.fromisoformat(ordered[0]["start"]), cutoff) if ordered else None
    if len(ordered) > len(listed):
        more = f"… and {len(ordered) - len(listed)} more event(s), too many for one Slack message: see the dashboard"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": more + (f" (<{link}|open it>)" if link else "")}})
    elif link:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"<{link}|Open the day in the dashboard>"}})
    return Message(subject=subject, text=text, html=f"<html><body><h2>{html.escape(subject)}</h2>{''.join(parts)}</body></html>", slack_blocks=blocks)


def render_overflow(job: JobConfig, events: list[dict[str, Any]]) -> Message:
    """One message for the events of a run past ``alerts.max_per_run``: how many, where, the
    worst first, a line each (up to :data:`DIGEST_LISTED_EVENTS`) with its own dashboard link."""
    told = sorted((AnomalyEvent.from_dict(data) for data in events), key=lambda e: (-e.peak_score, e.start, e.series))
    first, last = min(e.start for e in told), max(e.end for e in told) + job.frequency
    series = len({e.series for e in told})
    worst = told[0]
    subject = " ".join(
        f"[anomaly] {job.name}: {len(told)} more event(s) in {series} series, {_moment(first)} to {_moment(last)} "
        f"(peak score {worst.peak_score:.3f}, {worst.series})".splitlines()
    )
    link = range_link(job, first, last)
    head = [
        f"Anomalies in job {job.name}: {len(told)} event(s) in {series} series beyond the {_alerts(job).max_per_run} alerts a "
        "run sends one by one (alerts.max_per_run), told together here, the worst first.",
        f"Time range: {_moment(first)} to {_moment(last)}",
        f"Highest peak score: {worst.peak_score:.4f} ({worst.series}, {worst.direction} at {_moment(worst.peak_timestamp)})",
        "Each one is in the dashboard, and in the daily digest if the job has one.",
    ]
    lines: list[str] = []
    items: list[str] = []
    for event in told[:DIGEST_LISTED_EVENTS]:
        line = (f"{event.series}: {_moment(event.start)} to {_moment(event.end + job.frequency)}, peak score "
                f"{event.peak_score:.4f} ({event.direction}; {', '.join(event.top_features) or 'n/a'})")
        lines.append(f"  {line}")
        items.append(f"<li><a href=\"{html.escape(dashboard_link(job, event), quote=True)}\">{html.escape(line)}</a></li>")
    more = len(told) - DIGEST_LISTED_EVENTS
    tail = [f"… and {more} more event(s), too many for one message: see the dashboard"] if more > 0 else []
    text = "\n".join([*head, *lines, *tail, f"Dashboard: {link}"])
    body = (
        f"<h3>{html.escape(subject)}</h3>" + "".join(f"<p>{html.escape(line)}</p>" for line in head)
        + f"<ul>{''.join(items)}</ul>" + "".join(f"<p>{html.escape(line)}</p>" for line in tail)
        + f"<p><a href=\"{html.escape(link, quote=True)}\">Open in the dashboard</a></p>"
    )
    blocks = [
        {"type": "header", "text": {"type": "plain_text", "emoji": False, "text": subject[:150]}},
        {"type": "section", "text": _slack_data(_slack_fit([_mrkdwn(line) for line in [*head, *lines, *tail]], SLACK_SECTION_CHARS))},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"<{link}|Open in the dashboard>"}},
    ]
    return Message(subject=subject, text=text, html=f"<html><body>{body}</body></html>", slack_blocks=blocks)


# -- delivery -------------------------------------------------------------------------------------


def _verbatim(value: Any) -> Any:
    """``value`` protected from the notifier's Jinja rendering of its template fields.

    Notifiers render their fields with the task context before sending; the message is already
    rendered, and a series key or a value holding ``{{`` must reach people as it is.
    """
    if isinstance(value, str):
        return "{% raw %}" + value.replace("{%", "{% endraw %}{{ '{%' }}{% raw %}") + "{% endraw %}"
    if isinstance(value, list):
        return [_verbatim(v) for v in value]
    if isinstance(value, dict):
        return {k: _verbatim(v) for k, v in value.items()}
    return value


def _slack_text(message: Message) -> str:
    """The message's plain text as Slack's ``text`` (what notifications show; sent with ``mrkdwn:
    false``, see :func:`_slack_notifiers`): ``&``, ``<`` and ``>`` escaped, as Slack asks of every
    text, and cut with a count of the lines left out where Slack would truncate it (a digest of many events)."""
    return _slack_fit([_mrkdwn(line) for line in message.text.splitlines()], SLACK_TEXT_CHARS)


class _RateLimited(Exception):
    """Slack still answered HTTP 429 (rate limited) after the waits a send allows."""


def _rate_limit_wait(seconds: float) -> None:
    sleep(seconds)


class _SlackRateLimit:
    """A retry handler of slack_sdk's clients (their ``RetryHandler`` interface) for HTTP 429:
    waits ``Retry-After`` seconds and tries again, at most ``SLACK_RATE_LIMIT_RETRIES`` times and
    never longer than ``SLACK_RATE_LIMIT_MAX_WAIT`` seconds; remembers the last answer's wait, for
    the error when it gives up. (slack_sdk's own ``RateLimitErrorRetryHandler`` sleeps whatever
    Slack asks, with no cap.)"""

    def __init__(self) -> None:
        self.max_retry_count = SLACK_RATE_LIMIT_RETRIES
        self.limited = 0  # 429 answers received
        self.retry_after = 0.0  # what the last one asked
        self.gave_up = False
        self._wait = _rate_limit_wait  # looked up per send: tests replace it rather than sleep

    def can_retry(self, *, state: Any, request: Any, response: Any = None, error: Any = None) -> bool:
        if response is None or response.status_code != 429:
            return False
        self.limited += 1
        headers = {k.lower(): v for k, v in (response.headers or {}).items()}
        value = headers.get("retry-after", ["1"])
        try:  # whole seconds, as Slack sends it; anything else: a second, as slack_sdk assumes
            self.retry_after = max(0.0, float(value[0] if isinstance(value, list) else value))
        except (TypeError, ValueError, IndexError):
            self.retry_after = 1.0
        self.gave_up = state.current_attempt >= self.max_retry_count or self.retry_after > SLACK_RATE_LIMIT_MAX_WAIT
        return not self.gave_up

    def prepare_for_next_attempt(self, *, state: Any, request: Any, response: Any = None, error: Any = None) -> None:
        log.warning("Slack rate-limited the alert (HTTP 429): waiting %g s as it asks, then trying again", self.retry_after)
        state.next_attempt_requested = True
        self._wait(self.retry_after)
        state.increment_current_attempt()

    def error(self) -> _RateLimited:
        when = (datetime.now(timezone.utc) + timedelta(seconds=self.retry_after)).strftime("%H:%M:%S UTC")
        why = (
            f"it asked to wait {self.retry_after:g} s, longer than a send waits ({SLACK_RATE_LIMIT_MAX_WAIT:g} s)"
            if self.retry_after > SLACK_RATE_LIMIT_MAX_WAIT
            else f"still so after {self.limited - 1} wait(s) as it asked (last: {self.retry_after:g} s)"
        )
        return _RateLimited(f"rate-limited by Slack (HTTP 429): {why}; retry after {when}")


def _slack_notifiers() -> tuple[type, type]:
    """The providers' ``SlackNotifier`` and ``SlackWebhookNotifier``, posting ``mrkdwn: false``.

    The message's ``text`` (what notifications and screen readers show) is mrkdwn by default, and
    Slack documents an escape for ``&``, ``<`` and ``>`` only: a series ``db=*prod_db*`` showed as
    bold "prod_db", ``_x_`` in italics, ``~y~`` struck through. ``mrkdwn: false`` (chat.postMessage,
    incoming webhooks) is Slack's way to take the text as written; the notifiers cannot pass it.
    """
    from airflow.providers.slack.notifications.slack import SlackNotifier
    from airflow.providers.slack.notifications.slack_webhook import SlackWebhookNotifier

    class _PlainSlackNotifier(SlackNotifier):
        def notify(self, context: Any) -> None:
            self.hook.call(
                "chat.postMessage",
                json={
                    "channel": self.channel, "username": self.username, "text": self.text, "icon_url": self.icon_url,
                    "attachments": json.dumps(self.attachments), "blocks": json.dumps(self.blocks),
                    "unfurl_links": self.unfurl_links, "unfurl_media": self.unfurl_media, "mrkdwn": False,
                },
            )

    class _PlainSlackWebhookNotifier(SlackWebhookNotifier):
        def notify(self, context: Any) -> None:
            self.hook.send(
                text=self.text, blocks=self.blocks, unfurl_links=self.unfurl_links, unfurl_media=self.unfurl_media,
                attachments=self.attachments, mrkdwn=False,
            )

    return _PlainSlackNotifier, _PlainSlackWebhookNotifier


def notify(job: JobConfig, channel: str, message: Message, context: Mapping[str, Any]) -> None:
    """Send ``message`` through ``channel`` (``email`` or ``slack``) with the providers' notifiers."""
    alerts = _alerts(job)
    if channel == "email" and alerts.email:
        try:
            from airflow.providers.smtp.notifications.smtp import SmtpNotifier
        except ImportError as exc:
            raise MissingDependencyError("apache-airflow-providers-smtp", "alerts", f"Job {job.name}'s e-mail alerts") from exc

        # The provider's hook builds HTML-only bodies (no text/alternative part), so the plain
        # text version travels as an attachment, for readers and filters that skip HTML.
        with tempfile.TemporaryDirectory(prefix="anomaly-alert-") as scratch:
            text_file = os.path.join(scratch, TEXT_ATTACHMENT)
            with open(text_file, "w", encoding="utf-8") as handle:
                handle.write(message.text)
            SmtpNotifier(
                to=alerts.email.to,
                from_email=alerts.email.from_email,
                subject=_verbatim(message.subject),
                html_content=_verbatim(message.html),
                files=[text_file],
                smtp_conn_id=alerts.email.smtp_conn_id,
                custom_headers={"X-Anomaly-Job": job.name},
            )(dict(context))
        return
    notifier: Any
    if channel == "slack" and alerts.slack:
        try:
            from slack_sdk.http_retry import ConnectionErrorRetryHandler

            SlackNotifier, SlackWebhookNotifier = _slack_notifiers()
        except ImportError as exc:
            raise MissingDependencyError("apache-airflow-providers-slack", "alerts", f"Job {job.name}'s Slack alerts") from exc
    # Handlers given replace the clients' defaults: keep their retry of a dropped connection.
    rate_limit = _SlackRateLimit()
    if channel == "slack" and alerts.slack and alerts.slack.webhook_conn_id:
        notifier = SlackWebhookNotifier(
            slack_webhook_conn_id=alerts.slack.webhook_conn_id,
            text=_verbatim(_slack_text(message)),
            blocks=_verbatim(message.slack_blocks),
            retry_handlers=[ConnectionErrorRetryHandler(), rate_limit],
        )
    elif channel == "slack" and alerts.slack:
        notifier = SlackNotifier(
            slack_conn_id=alerts.slack.api_conn_id,
            channel=alerts.slack.channel,
            text=_verbatim(_slack_text(message)),
            blocks=_verbatim(message.slack_blocks),
            retry_handlers=[ConnectionErrorRetryHandler(), rate_limit],
        )
    else:
        raise ConfigError(f"job {job.name}: alert channel {channel!r} is not configured")
    try:
        notifier(dict(context))
    except Exception as exc:
        if rate_limit.gave_up:  # the clients' own error shows only the status, not when to try again
            raise rate_limit.error() from exc
        raise


def _endpoint(job: JobConfig, channel: str) -> str:
    """Where ``channel`` sends to (a host, never a webhook's path, which holds its secret token),
    for the log and the errors; the Airflow connection's id when that connection cannot be read."""
    alerts = _alerts(job)
    conn_id = (
        alerts.email.smtp_conn_id if channel == "email" and alerts.email
        else (alerts.slack.webhook_conn_id or alerts.slack.api_conn_id) if alerts.slack else None
    )
    try:
        from airflow.sdk import BaseHook

        conn = BaseHook.get_connection(conn_id)
    except Exception:  # no Airflow, or no such connection: the send said so already
        return f"Airflow connection {conn_id!r}"
    if channel == "email":
        return f"SMTP host {conn.host}:{conn.port or 'default port'}"
    if alerts.slack and alerts.slack.webhook_conn_id:  # as SlackWebhookHook builds the URL
        password = (conn.password or "").strip()
        url = password if "://" in password else f"{conn.schema or 'https'}://{conn.host or 'hooks.slack.com/services'}"
    else:
        url = conn.extra_dejson.get("base_url") or "https://slack.com/api/"
    return f"Slack host {urlsplit(url if '://' in url else f'https://{url}').netloc}"


#: Errors (anywhere in an error's chain) saying a channel's server could not be reached or did not
#: answer: the next message would wait as long again (SMTP: the connection's ``timeout``, 30 s by
#: default, times 1 + its ``retry_limit``, 5 by default; a webhook 30 s, twice), not what one message did.
#: Not a connection closed (``SMTPServerDisconnected`` without a timeout, a reset): some servers
#: drop one message that way (over a size limit), and giving the channel up would hold every later
#: alert behind it at each retry.
_UNREACHABLE = (TimeoutError, ConnectionRefusedError, socket.gaierror, smtplib.SMTPConnectError)


def _unreachable(exc: BaseException) -> BaseException | None:
    """The error in ``exc``'s chain saying its server could not be reached, or ``None``."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _UNREACHABLE):
            return current
        current = current.__cause__ or current.__context__
    return None


class _ChannelDown(Exception):
    """A channel whose server could not be reached earlier in the run: not tried again in it."""


def _skipping_unreachable(job: JobConfig, send: Notify) -> Notify:
    """``send``, giving up a channel for the rest of the run once its server could not be reached.

    A blackholed SMTP host or webhook made every message of the run wait the full timeout (and
    the SMTP hook's retries) again: minutes per run, for nothing. The messages not tried fail as
    deliveries that failed do (:func:`_deliver`): kept unsent, for the task's retry or the job's
    next runs, so nothing is lost and nothing sent twice. Only a failure to connect or to get an
    answer counts: a message refused (too big, a content filter) says nothing about the next one.
    """
    down: dict[str, str] = {}

    def guarded(channel: str, message: Message, context: Mapping[str, Any]) -> None:
        if channel in down:
            raise _ChannelDown(f"not tried: {down[channel]}")
        try:
            send(channel, message, context)
        except PipelineError:
            raise
        except Exception as exc:
            cause = _unreachable(exc)
            if cause is None:
                raise
            where = _endpoint(job, channel)
            why = f"{type(cause).__name__}: {cause}" if str(cause) else type(cause).__name__
            down[channel] = f"{where} could not be reached earlier in this run ({why})"
            log.warning(
                "job %s: %s (%s) could not be reached (%s); the run's other messages by %s are not tried, and stay unsent "
                "for the task's retry (check that the server is up and reachable from the workers, and the connection's "
                "host and port)", job.name, where, _target(job, channel), why, channel,
            )
            # The notifier's own error ("Unable to connect to smtp server") names neither the host nor why.
            raise _ChannelDown(f"{where} could not be reached ({why}): {exc}") from exc

    return guarded


def _channels(alerts: AlertsConfig) -> list[str]:
    return [name for name in ("email", "slack") if getattr(alerts, name)]


#: One delivery that failed: what it was, by which channel and why (a line of the task's error), and the error.
_Failure = tuple[str, Exception]


def _deliver(
    job: JobConfig, state: AlertState, what: str, message: Message, done: list[str], context: Mapping[str, Any], send: Notify
) -> list[_Failure]:
    """Send ``message`` on every channel not in ``done``, saving the state after each one; the failures.

    Every channel is tried: a channel that fails (a server down, a message refused) must not keep
    the message from the others. A channel that failed stays out of ``done``, so the task's retry
    sends it there, and only there.
    """
    failures: list[_Failure] = []
    for channel in _channels(_alerts(job)):
        if channel in done:
            continue
        try:
            send(channel, message, context)
        except PipelineError:  # configuration or a missing package: said precisely already, and the same for every event
            raise
        except Exception as exc:
            failures.append((f"{what} could not be sent by {channel} ({_target(job, channel)}): {exc}", exc))
            log.warning("job %s: %s", job.name, failures[-1][0])
            continue
        done.append(channel)
        try:
            state._write(job)
        except Exception as exc:
            # Saved after each delivery, so only this one is not recorded: say that it went out, and
            # that the retry sends it once more there (a bare PermissionError or StorageError did not).
            raise SinkError(
                f"job {job.name}: {what} went out by {channel}, but the alert state {state_url(job)} could not be saved "
                f"afterwards ({exc}); the task's retry sends it by {channel} once more (what went out before is recorded): "
                "check that the job's registry storage is reachable and writable"
            ) from exc
        log.info("job %s: sent %s by %s", job.name, what, channel)
    return failures


def _raise_failures(job: JobConfig, failures: list[_Failure]) -> None:
    """Fail the task, once every event was tried, naming each delivery that failed (so Airflow shows
    the run failed and retries it; the retry sends only what did not go through)."""
    if not failures:
        return
    lines = "; ".join(line for line, _ in failures)
    if len(failures) == 1:
        raise SinkError(
            f"job {job.name}: {lines}; it stays unsent and the task's retry sends it (check the connection and the server)"
        ) from failures[0][1]
    raise SinkError(
        f"job {job.name}: {len(failures)} deliveries failed, the rest went out: {lines}; they stay unsent and the task's "
        "retry sends them, not what went out (check the connections and the servers)"
    ) from failures[0][1]


def _target(job: JobConfig, channel: str) -> str:
    alerts = _alerts(job)
    if channel == "email" and alerts.email:
        return f"Airflow connection {alerts.email.smtp_conn_id!r}, to {', '.join(alerts.email.to)}"
    if alerts.slack and alerts.slack.webhook_conn_id:
        return f"Airflow connection {alerts.slack.webhook_conn_id!r}"
    if alerts.slack:  # Slack's answer ("channel_not_found", "not_in_channel") does not name the channel
        return f"Airflow connection {alerts.slack.api_conn_id!r}, channel {alerts.slack.channel}"
    return "unconfigured"


# -- the run --------------------------------------------------------------------------------------


@dataclass
class AlertSummary:
    events: int = 0
    sent: int = 0
    held: int = 0
    suppressed: int = 0
    filtered: int = 0
    already_sent: int = 0
    queued: int = 0
    #: Events over alerts.max_per_run, told in one summary message instead of an alert each.
    summarized: int = 0
    #: Alerts of earlier windows, left unsent when their runs' retries ran out, sent by this run.
    sent_late: int = 0
    #: Such alerts given up (older than PENDING_MAX_AGE, or kept without their event's details).
    given_up: int = 0
    digest: dict[str, Any] | None = None
    #: The summary messages of events over alerts.max_per_run (this run's, and earlier runs' that
    #: reached some channels only): ``window``, ``events``, ``decision`` (sent, sent late, given up,
    #: failed) and ``reason``.
    overflow: list[dict[str, Any]] = field(default_factory=list)
    #: Digests of earlier days that reached some channels only (their runs' retries ran out), dealt
    #: with by this run: ``cutoff``, ``events``, ``decision`` (sent late, given up, failed) and
    #: ``reason``; said here, not only in the log, so the task's summary (XCom) shows them.
    earlier_digests: list[dict[str, Any]] = field(default_factory=list)
    decisions: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _alerts(job: JobConfig) -> AlertsConfig:
    if job.alerts is None:
        raise ConfigError(f"job {job.name} has no alerts configured; add an 'alerts' section (see docs/ALERTS.md)")
    return job.alerts


def _summary_entry(event: AnomalyEvent, job: JobConfig) -> dict[str, Any]:
    return {"key": event.key, "start": _moment(event.start), "end": _moment(event.end + job.frequency), "peak_score": event.peak_score}


def process_events(
    job: JobConfig,
    frame: pd.DataFrame,
    window: Window,
    *,
    context: Mapping[str, Any] | None = None,
    send: Notify | None = None,
    read: RowReader | None = None,
) -> AlertSummary:
    """Alert on the events of ``frame`` (published rows of ``window``), then send the digest if due.

    ``read(low, high)``: the job's published rows in ``[low, high)``, read beyond the window's edges
    to tell an event overlapping one whole (see :func:`_window_events`); without it, the events of
    ``frame`` alone.
    """
    alerts = _alerts(job)
    context = context or {}
    send = _skipping_unreachable(job, send or (lambda channel, message, ctx: notify(job, channel, message, ctx)))
    state = AlertState.load(job)
    try:
        # Written once before anything is sent: a store that cannot take the state (down, read-only,
        # full) fails the run here, rather than after a delivery that the run and each of its
        # retries would then send again, unrecorded.
        state._write(job)
    except Exception as exc:
        raise SinkError(
            f"job {job.name}: the alert state {state_url(job)} cannot be saved ({exc}); nothing was sent: check that the "
            "job's registry storage is reachable and writable, and the task's retry sends the alerts"
        ) from exc
    limit = job.frequency * (alerts.max_gap + 1)
    events = sorted(_window_events(job, frame, window, read), key=lambda e: (e.start, e.series))
    summary = AlertSummary(events=len(events))
    false_alarms = _FalseAlarms(job)
    failures: list[_Failure] = []
    unsent: list[datetime] = []  # starts of the events that could not be sent everywhere

    def decide(event: AnomalyEvent, decision: str, reason: str) -> None:
        summary.decisions.append({"key": event.key, "series": event.series, "decision": decision, "reason": reason})
        log.info("job %s: event %s of series %s: %s (%s)", job.name, event.key, event.series, decision, reason)

    keys = {event.key for event in events}
    failures += _send_pending(job, state, window, keys, summary, false_alarms, context, send)
    failed_again = {record["key"] for _, record in state.pending()} - keys  # by _send_pending, just now
    paged = sum(d["decision"] in ("sent late", "failed") for d in summary.decisions)  # alerts tried one by one
    for event in events:
        record = state.match(event, limit)
        if record is not None:
            # A re-run, or the continuation of an incident seen in an earlier window.
            record["start"] = min(record["start"], event.start.isoformat())
            record["end"] = max(record["end"], event.end.isoformat())
            if record["key"] in failed_again:
                # Continues an earlier window's alert that failed again just now: not tried a second
                # time as this part; the alert kept tells the incident so far, from its start.
                record["event"] = _merged(record["event"], event)
                state.save(job)
                summary.already_sent += 1
                decide(event, "already sending", f"part of event {record['key']}, whose alert is still unsent")
                continue
            if record["status"] == "held":  # by the part's start: a re-run of a window counts its part once
                record["periods"] = _with_part(record.get("periods", {}), event)
            told = record["status"] == "summarized" or (
                record["status"] == "sent" and set(record["channels"]) >= set(_channels(alerts))
            )
            if told:
                if record["status"] == "sent" and datetime.fromisoformat(record["start"]) >= window.start:
                    paged += 1  # by an earlier attempt at this window: its retry does not get a fresh cap
                if alerts.snooze:  # an incident that goes on keeps its series snoozed after its end
                    until = (event.end + job.frequency * alerts.snooze).isoformat()
                    state.snoozed_until[event.series] = max(state.snoozed_until.get(event.series, ""), until)
                    state.snooze_peak[event.series] = max(state.snooze_peak.get(event.series, 0.0), event.peak_score)
                _queue(state, alerts, record["key"], event, record["status"])
                state.save(job)
                summary.already_sent += 1
                decide(event, f"already {record['status']}", f"part of event {record['key']}")
                continue
            # A held incident that grows worse than the alert that snoozed its series escalates
            # below, as it would have had the window held all of it (hourly windows split it).
            held_escalates = (
                record["status"] == "held" and alerts.escalate and event.peak_score > state.snooze_peak.get(event.series, math.inf)
            )
            if record["status"] in ("held", "queued") and not held_escalates:
                _queue(state, alerts, record["key"], event, record["status"])
                state.save(job)
                summary.already_sent += 1
                decide(event, f"already {record['status']}", f"part of event {record['key']}")
                continue
        why = _filtered_out(alerts, event)
        if why:
            summary.filtered += 1
            decide(event, "filtered", why)
            continue
        label = false_alarms.matching(event)
        if label is not None:
            summary.suppressed += 1
            decide(event, "suppressed", _false_alarm_reason(label))
            continue
        snoozed_until = state.snoozed_until.get(event.series)
        was_held = record is not None and record["status"] == "held"
        snoozed = was_held or (record is None and snoozed_until and event.start <= datetime.fromisoformat(snoozed_until))
        # States written before escalation existed hold no peak: nothing escalates over those.
        escalates = snoozed and alerts.escalate and event.peak_score > state.snooze_peak.get(event.series, math.inf)
        if snoozed and not escalates:
            state.remember(event, "held")
            held = state.held.setdefault(event.series, [])
            held.append(_summary_entry(event, job))
            del held[:-REMEMBERED_PER_SERIES]
            _queue(state, alerts, event.key, event, "held")
            state.save(job)
            summary.held += 1
            decide(event, "held", f"series snoozed until {snoozed_until}")
            continue
        if not alerts.immediate:
            state.remember(event, "queued")
            _queue(state, alerts, event.key, event, "queued")
            state.save(job)
            summary.queued += 1
            decide(event, "queued", "for the digest only (immediate: false)")
            continue
        if paged >= alerts.max_per_run and not (record is not None and _pending(record)):
            # Past the cap (an alert this window's earlier attempt left unsent is still retried as
            # itself): told in the run's summary message, and dealt with as if alerted.
            record = record or state.remember(event, "summarized")
            _summarize(job, state, window, record, _whole_incident(event, record) if was_held else event)
            summary.summarized += 1
            decide(event, "summarized", f"over the {alerts.max_per_run} alerts a run sends (alerts.max_per_run): "
                   "told in the run's summary message with the others over it")
            continue
        paged += 1
        record = record or state.remember(event, "sending")
        # A held incident escalating in a later window (hourly windows split incidents) is told
        # as the whole incident, from its first start, as one window holding all of it would tell it;
        # its own "held" entry is that start, not another event.
        incident = _whole_incident(event, record) if was_held else event
        held = [h for h in state.held.get(event.series, []) if not (was_held and h.get("key") == record["key"])]
        # Held before this window's part of it (an event told whole starts before the window).
        continues_held = was_held and incident.start < max(event.start, window.start)
        message = render_event(job, incident, held, continues_held=continues_held)
        # Kept until it went out everywhere: a later run re-renders it from these, should this
        # window's retries run out first (see _send_pending).
        record["event"], record["continues_held"] = incident.to_dict(), continues_held
        failed = _deliver(job, state, f"the alert for event {incident.key}", message, record["channels"], context, send)
        if failed:
            # Kept as it is ("sending", with the channels it reached) for the task's retry, which
            # sends it on the other channels only; the later events are still tried.
            state.save(job)
            failures += failed
            unsent.append(incident.start)
            decide(event, "failed", "; ".join(line for line, _ in failed))
            continue
        _mark_sent(job, state, record, incident)
        summary.sent += 1
        escalation = f"; peak {event.peak_score:.4f} beat the snoozing alert's, so it escalated through the snooze" if escalates else ""
        if continues_held:
            escalation += f"; it continues the incident held since {_moment(incident.start)}"
        decide(event, "sent", f"by {', '.join(_channels(alerts))}{escalation}")
    failures += _send_overflow(job, state, window, summary, context, send)
    summary.digest, digest_failures = _send_digest(
        job, state, window, context=context, send=send, unsent=unsent, earlier=summary.earlier_digests
    )
    _raise_failures(job, failures + digest_failures)
    return summary


def _summarize(job: JobConfig, state: AlertState, window: Window, record: dict[str, Any], incident: AnomalyEvent) -> None:
    """``record``'s event (telling ``incident``), over ``alerts.max_per_run``: put in the summary
    message of ``window`` and dealt with as if alerted (snooze, digest), in one save, so that a run
    stopped before the message went out still sends it from its retry."""
    # The channels an earlier window's alert reached before its runs' retries ran out told it
    # already: its summary message skips them (the e-mail that had each alert of an outage got
    # them all again in a "7 more event(s)" message once Slack was back).
    reached = sorted(record["channels"])
    base = key = f"{window.start.isoformat()}/{window.end.isoformat()}" + (f"~{'+'.join(reached)}" if reached else "")
    n = 1
    # A summary message that reached a channel is not changed (that channel would never get what was
    # added: a retry finding more rows); what comes after it goes in a message of its own.
    while key in state.overflow and len(state.overflow[key]["channels"]) > len(state.overflow[key].get("reached", [])):
        n += 1
        key = f"{base}#{n}"
    entry = state.overflow.setdefault(
        key, {"start": window.start.isoformat(), "end": window.end.isoformat(), "channels": list(reached), "reached": reached,
              "events": {}}
    )
    entry["events"][record["key"]] = incident.to_dict()
    _mark_sent(job, state, record, incident, "summarized")


def _send_overflow(
    job: JobConfig, state: AlertState, window: Window, summary: AlertSummary, context: Mapping[str, Any], send: Notify
) -> list[_Failure]:
    """Send every summary message of events over the cap (:func:`_summarize`) not yet sent on every
    channel, oldest first, on the channels it missed: this run's, a retry's, or a later run's once
    its run's retries ran out; given up once older than :data:`PENDING_MAX_AGE`, as an unsent alert
    is (its events are in the dashboard and the digest). The failures."""
    failures: list[_Failure] = []
    for key in sorted(state.overflow):
        entry = state.overflow[key]
        what = f"the summary message of {len(entry['events'])} event(s) over the cap, window {entry['start']} to {entry['end']}"
        outcome: dict[str, Any] = {"window": key, "events": len(entry["events"])}
        ours = key.split("#")[0].split("~")[0] == f"{window.start.isoformat()}/{window.end.isoformat()}"
        age = window.end - datetime.fromisoformat(entry["end"])
        if age > PENDING_MAX_AGE:
            del state.overflow[key]
            state.save(job)
            never = ", ".join(c for c in _channels(_alerts(job)) if c not in entry["channels"]) or "a channel now removed"
            reason = f"never sent by {never}: it is {age} old, more than {PENDING_MAX_AGE} (PENDING_MAX_AGE); see the dashboard"
            summary.overflow.append({**outcome, "decision": "given up", "reason": reason})
            log.warning("job %s: %s is given up: %s", job.name, what, reason)
            continue
        missing = [c for c in _channels(_alerts(job)) if c not in entry["channels"]]
        failed = _deliver(job, state, what, render_overflow(job, list(entry["events"].values())), entry["channels"], context, send)
        if failed:
            state.save(job)
            failures += failed
            summary.overflow.append({**outcome, "decision": "failed", "reason": "; ".join(line for line, _ in failed)})
            continue
        del state.overflow[key]
        state.save(job)
        summary.overflow.append({**outcome, "decision": "sent" if ours else "sent late", "reason": f"by {', '.join(missing) or 'no channel'}"})
    return failures


def _window_events(job: JobConfig, frame: pd.DataFrame, window: Window, read: RowReader | None) -> list[AnomalyEvent]:
    """The events of ``frame`` (``window``'s rows), each whole when ``read`` gives the rows beyond.

    An incident that began in an earlier window is told from its first anomalous row, as the API
    and the dashboard tell it (:func:`pipelines.events.published_events`, same key): built from this
    window's rows alone, it was told as starting at the window's start, under another key, when
    no alert went out for its earlier part (below ``min_score`` there, or that run skipped).
    Read at most :data:`PENDING_MAX_AGE` beyond each edge (a series flagged for months must not
    make every run read months): older than that, an incident is not news.
    """
    alerts = _alerts(job)
    if read is None:
        return anomaly_events(alertable(job, frame), frequency=job.frequency, max_gap=alerts.max_gap)

    def rows(low: datetime | None, high: datetime | None) -> pd.DataFrame:
        inside = low is not None and high is not None and window.start <= low and high <= window.end
        return alertable(job, frame if inside else read(low, high))

    periods = min(MAX_EXTENSION_PERIODS, max(1, int(PENDING_MAX_AGE / job.frequency)))
    return window_events(
        rows, start=window.start, end=window.end, frequency=job.frequency, max_gap=alerts.max_gap, max_periods=periods
    )


def _settle(record: dict[str, Any], status: str) -> None:
    """Give ``record`` its final ``status``, without what it kept only until then."""
    record["status"] = status
    for kept in ("periods", "event", "continues_held"):
        record.pop(kept, None)


def _mark_sent(job: JobConfig, state: AlertState, record: dict[str, Any], incident: AnomalyEvent, status: str = "sent") -> None:
    """``record``'s alert (telling ``incident``) went out on every channel (``status`` ``summarized``:
    is told in the run's summary message): snooze its series, queue it for the digest, and save."""
    alerts = _alerts(job)
    _settle(record, status)
    if status == "sent":  # the held events it listed were told; a summary line lists none
        state.held.pop(incident.series, None)
    until = (incident.end + job.frequency * alerts.snooze).isoformat()
    # A retry (or a later run) sending an event that failed earlier, after a later event of its
    # series went out, must not shorten the snooze that later alert started.
    if alerts.snooze and until >= state.snoozed_until.get(incident.series, ""):
        state.snoozed_until[incident.series] = until
        state.snooze_peak[incident.series] = incident.peak_score
    _queue(state, alerts, record["key"], incident, status)
    state.save(job)


def _send_pending(
    job: JobConfig,
    state: AlertState,
    window: Window,
    keys: set[str],
    summary: AlertSummary,
    false_alarms: _FalseAlarms,
    context: Mapping[str, Any],
    send: Notify,
) -> list[_Failure]:
    """Send the alerts of earlier windows still unsent on some channel (their runs' retries ran out),
    on the channels they did not reach, re-rendered from what the state kept; the failures.

    Those past ``alerts.max_per_run`` go in the run's summary message (:func:`_summarize`)
    rather than one by one: a channel down for hours left up to the cap in every window.

    Those of events in ``keys`` (this run's events: its window's retry) are left to the run, which
    tells them from its rows. Those whose event ended more than :data:`PENDING_MAX_AGE` before the
    window's end, or kept without their event (state written before the event was kept: nothing to
    tell but a key), are given up with a warning; one a person marked a false alarm meanwhile
    (seen on the channel it reached) is not sent, as its window's retry would not send it. Sent
    before the window's own events, in time order, as they would have gone had their runs
    succeeded: their snooze applies to what follows.
    """
    failures: list[_Failure] = []
    tried = 0

    def decide(key: str, series: str, decision: str, reason: str) -> None:
        summary.decisions.append({"key": key, "series": series, "decision": decision, "reason": reason})
        log.log(
            logging.WARNING if decision in ("given up", "failed") else logging.INFO,
            "job %s: event %s of series %s, from an earlier window: %s (%s)", job.name, key, series, decision, reason,
        )

    for series, record in state.pending():
        if record["key"] in keys:
            continue
        age = window.end - datetime.fromisoformat(record["end"])
        missing = [c for c in _channels(_alerts(job)) if c not in record["channels"]]
        why = None
        if age > PENDING_MAX_AGE:
            why = f"it ended {age} before this window's end, more than {PENDING_MAX_AGE} (PENDING_MAX_AGE): too late to page"
        elif "event" not in record:
            why = "the alert state, written by an earlier version, kept no details of it to tell"
        if why:
            if "event" in record:  # not a page, but the daily summary (if any) lists it, marked so
                _queue(state, _alerts(job), record["key"], AnomalyEvent.from_dict(record["event"]), "given up")
            _settle(record, "given up")
            state.save(job)
            summary.given_up += 1
            never = ", ".join(missing) or "a channel now removed"
            decide(record["key"], series, "given up", f"never sent by {never}: {why}; see the dashboard")
            continue
        incident = AnomalyEvent.from_dict(record["event"])
        label = false_alarms.matching(incident)
        if label is not None:
            _settle(record, "suppressed")
            state.save(job)
            summary.suppressed += 1
            decide(record["key"], series, "suppressed", _false_alarm_reason(label))
            continue
        if tried >= _alerts(job).max_per_run:
            _summarize(job, state, window, record, incident)
            summary.summarized += 1
            decide(record["key"], series, "summarized", f"left unsent by the runs of its window, and over the "
                   f"{_alerts(job).max_per_run} alerts a run sends (alerts.max_per_run): told in this run's summary message")
            continue
        tried += 1
        held = [h for h in state.held.get(series, []) if h.get("key") != record["key"]]
        message = render_event(job, incident, held, continues_held=bool(record.get("continues_held")))
        failed = _deliver(job, state, f"the alert for event {incident.key}", message, record["channels"], context, send)
        if failed:
            state.save(job)
            failures += failed
            decide(record["key"], series, "failed", "; ".join(line for line, _ in failed))
            continue
        _mark_sent(job, state, record, incident)
        summary.sent_late += 1
        # No channel missing: the one(s) it lacked were taken out of the job's alerts since.
        how = f"by {', '.join(missing)}" if missing else "on no channel (those it missed are no longer configured)"
        decide(record["key"], series, "sent late", f"{how}, left unsent by the runs of its window")
    return failures


def _queue(state: AlertState, alerts: AlertsConfig, key: str, event: AnomalyEvent, status: str) -> None:
    """Keep ``event`` (merged with what its key already holds) for the next digest, if there is one."""
    if alerts.digest is None:
        return
    listed = next((r.get("digested_until") for r in state.events.get(event.series, []) if r["key"] == key), None)
    if listed and event.end.isoformat() <= listed:
        # A re-run of a window whose digest was sent (or is being sent) listing this: once is enough.
        return
    if key in state.digest:
        state.digest[key] = {**_merged(state.digest[key], event), "status": status}
    else:
        state.digest[key] = {**event.to_dict(), "parts": _with_part({}, event), "status": status}


def _merged(earlier: dict[str, Any], event: AnomalyEvent) -> dict[str, Any]:
    """``earlier`` (an incident as :meth:`AnomalyEvent.to_dict`, with ``parts``) with ``event``, a
    part of it found in another window: from the first start, the peak of the stronger part.

    An incident split by the windows is kept part by part: its periods are those of all its parts.
    """
    parts = _with_part(earlier.get("parts", {earlier["start"]: earlier["rows"]}), event)
    if earlier["peak_score"] >= event.peak_score:
        return {**earlier, "end": max(earlier["end"], event.end.isoformat()), "rows": sum(parts.values()), "parts": parts}
    return {**event.to_dict(), "start": min(earlier["start"], event.start.isoformat()), "rows": sum(parts.values()), "parts": parts}


def digest_cutoff(job: JobConfig, window: Window) -> datetime | None:
    """The digest time this window passes (``start < cutoff <= end``), or ``None``."""
    digest = _alerts(job).digest
    if digest is None:
        return None
    day = window.end.astimezone(timezone.utc).date()
    cutoff = datetime.combine(day, time(digest.hour), tzinfo=timezone.utc)
    if cutoff > window.end:
        cutoff -= timedelta(days=1)
    return cutoff if window.start < cutoff <= window.end else None


def send_digest(
    job: JobConfig, state: AlertState, window: Window, *, context: Mapping[str, Any], send: Notify
) -> dict[str, Any] | None:
    """Send the queued events that started before the digest time this window passes."""
    result, failures = _send_digest(job, state, window, context=context, send=_skipping_unreachable(job, send))
    _raise_failures(job, failures)
    return result


def _send_digest(
    job: JobConfig,
    state: AlertState,
    window: Window,
    *,
    context: Mapping[str, Any],
    send: Notify,
    unsent: Sequence[datetime] = (),
    earlier: list[dict[str, Any]] | None = None,
) -> tuple[dict[str, Any] | None, list[_Failure]]:
    """:func:`send_digest`, with the failed deliveries returned. ``unsent``: the starts of this run's
    events that could not be sent; the digest waits for those it would list (the task's retry).

    Earlier digests that reached some channels only (their runs' retries ran out) are first sent
    on the others, as they were (see :meth:`AlertState.take_digest`); what became of each is
    appended to ``earlier`` (:attr:`AlertSummary.earlier_digests`)."""
    failures = _send_unfinished_digests(job, state, window, context, send, [] if earlier is None else earlier)
    cutoff = digest_cutoff(job, window)
    if cutoff is None:
        return None, failures
    if cutoff.isoformat() in state.digests_sent:
        log.info("job %s: the digest of %s was sent already", job.name, _moment(cutoff))
        return {"cutoff": cutoff.isoformat(), "events": 0, "sent": False, "reason": "sent already"}, failures
    waiting = sum(start < cutoff for start in unsent)
    if waiting and cutoff.isoformat() not in state.digest_progress:
        # Sent now, it would miss them, and once sent it is never sent again: it goes out with
        # them, from the task's retry.
        log.warning("job %s: the digest of %s waits for %d event(s) that could not be sent", job.name, _moment(cutoff), waiting)
        return {"cutoff": cutoff.isoformat(), "events": 0, "sent": False, "reason": f"waits for {waiting} unsent event(s)"}, failures
    progress = state.digest_progress.get(cutoff.isoformat())
    if progress is None:
        if not any(datetime.fromisoformat(e["start"]) < cutoff for e in state.digest.values()):
            log.info("job %s: no events for the digest of %s; nothing sent", job.name, _moment(cutoff))
            return {"cutoff": cutoff.isoformat(), "events": 0, "sent": False, "reason": "no events"}, failures
        progress = state.take_digest(cutoff.isoformat())
        state.save(job)
    events = len(progress["events"])
    failed = _deliver_digest(job, state, cutoff.isoformat(), context, send)
    if failed:
        return {"cutoff": cutoff.isoformat(), "events": events, "sent": False, "reason": "delivery failed"}, failures + failed
    return {"cutoff": cutoff.isoformat(), "events": events, "sent": True}, failures


def _deliver_digest(job: JobConfig, state: AlertState, cutoff: str, context: Mapping[str, Any], send: Notify) -> list[_Failure]:
    """Send the digest of ``cutoff`` (taken) on the channels it has not reached; once it reached
    every one, mark it sent. The failures."""
    progress = state.digest_progress[cutoff]
    when = datetime.fromisoformat(cutoff)
    message = render_digest(job, list(progress["events"].values()), when)
    failures = _deliver(job, state, f"the digest of {_moment(when)}", message, progress["channels"], context, send)
    if not failures:
        del state.digest_progress[cutoff]
        state.digests_sent = [*state.digests_sent, cutoff][-31:]
        state.save(job)
    return failures


def _send_unfinished_digests(
    job: JobConfig, state: AlertState, window: Window, context: Mapping[str, Any], send: Notify, earlier: list[dict[str, Any]]
) -> list[_Failure]:
    """Send the digests of earlier cut-offs on the channels they missed (their runs' retries ran
    out), each as it was, oldest first; given up (a warning) once older than PENDING_MAX_AGE,
    as an unsent alert is. Each outcome is appended to ``earlier``; the failures returned."""
    failures: list[_Failure] = []
    current = digest_cutoff(job, window)
    for cutoff in sorted(state.digest_progress):
        if current is not None and cutoff == current.isoformat():
            continue  # this window's own digest: its retry
        progress = state.digest_progress[cutoff]
        missing = ", ".join(c for c in _channels(_alerts(job)) if c not in progress["channels"])
        age = window.end - datetime.fromisoformat(cutoff)
        outcome = {"cutoff": cutoff, "events": len(progress["events"])}
        if age > PENDING_MAX_AGE:
            del state.digest_progress[cutoff]
            state.save(job)
            reason = (
                f"never sent by {missing or 'a channel now removed'}: it is {age} old, more than {PENDING_MAX_AGE} "
                "(PENDING_MAX_AGE); see the dashboard"
            )
            earlier.append({**outcome, "decision": "given up", "reason": reason})
            log.warning("job %s: the digest of %s (%d event(s)) is given up: %s",
                        job.name, _moment(datetime.fromisoformat(cutoff)), outcome["events"], reason)
            continue
        failed = _deliver_digest(job, state, cutoff, context, send)
        failures += failed
        if failed:
            earlier.append({**outcome, "decision": "failed", "reason": "; ".join(line for line, _ in failed)})
        else:
            how = f"by {missing}" if missing else "on no channel (those it missed are no longer configured)"
            earlier.append({**outcome, "decision": "sent late", "reason": f"{how}, left unsent by the runs of its day"})
            log.info("job %s: the digest of %s sent late %s", job.name, _moment(datetime.fromisoformat(cutoff)), how)
    return failures


def alert_window(job: JobConfig, window: Window, *, context: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Alert on the published rows of ``window`` (the predict DAG's ``alert`` task)."""
    from pipelines.sinks import ParquetSink

    sink = ParquetSink(resolve_path(job.outputs.parquet), job.outputs.storage_options)

    def read(low: datetime | None, high: datetime | None) -> pd.DataFrame:
        return sink.read(job=job.name, start=low, end=high)

    frame = read(window.start, window.end)
    summary = process_events(job, frame, window, context=context, read=read)
    log.info(
        "job %s: alerts for %s: %d events, %d sent, %d in one summary message (over the cap), %d held (snoozed), "
        "%d suppressed (false alarms), %d filtered, %d seen before; of earlier windows: %d sent late, %d given up; "
        "digests of earlier days: %s",
        job.name, window, summary.events, summary.sent, summary.summarized, summary.held, summary.suppressed, summary.filtered,
        summary.already_sent,
        summary.sent_late, summary.given_up,
        ", ".join(f"{d['cutoff']} {d['decision']}" for d in summary.earlier_digests) or "none",
    )
    return summary.to_dict()


__all__ = [
    "AlertState",
    "AlertSummary",
    "Message",
    "alert_window",
    "alertable",
    "dashboard_link",
    "digest_cutoff",
    "notify",
    "process_events",
    "range_link",
    "render_digest",
    "render_event",
    "render_overflow",
    "send_digest",
    "state_url",
]

