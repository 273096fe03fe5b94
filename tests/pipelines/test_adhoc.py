"""``anomaly-pipelines detect`` (train on one file, score another): timestamps must say the same
thing about their time zone in both files, or nothing is written."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from pipelines.adhoc import detect_files
from pipelines.errors import ConfigError, DataValidationError, ModelError, PipelineError, SourceConfigError, SourceDataError


def _write(path: Path, start: str, hours: int, *, aware: bool) -> str:
    times = pd.date_range(start, periods=hours, freq="h")
    stamps = times.strftime("%Y-%m-%dT%H:%M:%SZ" if aware else "%Y-%m-%d %H:%M:%S")
    pd.DataFrame({"ts": stamps, "v": [hour % 5 for hour in range(hours)]}).to_csv(path, index=False)
    return str(path)


def _detect(train: str, input: str, output: Path) -> pd.DataFrame:
    return detect_files(
        train, input, timestamp="ts", features=["v"], dimensions=[], model="iforest", params={},
        contamination=0.05, output=str(output),
    )


@pytest.mark.parametrize(
    ("train_aware", "message"),
    [
        (
            False,
            (
                "has timestamps with a time zone (first at row 1: '2024-03-05T00:00:00Z') in the --input file and "
                "without a time zone (first at row 1: '2024-03-01 00:00:00') in the --train file"
            ),
        ),
        (
            True,
            (
                "has timestamps without a time zone (first at row 1: '2024-03-05 00:00:00') in the --input file and "
                "with a time zone (first at row 1: '2024-03-01T00:00:00Z') in the --train file"
            ),
        ),
    ],
    ids=["naive-train", "aware-train"],
)
def test_train_and_input_files_whose_time_zones_disagree_stop_before_writing(
    tmp_path: Path, train_aware: bool, message: str
) -> None:
    train = _write(tmp_path / "train.csv", "2024-03-01", 96, aware=train_aware)
    input = _write(tmp_path / "input.csv", "2024-03-05", 24, aware=not train_aware)

    with pytest.raises(DataValidationError) as info:
        _detect(train, input, tmp_path / "out.parquet")

    assert str(info.value) == (
        f"{input}: column 'ts' {message} {train}; taking the ones without as UTC would be a guess. Write every "
        "timestamp of both files with its offset (e.g. 2024-01-01T00:00:00Z) or every one without (then taken as UTC), "
        "then re-run. Nothing was written."
    )
    assert not (tmp_path / "out.parquet").exists()


def test_an_input_file_mixing_time_zones_names_its_option_and_column(tmp_path: Path) -> None:
    train = _write(tmp_path / "train.csv", "2024-03-01", 96, aware=True)
    input = tmp_path / "input.csv"
    _write(input, "2024-03-05", 24, aware=True)
    frame = pd.read_csv(input)
    frame.loc[5, "ts"] = "2024-03-05 05:00:00"
    frame.to_csv(input, index=False)

    with pytest.raises(DataValidationError, match=(
        f"^{re.escape(str(input))}: the --input file's column 'ts' mixes timestamps with and without a time zone "
        r"\(1 of 24 timestamps have no time zone while the others have one \(first naive: '2024-03-05 05:00:00'\)\)"
    )):
        _detect(train, str(input), tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()


def test_train_and_input_files_both_with_time_zones_are_scored(tmp_path: Path) -> None:
    train = _write(tmp_path / "train.csv", "2024-03-01", 96, aware=True)
    input = _write(tmp_path / "input.csv", "2024-03-05", 24, aware=True)
    scored = _detect(train, input, tmp_path / "out.parquet")
    assert len(scored) == 24 and (tmp_path / "out.parquet").exists()


def test_a_dimension_named_row_without_timestamps_is_refused_before_writing(tmp_path: Path) -> None:
    # Without --timestamp the output numbers rows in a `row` column; a dimension named `row`
    # overwrote it: a traceback for text values, the dimension's values as row numbers otherwise.
    for name in ("train", "input"):
        pd.DataFrame({"row": ["a", "b"] * 50, "v": range(100)}).to_csv(tmp_path / f"{name}.csv", index=False)

    with pytest.raises(ConfigError, match="--dimensions names 'row', the column the output numbers rows in"):
        detect_files(
            str(tmp_path / "train.csv"), str(tmp_path / "input.csv"), timestamp=None, features=["v"], dimensions=["row"],
            model="iforest", params={}, contamination=0.05, output=str(tmp_path / "out.parquet"),
        )
    assert not (tmp_path / "out.parquet").exists()


@pytest.mark.parametrize("suffix", [".csv.gz", ".jsonl.bz2"])
def test_compressed_files_are_scored_and_a_missing_column_lists_their_columns(tmp_path: Path, suffix: str) -> None:
    files = {}
    for name, start, hours in (("train", "2024-03-01", 96), ("input", "2024-03-05", 24)):
        frame = pd.DataFrame({"ts": pd.date_range(start, periods=hours, freq="h").astype(str), "v": range(hours)})
        files[name] = str(tmp_path / f"{name}{suffix}")
        if suffix.startswith(".csv"):
            frame.to_csv(files[name], index=False)
        else:
            frame.to_json(files[name], orient="records", lines=True)

    assert len(_detect(files["train"], files["input"], tmp_path / "out.parquet")) == 24
    with pytest.raises(DataValidationError, match=re.escape("no such column: check --features against its columns (ts, v)")):
        detect_files(
            files["train"], files["input"], timestamp="ts", features=["v", "w"], dimensions=[], model="iforest",
            params={}, contamination=0.05, output=str(tmp_path / "never.parquet"),
        )


def test_a_series_too_short_to_train_on_is_named_with_the_train_file(tmp_path: Path) -> None:
    # The detector's own error named neither (which of the hosts?) and said to widen a training
    # window, which two files do not have.
    hours = pd.date_range("2024-03-01", periods=96, freq="h")
    short = pd.DataFrame({"ts": hours[:10], "host": "b", "v": range(10)})
    long = pd.DataFrame({"ts": hours, "host": "a", "v": [hour % 5 for hour in range(96)]})
    pd.concat([long, short]).to_csv(tmp_path / "train.csv", index=False)
    # Only host b to score: with host a too, a would be scored and b reported (see the next test).
    later = short.assign(ts=lambda frame: frame["ts"] + pd.Timedelta(days=5))
    later.to_csv(tmp_path / "input.csv", index=False)
    train = str(tmp_path / "train.csv")

    with pytest.raises(ModelError) as info:
        detect_files(
            train, str(tmp_path / "input.csv"), timestamp="ts", features=["v"], dimensions=["host"], model="seasonal_mad",
            params={}, contamination=0.05, output=str(tmp_path / "out.parquet"),
        )

    assert str(info.value) == (
        f"{train}: series host=b of the --train file cannot be trained on: SeasonalMADDetector needs at least 20 "
        "training rows (to calibrate its scores); got 10. Give that series more rows in the --train file, or leave it "
        "out of the --input file. Nothing was written."
    )
    assert not (tmp_path / "out.parquet").exists()


def _hosts(path: Path, start: str, hours: dict[str, int]) -> str:
    times = pd.date_range(start, periods=max(hours.values()), freq="h", tz="UTC")
    frames = [pd.DataFrame({"ts": times[:n], "host": host, "v": [hour % 5 for hour in range(n)]}) for host, n in hours.items()]
    pd.concat(frames).to_csv(path, index=False)
    return str(path)


def test_series_without_a_model_are_reported_and_the_others_scored_and_written(tmp_path: Path) -> None:
    # One host missing from the training file, or too short in it, failed the whole file: a user
    # scoring millions of points got nothing for the hosts that had a model.
    train = _hosts(tmp_path / "train.csv", "2024-03-01", {"a": 96, "b": 10})
    input = _hosts(tmp_path / "input.csv", "2024-03-06", {"a": 24, "b": 24, "c": 24})
    output = tmp_path / "out.parquet"

    scored = detect_files(
        train, input, timestamp="ts", features=["v"], dimensions=["host"], model="seasonal_mad", params={},
        contamination=0.05, output=str(output),
    )

    written = pd.read_parquet(output)
    assert set(written["series"]) == set(scored["series"]) == {"host=a"} and len(written) == 24
    assert scored.attrs["unscored"] == {
        "host=b": (
            f"{train}: series host=b of the --train file cannot be trained on: SeasonalMADDetector needs at least 20 "
            "training rows (to calibrate its scores); got 10. Give that series more rows in the --train file, or leave "
            "it out of the --input file"
        ),
        "host=c": (
            f"{input}: series host=c of the --input file has no rows in the --train file {train}, so no model: add its "
            "rows to the --train file and run detect again"
        ),
    }


def test_no_series_with_a_model_fails_naming_each_and_writes_nothing(tmp_path: Path) -> None:
    train = _hosts(tmp_path / "train.csv", "2024-03-01", {"a": 96, "b": 10})
    input = _hosts(tmp_path / "input.csv", "2024-03-06", {"b": 24, "c": 24})

    with pytest.raises(ModelError) as info:
        detect_files(
            train, input, timestamp="ts", features=["v"], dimensions=["host"], model="seasonal_mad", params={},
            contamination=0.05, output=str(tmp_path / "out.parquet"),
        )

    assert str(info.value).startswith(
        f"{input}: none of the 2 series of the --input file has a model, so nothing was scored or written: {train}: "
        "series host=b of the --train file cannot be trained on: SeasonalMADDetector needs at least 20"
    )
    assert str(info.value).endswith(f"; series host=c of the --input file has no rows in the --train file {train}, "
                                    "so no model: add its rows to the --train file and run detect again")
    assert not (tmp_path / "out.parquet").exists()


def test_thousands_of_series_without_a_model_are_named_not_each_explained(tmp_path: Path) -> None:
    train = _hosts(tmp_path / "train.csv", "2024-03-01", {"a": 96})
    input = _hosts(tmp_path / "input.csv", "2024-03-06", {f"n{i:02d}": 24 for i in range(12)})

    with pytest.raises(DataValidationError) as info:
        detect_files(
            train, input, timestamp="ts", features=["v"], dimensions=["host"], model="seasonal_mad", params={},
            contamination=0.05, output=str(tmp_path / "out.parquet"),
        )

    assert str(info.value).count("so no model: add its rows") == 10
    assert str(info.value).endswith("; and 2 more: host=n10, host=n11")


def test_a_bad_row_is_named_by_its_row_in_the_file(tmp_path: Path) -> None:
    train = _write(tmp_path / "train.csv", "2024-03-01", 72, aware=True)
    rows = pd.read_csv(_write(tmp_path / "input.csv", "2024-03-05", 60, aware=True), dtype=str)
    rows.loc[50, "v"] = "slow"  # the file's 51st data row (line 52, after the header)
    rows.to_csv(tmp_path / "input.csv", index=False)
    with pytest.raises(DataValidationError, match=re.escape("at rows [51] of the --input file, counting its first data row as 1")) as info:
        _detect(train, str(tmp_path / "input.csv"), tmp_path / "out.parquet")
    # Named as the file it is, not as "60 rows in window unbounded .. unbounded".
    assert f"validation of the --input file {tmp_path / 'input.csv'} failed" in str(info.value)
    assert not (tmp_path / "out.parquet").exists()


def _european(path: Path, start: str, hours: int, *, sep: str = ";", encoding: str = "utf-8") -> str:
    """A spreadsheet's export: fields separated by ``sep``, numbers with decimal commas."""
    times = pd.date_range(start, periods=hours, freq="h").strftime("%Y-%m-%dT%H:%M:%SZ")
    frame = pd.DataFrame({"ts": times, "région": "île", "v": [hour % 5 + 0.5 for hour in range(hours)]})
    frame.to_csv(path, sep=sep, decimal=",", index=False, encoding=encoding)
    return str(path)


def _detect_csv(train: str, input: str, output: Path, **options: str) -> pd.DataFrame:
    return detect_files(
        train, input, timestamp="ts", features=["v"], dimensions=["région"], model="iforest", params={},
        contamination=0.05, output=str(output), **options,
    )


@pytest.mark.parametrize(("sep", "encoding"), [(";", "utf-8"), ("\t", "latin-1")])
def test_files_with_another_delimiter_decimal_commas_and_encoding_are_scored(tmp_path: Path, sep: str, encoding: str) -> None:
    # detect read every file with utf-8, "," and ".": such exports could not be scored at all.
    train = _european(tmp_path / "train.csv", "2024-03-01", 96, sep=sep, encoding=encoding)
    input = _european(tmp_path / "input.csv", "2024-03-05", 24, sep=sep, encoding=encoding)

    scored = _detect_csv(train, input, tmp_path / "out.parquet", delimiter=sep, decimal=",", encoding=encoding)

    assert len(scored) == 24 and set(scored["value"]) == {0.5, 1.5, 2.5, 3.5, 4.5}
    assert scored["région"].eq("île").all()


@pytest.mark.parametrize(("sep", "shown"), [(";", ";"), ("\t", "\\t")])
def test_a_file_with_another_delimiter_names_the_option_to_give(tmp_path: Path, sep: str, shown: str) -> None:
    # The reader's advice was a job file's ("Set source.delimiter: ";" in the job file."): detect has none.
    train = _european(tmp_path / "train.csv", "2024-03-01", 96, sep=sep)
    input = _european(tmp_path / "input.csv", "2024-03-05", 24, sep=sep)

    with pytest.raises(SourceConfigError) as info:
        _detect_csv(train, input, tmp_path / "out.parquet")

    assert str(info.value).endswith(f"which looks {shown}-separated. Give --delimiter '{shown}'.")
    assert "job file" not in str(info.value)
    assert not (tmp_path / "out.parquet").exists()


def test_a_file_in_another_encoding_names_the_option_to_give(tmp_path: Path) -> None:
    train = _european(tmp_path / "train.csv", "2024-03-01", 96, encoding="latin-1")
    input = _european(tmp_path / "input.csv", "2024-03-05", 24, encoding="latin-1")

    with pytest.raises(SourceDataError) as info:
        _detect_csv(train, input, tmp_path / "out.parquet", delimiter=";", decimal=",")

    assert "is not valid utf-8 text: byte(s) e9 at byte offset 4 (line 1)" in str(info.value)
    assert str(info.value).endswith("Give --encoding with the file's encoding (e.g. latin-1, cp1252, utf-16).")


def test_decimal_commas_read_as_text_name_the_option_to_give(tmp_path: Path) -> None:
    train = _european(tmp_path / "train.csv", "2024-03-01", 96)
    input = _european(tmp_path / "input.csv", "2024-03-05", 24)

    with pytest.raises(DataValidationError) as info:
        _detect_csv(train, input, tmp_path / "out.parquet", delimiter=";")

    assert str(info.value).endswith(
        'sample values ["0,5", "1,5", "2,5", "3,5", "4,5"], at rows [1, 2, 3, 4, 5] of the --train file, counting its '
        "first data row as 1 (ts=2024-03-01T00:00:00Z, région=île; ts=2024-03-01T01:00:00Z, région=île; "
        "ts=2024-03-01T02:00:00Z, région=île; ts=2024-03-01T03:00:00Z, région=île; ts=2024-03-01T04:00:00Z, région=île), "
        "these look like numbers written with a decimal comma (1,5 for 1.5): give --decimal ','"
    )
    assert not (tmp_path / "out.parquet").exists()


def test_numbers_grouped_in_thousands_are_read_with_thousands_and_named_without(tmp_path: Path) -> None:
    def grouped(path: Path, start: str, hours: int) -> str:
        times = pd.date_range(start, periods=hours, freq="h").strftime("%Y-%m-%dT%H:%M:%SZ")
        path.write_text("ts,région,v\n" + "".join(f'{t},île,"{1000 + hour % 5:,}.5"\n' for hour, t in enumerate(times)))
        return str(path)

    train, input = grouped(tmp_path / "train.csv", "2024-03-01", 96), grouped(tmp_path / "input.csv", "2024-03-05", 24)

    with pytest.raises(DataValidationError) as info:
        _detect_csv(train, input, tmp_path / "out.parquet")
    assert str(info.value).endswith(
        "these look like numbers with a comma between thousands (1,234.5 for 1234.5): give --thousands ','"
    )
    scored = _detect_csv(train, input, tmp_path / "out.parquet", thousands=",")
    assert sorted(scored["value"].unique()) == [1000.5, 1001.5, 1002.5, 1003.5, 1004.5]


def test_a_missing_column_lists_the_columns_split_by_the_delimiter(tmp_path: Path) -> None:
    # The hint read the header with ",": one column named after the whole header ('ts;région;v').
    train = _european(tmp_path / "train.csv", "2024-03-01", 96, encoding="latin-1")
    input = _european(tmp_path / "input.csv", "2024-03-05", 24, encoding="latin-1")

    with pytest.raises(DataValidationError, match=re.escape("check --features against its columns (ts, région, v)")):
        detect_files(
            train, input, timestamp="ts", features=["v", "w"], dimensions=[], model="iforest", params={},
            contamination=0.05, output=str(tmp_path / "out.parquet"), delimiter=";", decimal=",", encoding="latin-1",
        )


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"delimiter": ";", "decimal": ";"}, "--delimiter and --decimal are both ';': a number could not be told from two "
         "fields; files with decimal commas usually separate fields with ';' (--delimiter ';' --decimal ',')"),
        ({"delimiter": ";;"}, "--delimiter: must be one character other than a quote or a line break, got ';;'"),
        ({"encoding": "latin-9x"}, "--encoding: unknown text encoding 'latin-9x' (e.g. utf-8, latin-1, cp1252, utf-16)"),
    ],
)
def test_bad_csv_options_name_the_option(tmp_path: Path, options: dict[str, str], message: str) -> None:
    train = _european(tmp_path / "train.csv", "2024-03-01", 96)
    with pytest.raises(ConfigError) as info:
        _detect_csv(train, train, tmp_path / "out.parquet", **options)
    assert str(info.value).startswith(message)
    assert "source" not in str(info.value)


def test_files_whose_suffix_tells_no_format_are_read_with_the_format_given(tmp_path: Path) -> None:
    # detect had no --format, and the reader's advice said to "Set `format`": a .txt or .dat
    # export could only be renamed.
    train = _write(tmp_path / "train.txt", "2024-03-01", 96, aware=True)
    input = _write(tmp_path / "input.dat", "2024-03-05", 24, aware=True)

    with pytest.raises(SourceConfigError) as info:
        _detect(train, input, tmp_path / "out.parquet")
    assert "cannot tell the format from the file suffixes ['.txt']. Give --format csv, jsonl, json or parquet, or name" in str(info.value)
    assert "`" not in str(info.value)

    scored = detect_files(
        train, input, timestamp="ts", features=["v"], dimensions=[], model="iforest", params={}, contamination=0.05,
        output=str(tmp_path / "out.parquet"), format="csv",
    )
    assert len(scored) == 24
    with pytest.raises(DataValidationError, match=re.escape("no such column: check --features against its columns (ts, v)")):
        detect_files(
            train, input, timestamp="ts", features=["v", "w"], dimensions=[], model="iforest", params={}, contamination=0.05,
            output=str(tmp_path / "never.parquet"), format="csv",
        )


@pytest.mark.parametrize(
    ("make_train", "advice"),
    [
        (lambda tmp_path: str(tmp_path / "none-*.csv"), "no file matches the pattern. Check the --train path."),
        (
            lambda tmp_path: pd.read_csv(_write(tmp_path / "t.csv", "2024-03-01", 96, aware=True)).to_pickle(tmp_path / "t.pkl")
            or str(tmp_path / "t.pkl"),
            "holds pickle files, and unpickling runs arbitrary code: convert the data to Parquet",
        ),
        (
            lambda tmp_path: _write(tmp_path / "t.parquet", "2024-03-01", 96, aware=True),
            "Check that the file is complete; if its suffix misleads, give --format.",
        ),
    ],
    ids=["glob-nothing", "pickle", "csv-named-parquet"],
)
def test_the_readers_advice_names_detects_options_not_a_job_files(tmp_path: Path, make_train, advice: str) -> None:
    # Only the delimiter's and the encoding's advice were reworded (by regular expressions); the
    # others named `path`, `format` and `allow_pickle: true`, which detect has no way to set.
    input = _write(tmp_path / "input.csv", "2024-03-05", 24, aware=True)

    with pytest.raises(PipelineError) as info:
        _detect(make_train(tmp_path), input, tmp_path / "out.parquet")

    assert advice in str(info.value)
    assert "`" not in str(info.value) and "job file" not in str(info.value)
    assert not (tmp_path / "out.parquet").exists()


def test_format_pickle_is_refused_naming_the_option(tmp_path: Path) -> None:
    train = _write(tmp_path / "train.csv", "2024-03-01", 96, aware=True)
    with pytest.raises(ConfigError, match=re.escape(
        "--format must be one of csv, jsonl, json, parquet, got 'pickle'; pickles are not read here (unpickling runs "
        "arbitrary code): convert the data to Parquet"
    )):
        detect_files(
            train, train, timestamp="ts", features=["v"], dimensions=[], model="iforest", params={}, contamination=0.05,
            output=str(tmp_path / "out.parquet"), format="pickle",
        )


def test_a_season_longer_than_a_scheduled_windows_half_is_no_configuration_error(tmp_path: Path) -> None:
    # detect's job had the default 28-day training window, and a job file's check that the window
    # holds two seasons refused season 2w, though detect reads the files, not a window.
    train = _european(tmp_path / "train.csv", "2024-03-01", 96)
    input = _european(tmp_path / "input.csv", "2024-03-05", 24)

    scored = detect_files(
        train, input, timestamp="ts", features=["v"], dimensions=["région"], model="seasonal_mad",
        params={"season": "2w"}, contamination=0.05, output=str(tmp_path / "out.parquet"), delimiter=";", decimal=",",
    )

    assert len(scored) == 24


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"model": "nosuch"}, "  --model: unknown model kind 'nosuch'; choose one of"),
        ({"params": {"season": "abc"}}, "  --params: invalid parameters for model 'seasonal_mad': params.season: 'abc' is not a duration"),
        ({"contamination": 0.0}, "  --contamination: contamination must be in (0, 0.5], got 0.0"),
        ({"dimensions": ["job"]}, "  --dimensions: dimensions ['job'] share their names with columns of the output"),
    ],
)
def test_invalid_options_are_named_as_options_not_as_a_job_files_fields(tmp_path: Path, options: dict, expected: str) -> None:
    # The job built from the options was checked as a job file: "detect: invalid job configuration /
    # model: unknown model kind", "threshold: contamination must be ...", fields the user never wrote.
    train = _write(tmp_path / "train.csv", "2024-03-01", 100, aware=True)
    given = {"timestamp": "ts", "features": ["v"], "dimensions": [], "model": "seasonal_mad", "params": {}, "contamination": 0.05}
    with pytest.raises(ConfigError) as info:
        detect_files(train, train, **{**given, **options}, output=str(tmp_path / "out.parquet"))
    assert str(info.value).startswith("invalid detect options:\n")
    assert expected in str(info.value)
    assert "job configuration" not in str(info.value) and not (tmp_path / "out.parquet").exists()
