"""``anomaly-pipelines detect`` of an input whose groups do not all have a model: the others are
scored and written, and the shell user is told which were not and what to do."""

from __future__ import annotations

import subprocess
import sys

import pandas as pd

from pipelines import cli
from pipelines.cli import main


def _hosts(path, start: str, hours: dict[str, int]) -> str:
    times = pd.date_range(start, periods=max(hours.values()), freq="h", tz="UTC")
    frames = [pd.DataFrame({"ts": times[:n], "host": host, "v": [hour % 5 for hour in range(n)]}) for host, n in hours.items()]
    pd.concat(frames).to_csv(path, index=False)
    return str(path)


def _detect(train: str, input: str, output: str) -> list[str]:
    return ["detect", "--train", train, "--input", input, "--timestamp", "ts", "--features", "v", "--dimensions", "host",
            "--output", output]


def test_detect_writes_the_series_with_a_model_and_names_the_others_with_what_to_do(tmp_path, capsys):
    train = _hosts(tmp_path / "train.csv", "2024-03-01", {"a": 96})
    input = _hosts(tmp_path / "input.csv", "2024-03-06", {"a": 24, "new": 24})
    output = tmp_path / "out.parquet"

    # Exit 0: the scored series are written and usable (see adhoc.detect_files); stderr says the rest.
    assert main(_detect(train, input, str(output))) == 0

    out, err = capsys.readouterr()
    assert out.startswith("scored 24 points x 1 feature in 1 series: ")
    assert (
        "not scored: 1 series without a model (their rows are not in the output):\n"
        f"  - {input}: series host=new of the --input file has no rows in the --train file {train}, so no model: "
        "add its rows to the --train file and run detect again\n"
    ) in err
    assert set(pd.read_parquet(output)["series"]) == {"host=a"}


def test_detect_lists_many_unscored_series_without_burying_the_summary(tmp_path, capsys):
    train = _hosts(tmp_path / "train.csv", "2024-03-01", {"a": 96})
    hosts = {"a": 24} | {f"n{i:02d}": 24 for i in range(cli.UNSCORED_SHOWN + 3)}
    input = _hosts(tmp_path / "input.csv", "2024-03-06", hosts)

    assert main(_detect(train, input, str(tmp_path / "out.parquet"))) == 0

    err = capsys.readouterr().err
    assert err.count("so no model: add its rows") == cli.UNSCORED_SHOWN
    assert f"  - and 3 more: host=n{cli.UNSCORED_SHOWN:02d}, host=n{cli.UNSCORED_SHOWN + 1:02d}, host=n{cli.UNSCORED_SHOWN + 2:02d}\n" in err


def test_detect_with_no_series_that_has_a_model_exits_2_and_writes_nothing(tmp_path, capsys):
    train = _hosts(tmp_path / "train.csv", "2024-03-01", {"a": 96})
    input = _hosts(tmp_path / "input.csv", "2024-03-06", {"new": 24})

    assert main(_detect(train, input, str(tmp_path / "out.parquet"))) == 2

    err = capsys.readouterr().err
    assert err == (
        f"error: {input}: series host=new of the --input file has no rows in the --train file {train}, so no model: "
        "add its rows to the --train file and run detect again. Nothing was written.\n"
    )
    assert not (tmp_path / "out.parquet").exists()


def test_a_shell_user_is_told_once_which_series_were_not_scored(tmp_path):
    # A subprocess, as a shell runs it (pytest's log handlers would hide the library's warnings):
    # a "WARNING pipelines.adhoc: detect: 1 of 2 series ... not scored" line came before the summary
    # that says the same with what to do.
    train = _hosts(tmp_path / "train.csv", "2024-03-01", {"a": 96})
    input = _hosts(tmp_path / "input.csv", "2024-03-06", {"a": 24, "new": 24})
    done = subprocess.run(
        [sys.executable, "-m", "pipelines", *_detect(train, input, str(tmp_path / "out.parquet"))],
        capture_output=True, text=True, timeout=120, check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("not scored: 1 series without a model"), done.stderr
    assert done.stderr.count("host=new") == 1
