"""The labels table on real SQLite and PostgreSQL databases, filled from real published outputs."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime

import pandas as pd
import pytest
import sqlalchemy as sa

from pipelines import schema
from pipelines.config import parse_job
from pipelines.events import published_events
from pipelines.labels import Label, LabelError, LabelStore, event_value_ranges, import_labels, label_of, label_store
from pipelines.sinks.parquet import ParquetSink

EU, US = "region=eu", "region=us"


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2024, 3, 3, hour, minute, tzinfo=UTC)


@pytest.fixture
def job(tmp_path):
    return parse_job(
        {
            "name": "web",
            "source": {"kind": "file", "path": "x.csv"},
            "timestamp": "ts",
            "frequency": "1h",
            "dimensions": ["region"],
            "features": ["requests", "latency_ms"],
            "model": {"kind": "seasonal_mad"},
            "outputs": {"parquet": str(tmp_path / "outputs")},
            "registry": str(tmp_path / "models"),
            "labels": {"connection": {"url": f"sqlite:///{tmp_path / 'labels.db'}"}},
        }
    )


@pytest.fixture
def published(job):
    """Hours 00-05 of 2024-03-03 for eu and us; eu requests are anomalous (and high) at 02 and 03."""
    rows = []
    for series in (EU, US):
        for hour in range(6):
            for feature, base in (("requests", 100.0), ("latency_ms", 20.0)):
                spike = series == EU and feature == "requests" and hour in (2, 3)
                rows.append(
                    {
                        "job": job.name, "series": series, "timestamp": at(hour), "feature": feature,
                        "value": base * (5 if spike else 1) + hour, "expected": base, "lower": base - 10,
                        "upper": base + 10, "score": 0.999 if spike else 0.2, "feature_score": 0.9 if spike else 0.1,
                        "is_anomaly": spike, "model": "seasonal_mad", "model_version": "v1", "run_id": "r1",
                        "interval_start": at(0), "interval_end": at(6), "scored_at": at(7),
                        "region": series.split("=")[1],
                    }
                )
    frame = schema.conform(pd.DataFrame(rows), ["region"])
    ParquetSink(job.outputs.parquet).write(frame, job=job.name, dimensions=["region"], start=at(0), end=at(6))
    return frame


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres), pytest.param("mysql", marks=pytest.mark.mysql)]
)
def store(request, job) -> LabelStore:
    if request.param == "sqlite":
        return label_store(job)
    url = request.getfixturevalue(f"{request.param}_url")
    return LabelStore(sa.create_engine(url), f"labels_{uuid.uuid4().hex[:8]}", {job.name: job})


def rows_in(store: LabelStore) -> int:
    with store.engine.connect() as conn:
        return conn.execute(sa.select(sa.func.count()).select_from(store.table)).scalar_one()


def test_a_label_takes_its_value_range_from_the_published_output(store, published):
    label = store.add("web", EU, at(2), at(3), True, feature="requests", note="deploy broke the cache", author="ana")
    # The event's rows are the anomalous requests rows at 02:00 and 03:00: 502 and 503.
    assert (label.value_min, label.value_max) == (502.0, 503.0)
    [stored] = store.labels("web", EU)
    assert stored == label
    assert stored.start == at(2) and stored.start.tzinfo is not None and stored.start.utcoffset().total_seconds() == 0
    assert stored.verdict is True and stored.feature == "requests" and stored.author == "ana"
    # Without a feature, the event's rows are every anomalous row of the series in the window.
    whole = store.add("web", US, at(1), at(2), False)
    assert (whole.value_min, whole.value_max) == (21.0, 102.0)  # nothing flagged: all rows of us there


def test_the_same_event_replaces_its_verdict_and_never_duplicates(store, published):
    store.add("web", EU, at(2), at(3), True, feature="requests", note="first")
    store.add("web", EU, at(2), at(3), False, feature="requests", note="on second thought")
    store.add("web", EU, at(2), at(3), False, note="whole series")  # another key: no feature
    assert rows_in(store) == 2
    by_feature = {label.feature: label for label in store.labels("web", EU)}
    assert by_feature["requests"].verdict is False and by_feature["requests"].note == "on second thought"
    assert by_feature[None].note == "whole series"


def test_labels_overlapping_a_window(store):
    store.add("web", EU, at(1), at(2), True, value_min=1, value_max=2)
    store.add("web", EU, at(4), at(5), False, value_min=1, value_max=2)
    store.add("web", US, at(2), at(2), True, value_min=1, value_max=2)

    def starts(**window) -> list[tuple[str, int]]:
        return [(label.series, label.start.hour) for label in store.labels("web", **window)]

    assert starts() == [(EU, 1), (EU, 4), (US, 2)]
    assert starts(start=at(2), end=at(3)) == [(EU, 1), (US, 2)]  # both ends inclusive
    assert starts(start=at(2, 30), end=at(3, 59)) == []
    assert starts(series=EU, start=at(3), end="2024-03-03T04:00:00+00:00") == [(EU, 4)]
    assert starts(start="2024-03-03T05:30:00+01:00") == [(EU, 4)]  # 04:30 UTC
    assert store.labels("nope") == []


@pytest.mark.parametrize(
    ("label", "query", "matches"),
    [
        ((EU, "requests", 100, 200), (EU, "requests", 120, 180), True),
        ((EU, "requests", 100, 200), (EU, "requests", 100, 200), True),
        ((EU, "requests", 100, 200), (EU, "requests", 90, 180), False),  # wider than what was judged
        ((EU, "requests", 100, 200), (EU, "requests", 120, 201), False),
        ((EU, "requests", 100, 200), (US, "requests", 120, 180), False),  # another series
        ((EU, "requests", 100, 200), (EU, "latency_ms", 120, 180), False),  # another feature
        ((EU, "requests", 100, 200), (EU, None, 120, 180), False),  # a feature's verdict is not the series'
        ((EU, None, 100, 200), (EU, "latency_ms", 120, 180), True),  # a whole-series verdict covers its features
        ((EU, None, 100, 200), (EU, None, 120, 180), True),
    ],
)
def test_known_false_alarm_containment(store, label, query, matches):
    series, feature, low, high = label
    stored = store.add("web", series, at(2), at(3), False, feature=feature, value_min=low, value_max=high)
    found = store.known_false_alarm("web", *query)
    assert found == (stored if matches else None)


def test_a_true_label_is_not_a_false_alarm_and_the_latest_verdict_counts(store):
    store.add("web", EU, at(2), at(3), True, value_min=100, value_max=200)
    assert store.known_false_alarm("web", EU, "requests", 120, 180) is None
    older = store.add("web", EU, at(5), at(5), False, value_min=0, value_max=1000, note="old")
    newer = store.add("web", EU, at(4), at(4), False, value_min=50, value_max=300, note="new")
    assert store.known_false_alarm("web", EU, "requests", 120, 180) == newer
    assert store.known_false_alarm("web", EU, "requests", 120, 900) == older
    assert store.known_false_alarm("other", EU, None, 120, 180) is None


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"end": at(1)}, "job 'web', series 'region=eu': end 2024-03-03T01:00:00+00:00 is before start"),
        ({"series": "host=a"}, "series 'host=a': unknown series; series of job 'web' are named region=<value>"),
        ({"series": "region="}, "unknown series"),
        ({"series": "all"}, "unknown series"),
        ({"feature": "cpu"}, "feature 'cpu': unknown feature; job 'web' watches requests, latency_ms"),
        ({"start": datetime(2024, 3, 3, 2)}, "start 2024-03-03T02:00:00 has no time zone"),
        ({"end": "2024-03-03T03:00:00"}, "end 2024-03-03T03:00:00 has no time zone"),
        ({"end": "yesterday"}, "end 'yesterday' is not an ISO 8601 date-time"),
        ({"start": datetime(1, 1, 1, tzinfo=UTC)}, "out of range"),
        ({"verdict": "maybe"}, "verdict must be true (a real anomaly) or false (a false alarm)"),
        ({"value_min": 3.0}, "give both value_min and value_max, or neither"),
        ({"value_min": 3.0, "value_max": 1.0}, "value_min 3.0 is larger than value_max 1.0"),
        ({"value_min": float("nan"), "value_max": 1.0}, "value_min must be a finite number"),
        ({"start": at(8), "end": at(9)}, "no published output rows in [2024-03-03T08:00:00+00:00, 2024-03-03T09:00:00+00:00]"),
    ],
)
def test_bad_labels_are_refused_naming_job_and_series(store, published, change, message):
    given = {"series": EU, "start": at(2), "end": at(3), "verdict": True, **change}
    with pytest.raises(LabelError) as caught:
        store.add("web", given.pop("series"), given.pop("start"), given.pop("end"), given.pop("verdict"), **given)
    assert message in str(caught.value)
    assert "job 'web'" in str(caught.value)
    assert store.labels("web") == []


def test_the_value_error_says_what_to_do(store):
    with pytest.raises(LabelError, match="run predict for that window first, or give value_min and value_max"):
        store.add("web", EU, at(2), at(3), True)


def test_a_series_without_models_is_refused_once_the_job_has_models(store, job):
    from pipelines.registry import ModelRegistry

    store.add("web", US, at(1), at(1), True, value_min=1, value_max=1)  # no models at all: not checked
    ModelRegistry(job.registry).register("web", EU, {"model.json": b"{}"}, {"model": "seasonal_mad"})
    store.add("web", EU, at(1), at(1), True, value_min=1, value_max=1)
    with pytest.raises(LabelError, match="series 'region=us': unknown series; job 'web' has models for region=eu"):
        store.add("web", US, at(2), at(2), True, value_min=1, value_max=1)


def test_import_csv_and_json_idempotently(store, published, tmp_path, job):
    csv_file = tmp_path / "known.csv"
    csv_file.write_text(
        "series,start,end,verdict,feature,note\n"
        "region=eu,2024-03-03T02:00:00Z,2024-03-03T03:00:00Z,true,requests,cache outage\n"
        "region=us,2024-03-03T01:00:00Z,2024-03-03T01:00:00Z,false,,\n"
    )
    json_file = tmp_path / "known.json"
    json_file.write_text(
        json.dumps([{"series": EU, "start": "2024-03-03T04:00:00+00:00", "end": "2024-03-03T05:00:00+00:00",
                     "verdict": False, "value_min": 10, "value_max": 20}])
    )
    first = import_labels(job, csv_file, store=store)
    assert [(label.series, label.verdict, label.feature) for label in first] == [(EU, True, "requests"), (US, False, None)]
    assert first[0].value_min == 502.0 and first[0].author == "import:known.csv"
    import_labels(job, json_file, store=store, author="ops")
    import_labels(job, csv_file, store=store)
    assert rows_in(store) == 3
    assert [(label.start.hour, label.author) for label in store.labels("web", EU)] == [(2, "import:known.csv"), (4, "ops")]


def test_an_import_lists_the_registry_once_and_still_refuses_a_series_without_models(store, tmp_path, job, monkeypatch):
    from pipelines.registry import ModelRegistry

    registry = ModelRegistry(job.registry)
    registry.register("web", EU, {"model.json": b"{}"}, {"model": "seasonal_mad"})
    listings = []
    listed = ModelRegistry.series
    monkeypatch.setattr(ModelRegistry, "series", lambda self, name: listings.append(name) or listed(self, name))
    path = tmp_path / "known.csv"
    rows = [f"region=eu,2024-03-03T{hour:02d}:00:00Z,2024-03-03T{hour:02d}:00:00Z,false,1,2" for hour in range(20)]
    path.write_text("series,start,end,verdict,value_min,value_max\n" + "\n".join(rows) + "\n")
    assert len(import_labels(job, path, store=store)) == 20
    assert listings == ["web"]  # one listing (a recursive one on object stores), not one per row
    path.write_text(path.read_text() + "region=us,2024-03-03T01:00:00Z,2024-03-03T01:00:00Z,true,1,2\n")
    with pytest.raises(LabelError, match=r"known.csv: row 21 \(line 22\): unknown series; job 'web' has models for region=eu"):
        import_labels(job, path, store=store)


def test_import_a_spreadsheet_csv_with_a_byte_order_mark_and_json_verdicts_as_1_and_0(store, published, tmp_path, job):
    csv_file = tmp_path / "excel.csv"  # "CSV UTF-8" of spreadsheets starts with a byte order mark
    csv_file.write_bytes(b"\xef\xbb\xbfseries,start,end,verdict\r\nregion=eu,2024-03-03T02:00:00Z,2024-03-03T03:00:00Z,yes\r\n")
    json_file = tmp_path / "export.json"
    json_file.write_text(json.dumps([{"series": US, "start": "2024-03-03T01:00:00Z", "end": "2024-03-03T01:00:00Z",
                                      "verdict": verdict, "feature": feature} for verdict, feature in ((0, "requests"), (1, None))]))
    assert [(label.series, label.verdict) for label in import_labels(job, csv_file, store=store)] == [(EU, True)]
    assert [label.verdict for label in import_labels(job, json_file, store=store)] == [False, True]
    json_file.write_text(json.dumps([{"series": US, "start": "2024-03-03T01:00:00Z", "end": "2024-03-03T01:00:00Z", "verdict": 2}]))
    with pytest.raises(LabelError, match=r"row 1 \(line 1\): verdict must be true .* got 2"):
        import_labels(job, json_file, store=store)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.csv", "series,start,end,verdict\nregion=eu,2024-03-03T02:00:00Z,2024-03-03T03:00:00Z,true\n"
                    "region=eu,2024-03-03T04:00:00Z,2024-03-03T03:00:00Z,true\n", "bad.csv: row 2 (line 3): end"),
        ("bad.csv", "series,start,end,verdict\nregion=eu,2024-03-03T02:00:00Z,2024-03-03T03:00:00Z,perhaps\n",
         "bad.csv: row 1 (line 2): verdict must be true"),
        ("bad.csv", "series,start,verdict\n", "bad.csv: missing column(s) end"),
        ("bad.csv", "series,start,end,verdict,colour\n", "bad.csv: unknown column(s) colour"),
        ("bad.csv", "series,start,end,verdict,\nregion=eu,2024-03-03T02:00:00Z,2024-03-03T03:00:00Z,true,\n",
         "bad.csv: column(s) 5 of the header have no name (a trailing comma makes one)"),
        ("bad.csv", "series,start,end,verdict\nregion=eu,2024-03-03T02:00:00Z,2024-03-03T03:00:00Z,true\n"
                    "region=eu,2024-03-04T02:00:00Z,2024-03-04T03:00:00Z,true\n",
         "bad.csv: row 2 (line 3): job 'web', series 'region=eu': no published output rows in [2024-03-04T02:00:00+00:00"),
        ("bad.csv", "series,start,end,verdict,series\nregion=eu,2024-03-03T02:00:00Z,2024-03-03T03:00:00Z,true,region=us\n",
         "bad.csv: column(s) series given more than once in the header"),
        ("bad.csv", "series,start,end,verdict,note\nregion=eu,2024-03-03T02:00:00Z,2024-03-03T03:00:00Z\n",
         "bad.csv: row 1 (line 2): fewer values than the header has columns (series, start, end, verdict, note)"),
        ("bad.json", json.dumps([{"series": EU, "start": "2024-03-03T02:00:00Z", "end": "2024-03-03T03:00:00Z",
                                  "verdict": True}, {"series": "region=eu", "start": "2024-03-03T02:00:00",
                                  "end": "2024-03-03T03:00:00Z", "verdict": True}]),
         "bad.json: row 2 (line 1): start 2024-03-03T02:00:00 has no time zone"),
        ("bad.json", json.dumps([{"series": EU, "start": "2024-03-03T02:00:00Z", "end": "2024-03-03T03:00:00Z",
                                  "verdict": True}] * 2), "bad.json: row 2 (line 1): the same event as row 1 (line 1)"),
        ("bad.json", "{not json", "bad.json: not valid JSON"),
        ("bad.jsonl", json.dumps({"series": EU, "start": "2024-03-03T02:00:00Z", "end": "2024-03-03T03:00:00Z",
                                  "verdict": True}) + "\n\n{not json\n", "bad.jsonl: row 2 (line 3) is not valid JSON"),
        ("bad.txt", "x", "unknown labels file type '.txt'"),
    ],
)
def test_a_bad_file_names_file_and_row_and_writes_nothing(store, published, tmp_path, job, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(LabelError) as caught:
        import_labels(job, path, store=store)
    assert message in str(caught.value)
    assert store.labels("web") == []


def test_a_file_not_in_utf8_names_the_line_and_says_to_save_it_as_utf8(store, tmp_path, job):
    path = tmp_path / "known.csv"
    good = "region=eu,2024-03-03T02:00:00Z,2024-03-03T03:00:00Z,true,fine\n" * 3000  # beyond one read buffer
    path.write_bytes(("series,start,end,verdict,note\n" + good + "region=eu,x,y,true,café\n").encode("latin-1"))
    with pytest.raises(LabelError, match=r"known.csv: line 3002 is not UTF-8 text \(byte 0xe9\); save the labels file as UTF-8"):
        import_labels(job, path, store=store)


def test_events_of_the_published_output_with_their_labels(store, job, published):
    [event] = published_events(job)
    assert (event.series, event.start, event.end, event.peak_score, event.top_features) == (
        EU, at(2), at(3), 0.999, ("requests",)
    )
    assert published_events(job, series=US) == []
    assert [e.start for e in published_events(job, start=at(3), end=at(6))] == [at(2)]  # whole, not cut to the window
    assert label_of(event, store.labels("web")) is None
    overlapping = store.add("web", EU, at(3), at(4), False, value_min=1, value_max=2)
    assert label_of(event, store.labels("web")) == overlapping
    exact = store.add("web", EU, at(2), at(3), True)
    store.add("web", US, at(2), at(3), False, value_min=1, value_max=2)
    assert label_of(event, store.labels("web")) == exact


def test_reading_never_creates_the_table(store):
    assert store.labels("web") == [] and store.known_false_alarm("web", EU, None, 1, 2) is None
    assert not sa.inspect(store.engine).has_table(store.name)
    store.add("web", EU, at(1), at(1), True, value_min=1, value_max=1)
    assert sa.inspect(store.engine).has_table(store.name)


def test_reading_labels_of_a_sqlite_file_never_written_creates_no_file(job, tmp_path):
    store = label_store(job)
    assert store.labels("web") == [] and store.known_false_alarm("web", EU, None, 1, 2) is None
    assert store.remove("web", EU, at(1), at(1)) is None
    assert not (tmp_path / "labels.db").exists()


def test_a_store_per_series_reads_with_one_query_and_a_dropped_table_is_looked_up_again(store, job):
    store.add("web", EU, at(1), at(1), True, value_min=1, value_max=1)
    statements: list[str] = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    fresh = LabelStore(store.engine, store.name, {job.name: job})  # as training builds one per series
    assert [label.series for label in fresh.labels("web", EU)] == [EU]
    assert len(statements) == 1, statements

    store.table.drop(store.engine)
    assert LabelStore(store.engine, store.name, {job.name: job}).labels("web") == []
    LabelStore(store.engine, store.name, {job.name: job}).add("web", US, at(1), at(1), False, value_min=1, value_max=1)
    assert [label.series for label in LabelStore(store.engine, store.name, {job.name: job}).labels("web")] == [US]


def test_many_labels_are_written_in_two_statements_and_a_key_given_twice_keeps_the_last(store):
    store.add("web", EU, at(1), at(1), True, value_min=1, value_max=1)  # the table exists
    first = store.labels("web")[0]
    labels = [replace(first, start=at(0, minute), end=at(0, minute), note=str(minute)) for minute in range(60)]
    statements: list[str] = []
    sa.event.listen(store.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
    store.write([*labels, replace(labels[0], verdict=False, note="later")])
    # A statement per label took 15 s to import 20,000 labels into SQLite.
    assert [statement.split()[0] for statement in statements] == ["DELETE", "INSERT"]
    stored = store.labels("web", EU, at(0), at(0, 59))
    assert len(stored) == 60 and (stored[0].verdict, stored[0].note) == (False, "later")
    store.write(labels)  # again: replaced, never duplicated
    assert rows_in(store) == 61


def test_an_unreachable_database_is_a_sink_error_saying_what_to_check(job):
    from pipelines.errors import SinkError

    engine = sa.create_engine("postgresql+psycopg2://postgres@127.0.0.1:1/nowhere?connect_timeout=2")
    store = LabelStore(engine, "anomaly_labels", {job.name: job})
    with pytest.raises(SinkError, match=r"(?s)could not create the labels table 'anomaly_labels' \(postgresql.*reachable"):
        store.add("web", EU, at(1), at(1), True, value_min=1, value_max=1)
    with pytest.raises(SinkError, match="could not read labels from 'anomaly_labels'"):
        store.labels("web")


def test_a_whole_series_false_alarm_keeps_a_range_per_feature(store, published):
    # Only requests was flagged at 02-03 (502, 503); latency_ms stayed normal (22, 23).
    label = store.add("web", EU, at(2), at(3), False, note="load test")
    # One range over every feature's rows mixed units: a latency of 502 ms inside the requests
    # range was silenced by a verdict on requests.
    assert store.known_false_alarm("web", EU, "latency_ms", 502.5, 502.5) is None
    assert label.value_ranges == {"requests": (502.0, 503.0)}
    assert store.labels("web", EU) == [label]
    found = store.known_false_alarm("web", EU, "requests", 502.0, 503.0)
    assert found is not None and found.note == "load test" and (found.value_min, found.value_max) == (502.0, 503.0)
    assert store.known_false_alarm("web", EU, "requests", 500.0, 503.0) is None


def test_a_false_alarm_on_an_event_with_an_infinite_value_does_not_silence_every_larger_spike(store, published, job):
    frame = published.copy()
    frame.loc[(frame["series"] == EU) & (frame["feature"] == "requests") & (frame["timestamp"] == at(3)), "value"] = float("inf")
    ParquetSink(job.outputs.parquet).write(frame, job=job.name, dimensions=["region"], start=at(0), end=at(6))
    label = store.add("web", EU, at(2), at(3), False)
    assert label.value_ranges["requests"] == (502.0, 502.0) and label.value_max == 502.0  # the finite values
    assert store.known_false_alarm("web", EU, "requests", 502.0, 502.0) is not None
    # Before, the range was [502, inf]: a person's "false alarm" silenced any later spike above 502.
    assert store.known_false_alarm("web", EU, "requests", 600.0, 1e9) is None
    assert store.known_false_alarm("web", EU, "requests", 502.0, float("inf")) is None
    only_infinite = frame.assign(value=frame["value"].where(frame["timestamp"] != at(2), float("inf")))
    ParquetSink(job.outputs.parquet).write(only_infinite, job=job.name, dimensions=["region"], start=at(0), end=at(6))
    with pytest.raises(LabelError, match=r"feature 'requests': the event's values in .* are all infinite.*give value_min"):
        store.add("web", EU, at(2), at(3), False, feature="requests")


def test_a_false_alarm_later_confirmed_true_no_longer_silences(store):
    # First dismissed, then re-scored (02-04) and confirmed: the later word holds on 02-03, so the
    # dismissal's range holds values a person called a real anomaly.
    store.add("web", EU, at(2), at(3), False, feature="requests", value_min=100, value_max=200)
    store.add("web", EU, at(2), at(4), True, feature="requests", value_min=100, value_max=250)
    assert store.known_false_alarm("web", EU, "requests", 120, 180) is None
    # The other way round, the dismissal is the later word: it silences.
    store.add("web", US, at(2), at(4), True, feature="requests", value_min=100, value_max=250)
    dismissed = store.add("web", US, at(2), at(3), False, feature="requests", value_min=100, value_max=200)
    assert store.known_false_alarm("web", US, "requests", 120, 180) == dismissed
    # A confirmation of another feature, or beside the dismissal, leaves it standing.
    store.add("web", US, at(2), at(3), True, feature="latency_ms", value_min=1, value_max=2)
    store.add("web", US, at(5), at(5), True, feature="requests", value_min=100, value_max=250)
    assert store.known_false_alarm("web", US, "requests", 120, 180) == dismissed


def test_a_whole_series_false_alarm_overruled_by_a_feature_confirmation_silences_only_the_other_features(store):
    ranges = {"requests": (100.0, 200.0), "latency_ms": (10.0, 30.0)}
    whole = Label("web", EU, None, at(2), at(3), False, 10, 200, "load test", "ana", datetime.now(UTC), ranges)
    store.write([whole])
    # A feature's label is more specific than the whole series', whenever written.
    store.add("web", EU, at(3), at(3), True, feature="latency_ms", value_min=25, value_max=30)
    assert store.known_false_alarm("web", EU, "latency_ms", 12, 20) is None
    found = store.known_false_alarm("web", EU, "requests", 120, 180)
    assert found is not None and found.note == "load test"
    # Without a feature, every feature's verdict counts: one confirmed is enough.
    assert store.known_false_alarm("web", EU, None, 12, 20) is None


def test_an_event_confirmed_itself_is_not_silenced_by_a_matching_false_alarm(store):
    dismissed = store.add("web", EU, at(2), at(3), False, feature="requests", value_min=100, value_max=200)
    # The event of 02-03 again (a late alert), whose latency a person has since confirmed.
    store.add("web", EU, at(2), at(3), True, feature="latency_ms", value_min=300, value_max=400)
    event = {"span": (at(2), at(3)), "flagged": ["requests", "latency_ms"]}
    assert store.known_false_alarm("web", EU, "requests", 120, 180, **event) is None
    # A repeat on another day, or the event with requests flagged only, still matches the dismissal.
    assert store.known_false_alarm("web", EU, "requests", 120, 180, span=(at(20), at(21)), flagged=["requests"]) == dismissed
    assert store.known_false_alarm("web", EU, "requests", 120, 180, span=(at(2), at(3)), flagged=["requests"]) == dismissed


def test_a_label_on_non_latin_text_is_stored(store):
    # MariaDB before 11.6 makes tables latin1 by default: this failed there.
    label = store.add("web", "region=東京", at(1), at(2), True, value_min=1, value_max=2, note="Übertragung ausgefallen — 停電")
    assert store.labels("web", "region=東京") == [label]


def test_labels_of_a_table_made_before_per_feature_ranges_are_read_and_the_table_is_altered(store, job):
    old = sa.Table(store.name, sa.MetaData(), *(c.copy() for c in store.table.c if c.name != "value_ranges"))
    old.create(store.engine)
    row = {
        "job": "web", "series": EU, "feature": "", "start_time": datetime(2024, 3, 3, 2), "end_time": datetime(2024, 3, 3, 3),
        "verdict": False, "value_min": 20.0, "value_max": 600.0, "note": "old", "author": "ana",
        "created_at": datetime(2024, 3, 4),
    }
    with store.engine.begin() as conn:
        conn.execute(sa.insert(old).values(**row))
    [read] = store.labels("web", EU)
    assert read.note == "old" and read.value_ranges is None and (read.value_min, read.value_max) == (20.0, 600.0)
    # Its one range mixed the two features' units: in a job of two features it silences neither.
    assert store.known_false_alarm("web", EU, "latency_ms", 100, 100) is None
    single = LabelStore(store.engine, store.name, {"web": job.model_copy(update={"features": ["latency_ms"]})})
    assert single.known_false_alarm("web", EU, "latency_ms", 100, 100) == read
    store.add("web", US, at(1), at(1), False, value_min=1, value_max=2)  # the first write adds the column
    assert [label.value_ranges for label in store.labels("web")] == [None, {"requests": (1.0, 2.0), "latency_ms": (1.0, 2.0)}]


def test_times_with_a_lowercase_z_are_utc(store):
    # RFC 3339 allows "z"; datetime.fromisoformat refuses it, so files and the CLI refused such times.
    label = store.add("web", EU, "2024-03-03T02:00:00z", "2024-03-03t03:00:00z", True, value_min=1, value_max=2)
    assert (label.start, label.end) == (at(2), at(3))
    assert store.labels("web", start="2024-03-03T03:00:00z") == [label]


@pytest.mark.parametrize("server", [pytest.param("postgres", marks=pytest.mark.postgres), pytest.param("mysql", marks=pytest.mark.mysql)])
@pytest.mark.parametrize("same_event", [False, True], ids=["two-events", "one-event"])
def test_two_people_labelling_at_once_both_get_stored(request, job, server, same_event):
    import threading

    url, table = request.getfixturevalue(f"{server}_url"), f"labels_{uuid.uuid4().hex[:8]}"
    LabelStore(sa.create_engine(url), table, {job.name: job}).add("web", US, at(0), at(0), True, value_min=1, value_max=1)
    # Both transactions have deleted before either inserts: on MariaDB each DELETE locked the gap
    # the other inserts into, InnoDB killed one as a deadlock and that person's label was lost (503).
    both_deleted = threading.Barrier(2, timeout=5)
    failures: list[Exception] = []

    def label(author: str, hour: int) -> None:
        engine = sa.create_engine(url)
        waited = []

        @sa.event.listens_for(engine, "after_cursor_execute")
        def meet(conn, cursor, statement, *args):
            if statement.startswith("DELETE") and not waited:
                waited.append(True)
                with contextlib.suppress(threading.BrokenBarrierError):
                    both_deleted.wait()

        try:
            LabelStore(engine, table, {job.name: job}).add("web", EU, at(hour), at(hour), True, value_min=1, value_max=2, author=author)
        except Exception as exc:  # noqa: BLE001 - reported below
            failures.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=label, args=(author, 2 if same_event else hour)) for author, hour in (("ana", 2), ("bo", 3))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    stored = LabelStore(sa.create_engine(url), table, {job.name: job}).labels("web", EU)
    assert len(stored) == (1 if same_event else 2)  # the same event keeps one verdict, never two


@pytest.mark.parametrize(
    ("values", "given", "stored"),
    [
        (["Paris, FR"], "region=Paris%2C FR", True),  # the key the outputs and the events API use
        (["Paris, FR"], "region=Paris, FR", False),
        (["a=b"], "region=a=b", False),  # a raw '=' was taken as part of the value: a key no row has
        (["100%"], "region=100%", False),
        (["100%"], "region=100%25", True),
    ],
)
def test_a_series_key_with_special_characters_is_labelled_under_its_encoded_key(job, values, given, stored):
    from pipelines.series import series_key

    store = label_store(job)
    if stored:
        assert given == series_key(job.dimensions, values)
        assert store.add("web", given, at(1), at(1), True, value_min=1, value_max=1).series == given
    else:
        with pytest.raises(LabelError, match="unknown series; .* with ',', '=' and '%' inside a value written %2C, %3D and %25"):
            store.add("web", given, at(1), at(1), True, value_min=1, value_max=1)


def test_a_dimension_named_with_a_percent_sign_can_be_labelled(tmp_path, job):
    from pipelines.series import series_key

    # Dimension names are encoded in keys too: "disk%" is "disk%25", so its real keys were refused
    # as unknown and "disk%=..." (which no row has) accepted.
    odd = LabelStore(sa.create_engine(f"sqlite:///{tmp_path / 'odd.db'}"), jobs={"web": job.model_copy(update={"dimensions": ["disk%"]})})
    key = series_key(["disk%"], ["sda"])
    assert odd.add("web", key, at(1), at(1), False, value_min=1, value_max=1).series == key == "disk%25=sda"
    with pytest.raises(LabelError, match="series of job 'web' are named disk%25=<value>"):
        odd.add("web", "disk%=sda", at(1), at(1), False, value_min=1, value_max=1)


def test_an_unknown_series_of_a_job_with_many_series_names_the_nearest_not_all(job):
    from pipelines.registry import ModelRegistry

    registry = ModelRegistry(job.registry)
    for number in range(40):
        registry.register("web", f"region=zone-{number:03d}", {"model.json": b"{}"}, {"model": "seasonal_mad"})
    with pytest.raises(LabelError) as caught:
        label_store(job).add("web", "region=zone-O17", at(1), at(1), True, value_min=1, value_max=1)
    # Every key was listed: thousands of series made one typo's error hundreds of kilobytes long.
    message = str(caught.value)
    assert "unknown series; job 'web' has models for 40 series, e.g. region=zone-017" in message
    assert "`anomaly-pipelines models web` lists them" in message and "zone-039" not in message


def test_series_differing_only_in_case_or_accents_keep_their_own_labels(store):
    # MariaDB's default collation made "region=EU" the key of "region=eu" (and Koln of Köln):
    # labelling one deleted the other's label, and its false alarm silenced the other's alerts.
    for series, verdict in (("region=eu", False), ("region=EU", True), ("region=Köln", False), ("region=Koln", True)):
        store.add("web", series, at(1), at(1), verdict, value_min=1, value_max=2, note=series)
    assert sorted(label.note for label in store.labels("web")) == ["region=EU", "region=Koln", "region=Köln", "region=eu"]
    assert [label.note for label in store.labels("web", "region=eu")] == ["region=eu"]
    assert store.known_false_alarm("web", "region=EU", None, 1, 2) is None
    assert store.known_false_alarm("web", "region=Koln", None, 1, 2) is None


def test_a_label_is_withdrawn_by_its_key_and_stops_silencing_alerts(store):
    assert store.remove("web", EU, at(2), at(3)) is None  # no table yet: nothing to withdraw
    mistaken = store.add("web", EU, at(2), at(3), False, value_min=100, value_max=200)
    kept = store.add("web", EU, at(2), at(3), False, feature="requests", value_min=100, value_max=200)
    assert store.known_false_alarm("web", EU, "latency_ms", 120, 180) == mistaken
    assert store.remove("web", EU, "2024-03-03T03:00:00+01:00", at(3)) == mistaken
    assert store.labels("web") == [kept]
    assert store.known_false_alarm("web", EU, "latency_ms", 120, 180) is None
    assert store.remove("web", EU, at(2), at(3)) is None


def test_an_event_shows_the_label_whose_verdict_holds_on_it_as_alerts_read_it(store, job, published):
    # The events listing showed a whole-series false alarm over a later true verdict on the event's
    # feature (and a label of a feature the event never flagged): the one rule (label_verdicts)
    # says true, and alerts send the event.
    [event] = published_events(job)  # requests flagged at 02 and 03, peak at 02
    dismissed = store.add("web", EU, at(2), at(3), False, value_min=500, value_max=510)
    confirmed = store.add("web", EU, at(2), at(3), True, feature="requests")
    assert label_of(event, store.labels("web")) == confirmed
    requests = event.value_ranges["requests"]
    assert store.known_false_alarm("web", EU, "requests", *requests, span=(event.start, event.end)) is None
    assert label_of(event, [dismissed]) == dismissed
    # True after the peak only still confirms the event (alerts send it); otherwise the label at the peak shows.
    later = store.add("web", EU, at(3), at(3), True, feature="requests")
    assert label_of(event, [dismissed, later]) == later
    peak = store.add("web", EU, at(2), at(2), False, feature="requests")
    assert label_of(event, [dismissed, peak]) == peak
    # A label of latency_ms, not anomalous in the event, says nothing of it.
    latency = store.add("web", EU, at(1), at(4), False, feature="latency_ms", value_min=1, value_max=2)
    assert label_of(event, [latency]) is None
    assert label_of(event, [dismissed, latency]) == dismissed


def test_an_import_without_value_ranges_reads_the_published_output_once_not_per_row(store, published, tmp_path, job, monkeypatch):
    reads = []
    read = ParquetSink.read
    monkeypatch.setattr(ParquetSink, "read", lambda self, **kw: reads.append(kw) or read(self, **kw))
    rows = [f"{series},2024-03-03T{hour:02d}:00:00Z,2024-03-03T{hour + 1:02d}:00:00Z,false"
            for series in (EU, US) for hour in range(5)]
    rows += [
        f"{EU},2024-03-02T23:00:00Z,2024-03-03T02:00:00Z,true",  # from a day without output into one with
        f"{EU},2024-03-03T04:30:00+02:00,2024-03-03T06:00:00+02:00,false",  # 02:30-04:00 UTC: the spike at 03
    ]
    path = tmp_path / "known.csv"
    path.write_text("series,start,end,verdict\n" + "\n".join(rows) + "\n")
    labels = import_labels(job, path, store=store)
    assert len(reads) == 2  # 2024-03-03 for the first row, 2024-03-02 once: not one read per row
    assert [label.value_ranges for label in labels] == [
        event_value_ranges(job, label.series, None, label.start, label.end) for label in labels
    ]
    assert labels[-1].value_ranges == {"requests": (503.0, 503.0)}


def test_reimporting_an_unchanged_file_does_not_overrule_verdicts_given_since(store, tmp_path, job):
    path = tmp_path / "known.csv"
    path.write_text(f"series,start,end,verdict,value_min,value_max\n{EU},{at(2).isoformat()},{at(3).isoformat()},false,500,510\n")
    [first] = import_labels(job, path, store=store)
    store.add("web", EU, at(1), at(4), True, value_min=100, value_max=600)  # a person confirms the wider event later
    [again] = import_labels(job, path, store=store)
    assert again.created_at == first.created_at and rows_in(store) == 2
    assert store.known_false_alarm("web", EU, "requests", 505, 505) is None
    path.write_text(path.read_text().replace("false", "true"))  # a changed verdict is a new word
    [changed] = import_labels(job, path, store=store)
    assert changed.created_at > first.created_at


@pytest.mark.parametrize("wrapped", [False, True])
def test_a_bad_object_of_a_pretty_printed_json_file_is_named_by_its_line(store, tmp_path, job, wrapped):
    items = [{"series": EU, "start": f"2024-03-0{day}T02:00:00Z", "end": f"2024-03-0{day}T03:00:00Z", "verdict": False,
              "value_min": 1, "value_max": 2} for day in range(1, 5)]
    items[2]["end"] = "2024-03-01T00:00:00Z"
    path = tmp_path / "export.json"
    text = json.dumps({"exported": "2024-03-05", "labels": items} if wrapped else items, indent=2)
    path.write_text(text)
    line = [number for number, line in enumerate(text.splitlines(), start=1) if line.strip() == "{"][-2]  # the third object's
    with pytest.raises(LabelError, match=rf"export.json: row 3 \(line {line}\): end 2024-03-01T00:00:00\+00:00 is before start"):
        import_labels(job, path, store=store)
    assert store.labels("web") == []


def test_series_differing_only_in_trailing_spaces_keep_their_own_labels(store):
    # MySQL/MariaDB's utf8mb4_bin pads the shorter text with spaces before comparing (PAD SPACE):
    # the unique key took "region=EU " for "region=EU", so labelling one deleted the other's
    # label, and a read of one series returned both.
    for series, verdict in (("region=EU", False), ("region=EU ", True), ("region=EU  ", False)):
        store.add("web", series, at(1), at(1), verdict, value_min=1, value_max=2, note=repr(series))
    assert sorted(label.note for label in store.labels("web")) == ["'region=EU  '", "'region=EU '", "'region=EU'"]
    assert [label.note for label in store.labels("web", "region=EU ")] == ["'region=EU '"]
    assert store.known_false_alarm("web", "region=EU ", None, 1, 2) is None
    assert store.remove("web", "region=EU ", at(1), at(1)).note == "'region=EU '"
    assert sorted(label.series for label in store.labels("web")) == ["region=EU", "region=EU  "]


@pytest.mark.mysql
def test_a_padding_table_of_an_older_version_is_converted_by_the_first_write_and_read_exactly_before(mysql_url, job, caplog):
    engine = sa.create_engine(mysql_url)
    store = LabelStore(engine, f"labels_{uuid.uuid4().hex[:8]}", {job.name: job})
    old = store.table.to_metadata(sa.MetaData())
    old.kwargs["mysql_collate"] = "utf8mb4_bin"  # as tables were created before
    old.create(engine)
    row = {
        "job": "web", "series": "region=EU", "feature": "", "start_time": datetime(2024, 3, 3, 1), "end_time": datetime(2024, 3, 3, 1),
        "verdict": False, "value_min": 1.0, "value_max": 2.0, "note": "old", "author": "ana", "created_at": datetime(2024, 3, 4),
    }
    with engine.begin() as conn:
        conn.execute(sa.insert(old).values(**row))
    # Read before any write converted it: a series with a trailing space is not the other's.
    assert store.labels("web", "region=EU ") == [] and store.known_false_alarm("web", "region=EU ", None, 1, 2) is None
    store.add("web", "region=EU ", at(1), at(1), True, value_min=1, value_max=2, note="new")
    assert sorted(label.note for label in store.labels("web")) == ["new", "old"]
    assert "converted the labels table" in caplog.text
    with engine.connect() as conn:
        collations = conn.execute(
            sa.text("SELECT DISTINCT collation_name FROM information_schema.columns WHERE table_schema = DATABASE() "
                    "AND table_name = :name AND collation_name IS NOT NULL"),
            {"name": store.name},
        ).scalars().all()
    assert collations == ["utf8mb4_nopad_bin"]  # MariaDB's
    engine.dispose()


@pytest.mark.parametrize(
    ("server", "isolation"),
    [
        pytest.param("postgres", None, marks=pytest.mark.postgres),
        pytest.param("mysql", None, marks=pytest.mark.mysql),
        # A server's, role's or URL's default isolation: under REPEATABLE READ PostgreSQL refused
        # the second DELETE of a row the first writer had replaced meanwhile ("could not serialize
        # access due to concurrent update"), which was not run again: that person's label was lost.
        pytest.param("postgres", "REPEATABLE READ", marks=pytest.mark.postgres),
        pytest.param("postgres", "SERIALIZABLE", marks=pytest.mark.postgres),
        pytest.param("mysql", "READ COMMITTED", marks=pytest.mark.mysql),
        pytest.param("mysql", "SERIALIZABLE", marks=pytest.mark.mysql),
    ],
)
def test_two_people_relabelling_one_event_at_once_under_any_isolation_keep_one_verdict(request, job, server, isolation):
    import threading
    from concurrent.futures import ThreadPoolExecutor

    url, table = request.getfixturevalue(f"{server}_url"), f"labels_{uuid.uuid4().hex[:8]}"
    engines = {name: sa.create_engine(url, **({"isolation_level": isolation} if isolation else {})) for name in ("setup", "ana", "bo")}
    LabelStore(engines["setup"], table, {job.name: job}).add("web", EU, at(2), at(2), False, value_min=1, value_max=2, author="first")
    ana_between, bo_deleting = threading.Event(), threading.Event()

    def hold_ana_before_her_insert(conn, cursor, statement, *args) -> None:
        if statement.startswith("INSERT") and not ana_between.is_set():
            ana_between.set()
            assert bo_deleting.wait(timeout=30)
            time.sleep(0.5)  # bo's DELETE reaches the server and waits for ana's row lock

    def note_bo(conn, cursor, statement, *args) -> None:
        if statement.startswith("DELETE"):
            bo_deleting.set()

    sa.event.listen(engines["ana"], "before_cursor_execute", hold_ana_before_her_insert)
    sa.event.listen(engines["bo"], "before_cursor_execute", note_bo)

    def label(author: str) -> Label:
        store = LabelStore(engines[author], table, {job.name: job})
        return store.add("web", EU, at(2), at(2), author == "bo", value_min=1, value_max=2, author=author)

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            first = pool.submit(label, "ana")
            assert ana_between.wait(timeout=30)
            second = pool.submit(label, "bo")
            first.result(timeout=60), second.result(timeout=60)
        stored = LabelStore(engines["setup"], table, {job.name: job}).labels("web", EU)
    finally:
        for engine in engines.values():
            engine.dispose()
    assert [(label.author, label.verdict) for label in stored] == [("bo", True)]  # bo waited for ana, then replaced her verdict
