"""``anomaly-pipelines detect``: options named as typed, -v after the command, progress per series."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from pipelines.cli import build_parser, main


def _hosts(path, start: str, hosts: list[str], hours: int = 96) -> str:
    times = pd.date_range(start, periods=hours, freq="h", tz="UTC")
    frames = [pd.DataFrame({"ts": times, "host": host, "v": [hour % 5 for hour in range(hours)]}) for host in hosts]
    pd.concat(frames).to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        # The job file's words: "features: List should have at least 1 item after validation, not 0 (got [])".
        (["--features", " , "], "error: --features names no column: give the numeric columns to score, comma-separated"),
        # "columns used twice among timestamp, dimensions and features": no such options.
        (["--features", "v,host", "--dimensions", "host"], "error: columns named twice: 'host' (--dimensions and --features);"),
        (["--features", "v,v"], "error: columns named twice: 'v' (--features twice);"),
        (["--features", "ts"], "error: columns named twice: 'ts' (--timestamp and --features);"),
    ],
    ids=["no-features", "dimension-and-feature", "feature-twice", "timestamp-as-feature"],
)
def test_detect_names_the_options_that_name_no_or_the_same_column(tmp_path, options, message, capsys):
    train = _hosts(tmp_path / "train.csv", "2024-03-01", ["a"])
    args = ["detect", "--train", train, "--input", train, "--timestamp", "ts", "--output", str(tmp_path / "out.parquet")]

    assert main([*args, *options]) == 2

    err = capsys.readouterr().err
    assert err.startswith(message) and "invalid job configuration" not in err
    assert not (tmp_path / "out.parquet").exists()


@pytest.mark.parametrize("argv", [["models", "job", "-v"], ["-v", "models", "job"], ["models", "-v", "job"]])
def test_verbose_is_taken_before_or_after_the_command(argv):
    # After the command it was "unrecognized arguments: -v".
    assert build_parser().parse_args(argv).verbose is True
    assert build_parser().parse_args(["models", "job"]).verbose is False


def test_detect_verbose_shows_progress_per_series(tmp_path):
    # The detector's line named no series: with thousands of them -v showed no progress.
    train = _hosts(tmp_path / "train.csv", "2024-03-01", ["a", "b"])
    input = _hosts(tmp_path / "input.csv", "2024-03-06", ["a", "b"], hours=24)
    done = subprocess.run(
        [sys.executable, "-m", "pipelines", "detect", "--train", train, "--input", input, "--timestamp", "ts",
         "--features", "v", "--dimensions", "host", "--output", str(tmp_path / "out.parquet"), "-v"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert "INFO pipelines.adhoc: detect: series host=a (1 of 2) scored: 24 rows" in lines
    assert "INFO pipelines.adhoc: detect: series host=b (2 of 2) scored: 24 rows" in lines


def test_detect_verbose_says_what_it_is_doing_before_the_long_steps(tmp_path):
    # Fitting a series of a million rows and writing the output take most of a minute: -v showed
    # nothing between the files' validation and the first "scored", nor after the last one.
    train = _hosts(tmp_path / "train.csv", "2024-03-01", ["a", "b"])
    input = _hosts(tmp_path / "input.csv", "2024-03-06", ["a", "b"], hours=24)
    output = tmp_path / "out.parquet"
    done = subprocess.run(
        [sys.executable, "-m", "pipelines", "detect", "--train", train, "--input", input, "--timestamp", "ts",
         "--features", "v", "--dimensions", "host", "--output", str(output), "-v"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    training = lines.index("INFO pipelines.adhoc: detect: series host=a (1 of 2): training on 96 rows, then scoring 24")
    fitted = next(i for i, line in enumerate(lines) if line.startswith("INFO pipelines.detectors.base:"))
    assert training < fitted
    assert lines[-1] == f"INFO pipelines.adhoc: detect: writing 48 rows (series x timestamp x feature) to {output}"


def test_every_options_help_states_its_default():
    # detect's --model, --contamination, --encoding, --delimiter, --decimal and predict's
    # --chunk-rows had defaults their help kept quiet about.
    import argparse

    parser = build_parser()
    commands = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    quiet = []
    for name, sub in commands.choices.items():
        text = " ".join(sub.format_help().split())  # argparse wraps lines anywhere
        for action in sub._actions:
            if action.default in (None, False, "", argparse.SUPPRESS) or action.required or not action.option_strings:
                continue
            if f"default {action.default}" not in text and f"default '{action.default}'" not in text:
                quiet.append(f"{name} {action.option_strings[-1]}")
    assert quiet == []


def test_predicts_chunk_rows_default_is_the_runners():
    # Written out in the parser, so that building it does not import the scoring stack.
    from pipelines.config import DEFAULT_CHUNK_ROWS

    predict = build_parser()._subparsers._group_actions[0].choices["predict"]
    assert predict.get_default("chunk_rows") == DEFAULT_CHUNK_ROWS


def test_labels_import_help_names_every_file_type_it_reads(tmp_path, project):
    # It said "a CSV or JSON file"; JSONL files are read too, and any other suffix is refused.
    from pipelines.labels import LabelError

    help = " ".join(build_parser()._subparsers._group_actions[0].choices["labels-import"].format_help().split())
    assert ".csv, .json or .jsonl" in help
    (tmp_path / "labels.txt").write_text("series,start,end,verdict\n")
    with pytest.raises(LabelError, match=r"use \.csv, \.json or \.jsonl"):
        from pipelines.config import get_job
        from pipelines.labels import import_labels

        import_labels(get_job("demo_web_metrics"), tmp_path / "labels.txt")


def test_a_warning_repeated_for_every_series_is_shown_once_with_its_count(tmp_path):
    # seasonal_mad's "season '1d' spans 24 rows ... training had 40 rows" names no series: a detect
    # over 2,000 groups printed 2,000 identical lines before its summary.
    train = _hosts(tmp_path / "train.csv", "2024-03-01", ["a", "b", "c"], hours=40)
    input = _hosts(tmp_path / "input.csv", "2024-03-06", ["a", "b", "c"], hours=24)
    done = subprocess.run(
        [sys.executable, "-m", "pipelines", "detect", "--train", train, "--input", input, "--timestamp", "ts",
         "--features", "v", "--dimensions", "host", "--output", str(tmp_path / "out.parquet")],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    warnings = [line for line in lines if line.startswith("WARNING pipelines.detectors.seasonal_mad:")]
    assert len(warnings) == 1 and "training had 40 rows" in warnings[0]
    assert lines[-1].startswith('(the warning of pipelines.detectors.seasonal_mad "seasonal_mad: season')
    assert lines[-1].endswith('..." came 3 times)')



@pytest.mark.parametrize("verbose", [[], ["-v"]], ids=["quiet", "verbose"])
def test_a_validation_failure_is_said_once(tmp_path, verbose):
    # The report came twice: logged as a WARNING, then again as the error line.
    train = _hosts(tmp_path / "train.csv", "2024-03-01", ["a"], hours=48)
    frame = pd.read_csv(train, dtype=str)
    frame.loc[2, "v"] = "abc"
    frame.to_csv(train, index=False)
    done = subprocess.run(
        [sys.executable, "-m", "pipelines", "detect", "--train", train, "--input", train, "--timestamp", "ts",
         "--features", "v", "--output", str(tmp_path / "out.parquet"), *verbose],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count('sample values ["abc"], at rows [3]') == 1, done.stderr
    assert "WARNING" not in done.stderr
    assert done.stderr.splitlines()[-2].startswith(f"error: {train}: job detect: validation of the --train file")


def _day_first(path, start: str, hours: int) -> str:
    times = pd.date_range(start, periods=hours, freq="h", tz="UTC")
    pd.DataFrame({"ts": times.strftime("%d/%m/%Y %H:%M"), "v": [hour % 5 for hour in range(hours)]}).to_csv(path, index=False)
    return str(path)


def test_detect_reads_day_first_dates_with_timestamp_format_and_refuses_them_without(tmp_path, capsys):
    # 96 hours from 11 January: 11/01 and 12/01 would read month first as November and December,
    # 13/01 onwards only day first; the scored file (1 to 2 February) would be 2 January onwards.
    train = _day_first(tmp_path / "train.csv", "2024-01-11", 96)
    input = _day_first(tmp_path / "input.csv", "2024-02-01", 24)
    args = ["detect", "--train", train, "--input", input, "--timestamp", "ts", "--features", "v", "--output", str(tmp_path / "out.parquet")]

    assert main(args) == 2  # bad data
    err = capsys.readouterr().err
    assert "column 'ts', row 49" in err and "'13/01/2024 00:00' is a date written day first" in err and "--timestamp-format" in err
    assert not (tmp_path / "out.parquet").exists()

    assert main([*args, "--timestamp-format", "%d/%m/%Y %H:%M"]) == 0
    scored = pd.read_parquet(tmp_path / "out.parquet")
    assert scored["timestamp"].min() == pd.Timestamp("2024-02-01", tz="UTC")
    assert scored["timestamp"].max() == pd.Timestamp("2024-02-01T23:00", tz="UTC")
