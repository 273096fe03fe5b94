"""``detect`` without ``--timestamp``: rows stand for times inside, but what the user sees names
only the user's columns, and rows by their numbers in the file."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from pipelines.adhoc import detect_files
from pipelines.errors import ConfigError, DataValidationError

_CLOCK = "__row_time__"


def _detect(train: Path, input: Path, output: Path, *, features: list[str], dimensions: list[str]) -> None:
    detect_files(
        str(train), str(input), timestamp=None, features=features, dimensions=dimensions, model="iforest", params={},
        contamination=0.1, output=str(output),
    )


def test_a_bad_row_is_named_by_its_number_and_dimensions_only(tmp_path: Path) -> None:
    train, input = tmp_path / "train.csv", tmp_path / "input.csv"
    train.write_text("host,cpu\n" + "".join(f"{host},{i}\n" for i in range(60) for host in "ab"))
    input.write_text("host,cpu\na,1\na,2\na,slow\nb,4\n,5\n")

    with pytest.raises(DataValidationError) as info:
        _detect(train, input, tmp_path / "out.parquet", features=["cpu"], dimensions=["host"])

    # Each row was shown at "__row_time__=1970-01-01T00:00:03+00:00", among 12 checks of which 5
    # checked that column, which the user never named.
    assert str(info.value) == (
        f"{input}: job detect: validation of the --input file {input} failed 2 of 7 checks\n"
        "  - expect_column_values_to_not_be_null on host, 1 unexpected, sample values [null], at rows [5] of the "
        "--input file, counting its first data row as 1 (host=null)\n"
        '  - expect_column_values_to_be_in_type_list on cpu, 1 unexpected, sample values ["slow"], at rows [3] of the '
        "--input file, counting its first data row as 1 (host=a)"
    )
    report = json.dumps(info.value.report)
    assert _CLOCK not in report and "1970-01-01" not in report
    assert {check["column"] for check in info.value.report["checks"]} == {"host", "cpu", None}
    assert not (tmp_path / "out.parquet").exists()


def test_without_dimensions_a_bad_row_is_named_by_its_number_alone(tmp_path: Path) -> None:
    train, input = tmp_path / "train.csv", tmp_path / "input.csv"
    train.write_text("cpu\n" + "".join(f"{i}\n" for i in range(60)))
    input.write_text("cpu\n1\nn/a\n3\n")

    with pytest.raises(DataValidationError) as info:
        _detect(train, input, tmp_path / "out.parquet", features=["cpu"], dimensions=[])

    assert str(info.value).endswith(
        "expect_column_values_to_not_be_null on cpu, 1 unexpected, sample values [null], at rows [2] of the --input "
        "file, counting its first data row as 1, 1 of the 3 rows (33.3%) has no value of cpu: detect takes no missing "
        "value: fill the missing values in the file, or leave those rows out of it"
    )
    # A job file's setting is no advice for a command that has none.
    assert "max_null_fraction" not in str(info.value)
    assert _CLOCK not in json.dumps(info.value.report)


def test_rows_are_still_numbered_in_the_output(tmp_path: Path) -> None:
    train, input = tmp_path / "train.csv", tmp_path / "input.csv"
    train.write_text("host,cpu\n" + "".join(f"{host},{i % 7}\n" for i in range(60) for host in "ab"))
    input.write_text("host,cpu\na,1\nb,2\na,3\n")

    detect_files(
        str(train), str(input), timestamp=None, features=["cpu"], dimensions=["host"], model="iforest", params={},
        contamination=0.1, output=str(tmp_path / "out.parquet"),
    )

    scored = pd.read_parquet(tmp_path / "out.parquet")
    assert sorted(zip(scored["host"], scored["row"])) == [("a", 1), ("a", 3), ("b", 2)]
    assert _CLOCK not in scored.columns


@pytest.mark.parametrize("option", ["features", "dimensions"])
def test_a_column_named_as_the_row_clock_is_refused_by_its_option(tmp_path: Path, option: str) -> None:
    # Refused as "columns used twice among timestamp, dimensions and features", though no time was given.
    data = tmp_path / "data.csv"
    data.write_text(f"cpu,{_CLOCK}\n1,2\n")
    columns = {"features": ["cpu"], "dimensions": []}
    columns[option] = [*columns[option], _CLOCK]

    with pytest.raises(ConfigError, match=rf"^--{option} names '{_CLOCK}', the name detect gives the rows' numbers when "
                       "there is no --timestamp: rename that column in both files, or give the time column with --timestamp$"):
        _detect(data, data, tmp_path / "out.parquet", **columns)


@pytest.mark.parametrize(("model", "name", "value"), [("seasonal_mad", "season", "1d"), ("context", "rest", "12h")])
def test_a_duration_parameter_without_timestamps_names_the_options(tmp_path: Path, model: str, name: str, value: str) -> None:
    # The detector's words: "the duration '1d' but the data has no timestamps; give the season as a
    # number of rows", of a default the user never gave, and for context "(e.g. rest: 150)", a job file's.
    data = tmp_path / "data.csv"
    data.write_text("cpu\n" + "".join(f"{i % 7}\n" for i in range(60)))

    with pytest.raises(ConfigError) as info:
        detect_files(
            str(data), str(data), timestamp=None, features=["cpu"], dimensions=[], model=model, params={},
            contamination=0.1, output=str(tmp_path / "out.parquet"),
        )

    assert str(info.value) == (
        f"--model {model}: parameter {name!r} is the duration {value!r}, but without --timestamp the rows have no times: "
        f"give it as a number of rows with --params (e.g. --params '{{\"{name}\": 24}}'), or give the time column with "
        "--timestamp. Nothing was written."
    )
    assert not (tmp_path / "out.parquet").exists()
