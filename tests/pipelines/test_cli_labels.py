"""``anomaly-pipelines label``, ``labels`` and ``labels-import`` end to end on the demo job:
trained and predicted from the shell, labels in the project's own SQLite labels table."""

from __future__ import annotations

import json

import pytest

from pipelines.cli import main

JOB = "demo_web_metrics"
SPIKE = ["--series", "region=eu", "--start", "2024-03-03T14:00:00Z", "--end", "2024-03-03T16:00:00Z"]


@pytest.fixture
def predicted(project, capsys):
    assert main(["train", JOB, "--end", "2024-03-01T00:00:00Z"]) == 0
    assert main(["predict", JOB, "--start", "2024-03-03T00:00:00Z", "--end", "2024-03-04T00:00:00Z"]) == 0
    capsys.readouterr()
    return project


def run(capsys, *argv: str) -> tuple[int, object, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, (json.loads(out) if out.strip() else None), err


def test_label_and_list_from_the_shell(predicted, capsys):
    code, label, _ = run(capsys, "label", JOB, *SPIKE, "--verdict", "true", "--note", "cache outage", "--author", "ana")
    assert code == 0
    assert label["series"] == "region=eu" and label["verdict"] is True and label["author"] == "ana"
    assert label["start"] == "2024-03-03T14:00:00+00:00" and label["end"] == "2024-03-03T16:00:00+00:00"
    # The range of the event's flagged values, read from the outputs predict just wrote.
    assert label["value_min"] is not None and label["value_min"] <= label["value_max"]
    assert (predicted / "var" / "labels.db").is_file()

    code, _, _ = run(capsys, "label", JOB, *SPIKE, "--verdict", "false", "--note", "load test")
    assert code == 0
    code, listed, _ = run(capsys, "labels", JOB)
    assert code == 0
    assert [(item["verdict"], item["note"]) for item in listed] == [(False, "load test")]
    assert run(capsys, "labels", JOB, "--series", "region=us")[1] == []
    assert len(run(capsys, "labels", JOB, "--start", "2024-03-03T16:00:00Z")[1]) == 1
    assert run(capsys, "labels", JOB, "--start", "2024-03-03T16:00:01Z")[1] == []


def test_labels_import_is_idempotent(predicted, capsys, tmp_path):
    path = tmp_path / "known.csv"
    path.write_text(
        "series,start,end,verdict,feature,note\n"
        "region=eu,2024-03-03T14:00:00Z,2024-03-03T16:00:00Z,true,requests,outage\n"
        "region=us,2024-03-03T02:00:00Z,2024-03-03T03:00:00Z,false,,quiet night\n"
    )
    for _ in range(2):
        code, summary, _ = run(capsys, "labels-import", JOB, str(path))
        assert code == 0 and summary == {"job": JOB, "file": str(path), "imported": 2}
    code, listed, _ = run(capsys, "labels", JOB)
    assert [(item["series"], item["feature"], item["verdict"], item["author"]) for item in listed] == [
        ("region=eu", "requests", True, "import:known.csv"),
        ("region=us", None, False, "import:known.csv"),
    ]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["label", JOB, "--series", "eu", "--start", "2024-03-03T14:00:00Z", "--end", "2024-03-03T16:00:00Z",
          "--verdict", "true"], "job 'demo_web_metrics', series 'eu': unknown series"),
        (["label", JOB, *SPIKE[:3], "2024-03-03T14:00:00", *SPIKE[4:], "--verdict", "true"],
         "start 2024-03-03T14:00:00 has no time zone"),
        (["label", JOB, *SPIKE, "--verdict", "true", "--feature", "cpu"], "unknown feature"),
        (["label", JOB, *SPIKE, "--verdict", "true", "--value-min", "3"], "give both value_min and value_max"),
        (["label", "nope", *SPIKE, "--verdict", "true"], "no job named 'nope'"),
        (["labels", JOB, "--start", "tomorrow"], "start 'tomorrow' is not an ISO 8601 date-time"),
        (["labels", JOB, "--start", "2024-03-04T00:00:00Z", "--end", "2024-03-03T00:00:00Z"],
         "job demo_web_metrics: --end 2024-03-03T00:00:00Z is before --start 2024-03-04T00:00:00Z; swap them"),
    ],
)
def test_errors_exit_2_with_the_message(predicted, capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2 and out is None
    assert message in err
    assert run(capsys, "labels", JOB)[1] == []


def test_a_bad_import_row_names_file_and_row(predicted, capsys, tmp_path):
    path = tmp_path / "known.csv"
    path.write_text(
        "series,start,end,verdict\n"
        "region=eu,2024-03-03T14:00:00Z,2024-03-03T16:00:00Z,true\n"
        "region=eu,2024-03-03T18:00:00Z,2024-03-03T17:00:00Z,false\n"
    )
    code, _, err = run(capsys, "labels-import", JOB, str(path))
    assert code == 2
    assert f"{path}: row 2 (line 3): end 2024-03-03T17:00:00+00:00 is before start" in err
    assert run(capsys, "labels", JOB)[1] == []  # the good first row was not written either


def test_a_verdict_other_than_true_or_false_is_a_usage_error(project, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["label", JOB, *SPIKE, "--verdict", "maybe"])
    assert exited.value.code == 2
    assert "invalid choice: 'maybe'" in capsys.readouterr().err


def test_a_verdict_given_by_mistake_is_withdrawn(project, capsys):
    # There was no way back from a wrong verdict: flipping it still counted (a mistaken false alarm
    # silencing alerts, or a true anomaly scored by tuning); only SQL on the table removed it.
    values = ["--value-min", "1", "--value-max", "2"]
    assert run(capsys, "label", JOB, *SPIKE, "--verdict", "false", *values)[0] == 0
    assert run(capsys, "label", JOB, *SPIKE, "--verdict", "true", "--feature", "requests", *values)[0] == 0
    code, removed, _ = run(capsys, "unlabel", JOB, "--series", "region=eu", "--start", "2024-03-03T15:00:00+01:00",
                           "--end", "2024-03-03T16:00:00Z")
    assert code == 0 and removed["verdict"] is False and removed["feature"] is None
    assert [(item["feature"], item["verdict"]) for item in run(capsys, "labels", JOB)[1]] == [("requests", True)]
    code, out, err = run(capsys, "unlabel", JOB, *SPIKE)
    assert code == 2 and out is None
    assert "job demo_web_metrics, series 'region=eu': no label on [2024-03-03T14:00:00Z, 2024-03-03T16:00:00Z]" in err
    assert run(capsys, "unlabel", JOB, *SPIKE, "--feature", "requests")[1]["verdict"] is True
    assert run(capsys, "labels", JOB)[1] == []


def test_listing_labels_before_any_was_given_leaves_no_database_behind(project, capsys):
    # The first read made an empty var/labels.db (SQLite creates its file on connecting).
    assert run(capsys, "labels", JOB) == (0, [], "")
    assert not (project / "var" / "labels.db").exists()
