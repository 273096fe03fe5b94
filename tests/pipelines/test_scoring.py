"""Scoring one series with its champion (pipelines/scoring.py): what the scored rows say about the
model that scored them, and errors that name the job and the series. Publishing over several
sinks is tested in tests/pipelines/sinks/test_publish.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.config import JobConfig, parse_job
from pipelines.errors import DataValidationError, ModelError, SinkError
from pipelines.extraction import extract_chunks
from pipelines.scoring import score_chunk, score_series
from pipelines.training import train_series
from pipelines.workspace import Window, to_utc

TRAIN = Window(to_utc("2024-01-01T00:00:00Z"), to_utc("2024-01-15T00:00:00Z"))
DAY = Window(to_utc("2024-01-15T00:00:00Z"), to_utc("2024-01-16T00:00:00Z"))


@pytest.fixture(autouse=True)
def _private_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANOMALY_PIPELINES_HOME", str(tmp_path / "var"))
    # Scoring reads the job's labels (sqlite:///var/labels.db by default): never the working copy's.
    monkeypatch.setenv("ANOMALY_PIPELINES_BASE_DIR", str(tmp_path))


def make_job(tmp_path: Path, kind: str = "seasonal_mad", features: tuple[str, ...] = ("a", "b"), **params) -> JobConfig:
    return parse_job(
        {
            "name": "scored",
            "source": {"kind": "file", "path": "unused.csv"},
            "timestamp": "timestamp",
            "frequency": "1h",
            "features": list(features),
            "model": {"kind": kind, "params": params},
            "outputs": {"parquet": str(tmp_path / "outputs")},
            "registry": str(tmp_path / "models"),
        }
    )


def hourly(days: int, features: tuple[str, ...] = ("a", "b")) -> pd.DataFrame:
    index = pd.date_range(TRAIN.start, periods=24 * days, freq="h")
    rng = np.random.default_rng(0)
    wave = np.sin(2 * np.pi * index.hour.to_numpy() / 24)
    return pd.DataFrame({f: 50 + 10 * wave + rng.normal(size=len(index)) for f in features}, index=index)


def test_scored_rows_name_the_kind_of_the_model_that_scored_them(tmp_path: Path) -> None:
    # The champion is seasonal_mad; the job file now says iforest (or tuning promoted another
    # kind than the configured one). Until a training replaces it, seasonal_mad scores, and the
    # rows (and the alerts made from them) must say so, not the configured kind.
    trained = train_series(make_job(tmp_path, season="1d"), "all", hourly(14), TRAIN, run_id="train")
    result = score_series(make_job(tmp_path, kind="iforest"), "all", hourly(16), DAY, run_id="predict")
    frame = pd.read_parquet(result.path)
    assert result.model_version == trained.version
    assert set(frame["model"]) == {"seasonal_mad"} and set(frame["model_version"]) == {trained.version}


def test_a_champion_that_cannot_score_the_job_s_features_names_the_job_series_and_version(tmp_path: Path) -> None:
    # A feature was added to the job file after the champion was trained: the detector's own error
    # named no job, series or version, and a predict run scores many series.
    trained = train_series(make_job(tmp_path, season="1d"), "all", hourly(14), TRAIN, run_id="train")
    job = make_job(tmp_path, features=("a", "b", "c"), season="1d")
    with pytest.raises(
        ModelError,
        match=rf"^job scored, series all, window \[2024-01-15T00:00:00\+00:00, .*\): model version {trained.version} "
        r"cannot score: .*extra \['c'\].*retrain",
    ):
        score_series(job, "all", hourly(16, ("a", "b", "c")), DAY, run_id="predict")


def test_a_champion_of_another_frequency_refuses_to_score_naming_the_job_series_version_and_frequencies(tmp_path: Path) -> None:
    # The job file now says 30min: the hourly champion's season, level and lookback count rows,
    # so it scored the new rows without any error, as if each were an hour.
    trained = train_series(make_job(tmp_path, season="1d"), "all", hourly(14), TRAIN, run_id="train")
    job = make_job(tmp_path, season="1d")
    job = job.model_copy(update={"frequency": pd.Timedelta("30min").to_pytimedelta()})
    data = hourly(8).set_axis(pd.date_range("2024-01-12", periods=24 * 8, freq="30min", tz="UTC"))
    with pytest.raises(
        ModelError,
        match=rf"^job scored, series all, window \[2024-01-15T00:00:00\+00:00, .*\): model version {trained.version} "
        r"cannot score: the job's frequency changed \(1h → 30min\) since it was trained.*"
        r"`anomaly-pipelines train scored` to train it on the new grid",
    ):
        score_series(job, "all", data, DAY, run_id="predict")


NEXT_DAY = Window(to_utc("2024-01-16T00:00:00Z"), to_utc("2024-01-17T00:00:00Z"))


def _incident_going_on() -> tuple[pd.DataFrame, pd.Timestamp, pd.Timestamp]:
    """Two days after training: feature a 40 above normal from 06:00 of the first to 05:00 of
    the second (NEXT_DAY), and the start and end of the part before NEXT_DAY."""
    data = hourly(16)
    data.loc[(data.index >= "2024-01-15T06:00Z") & (data.index < "2024-01-16T06:00Z"), "a"] += 40
    return data, pd.Timestamp("2024-01-15T06:00Z"), pd.Timestamp("2024-01-15T23:00Z")


@pytest.mark.parametrize(("kind", "params"), [("seasonal_mad", {"season": "1d"}), ("context", {})])
def test_a_confirmed_incident_in_the_history_is_not_taken_as_normal_when_it_goes_on(tmp_path: Path, kind, params) -> None:
    # The history before the window (seasonal_mad's level, context's memory continued since
    # training) held an incident people had confirmed: read as normal, the same incident going on
    # in the window was not flagged. Its values are left out of the history, as training leaves them out.
    from pipelines.labels import label_store

    job = make_job(tmp_path, kind=kind, **params)
    train_series(job, "all", hourly(14), TRAIN, run_id="train")
    data, start, end = _incident_going_on()
    going_on = data.loc[NEXT_DAY.start : "2024-01-16T05:00Z"].index

    def scored(run_id: str):
        result = score_series(job, "all", data, NEXT_DAY, run_id=run_id)
        frame = pd.read_parquet(result.path).set_index(["feature", "timestamp"]).loc["a"].loc[going_on]
        return result, frame

    unlabeled, before = scored("unlabeled")
    assert unlabeled.history_masking == {"rows": 0, "values": 0}
    label_store(job).add(job.name, "all", start.to_pydatetime(), end.to_pydatetime(), True, value_min=0, value_max=200)
    labeled, after = scored("labeled")
    assert after["is_anomaly"].sum() > before["is_anomaly"].sum() and after["score"].sum() > before["score"].sum()
    assert after["value"].equals(before["value"])  # the window's own rows are scored and published as they are
    assert labeled.history_masking == {
        "rows": 18, "values": 36, "by_feature": {"a": 18, "b": 18},
        "reason": "inside people's true anomaly labels: left out of the history the model reads before the window",
    }


def test_labels_that_cannot_be_read_stop_scoring_with_the_job_series_and_window(tmp_path: Path) -> None:
    job = make_job(tmp_path)
    train_series(job, "all", hourly(14), TRAIN, run_id="train")
    (tmp_path / "labels.db").write_text("not a database")
    connection = job.labels.connection.model_copy(update={"url": f"sqlite:///{tmp_path}/labels.db"})
    job = job.model_copy(update={"labels": job.labels.model_copy(update={"connection": connection})})
    with pytest.raises(
        SinkError,
        match=r"^job scored, series all, window \[2024-01-15T00:00:00\+00:00, .*\): cannot read people's labels of the history rows "
        r"before the window \(.*\); nothing was scored: rerun the interval",
    ):
        score_series(job, "all", hourly(16), DAY, run_id="predict")


def regional(hours: int) -> pd.DataFrame:
    """A one-off input as read from CSV: ``hours`` hours of the series eu and us, time-ordered."""
    index = pd.date_range(TRAIN.start, periods=hours, freq="h").strftime("%Y-%m-%dT%H:%M:%SZ")
    return pd.DataFrame(
        {"timestamp": index.repeat(2), "region": ["eu", "us"] * hours, "a": np.arange(2 * hours, dtype=float), "b": 1.0}
    ).astype(object)


@pytest.mark.parametrize(
    ("dimensions", "row", "column", "value", "expected"),
    [
        # Chunk 3 holds rows 21-30 of the file: file row 24 is its 4th row, and was named "row 3".
        (["region"], 24, "a", "slow", r'sample values \["slow"\], at rows \[24\] of the input file, counting its first data row as 1'),
        (["region"], 27, "b", None, r"not_be_null on b, 1 unexpected, sample values \[null\], at rows \[27\] of the input file"),
        # Row 25 repeats row 23 (eu at 11:00); the duplicate's detail names the rows too.
        (
            ["region"], 25, "timestamp", "2024-01-01T11:00:00Z",
            r"at rows \[23, 25\] of the input file.*\(UTC: 2024-01-01 11:00:00\+00:00 at rows \[23, 25\]\)",
        ),
        # The file lacks the dimension column, so the manifest could not count the chunks' rows by series.
        (["site"], 24, "a", "slow", r'sample values \["slow"\], at rows \[24\] of the input file'),
    ],
    ids=["text-feature", "null-feature", "duplicate", "missing-dimension"],
)
def test_a_bad_row_in_a_later_chunk_is_named_by_its_row_in_the_file(
    tmp_path: Path, dimensions, row, column, value, expected
) -> None:
    # Each chunk is validated alone: its rows were numbered from 0 within the chunk, so the error
    # sent the user to the wrong row of the file. Rows are counted as extraction's errors count them.
    job = make_job(tmp_path).model_copy(update={"dimensions": dimensions})
    frame = regional(20)
    frame.loc[row - 1, column] = value
    frame.to_csv(tmp_path / "input.csv", index=False)
    extracted = extract_chunks(job, run_id="one-off", input_path=str(tmp_path / "input.csv"), chunk_rows=10)

    with pytest.raises(DataValidationError, match=expected):
        score_chunk(job, extracted.window, run_id="one-off", index=2, chunk_paths=extracted.paths, read_from=extracted.read_from)


def test_a_bad_chunk_is_named_by_its_file_and_rows_and_the_advice_is_to_score_the_file_again(tmp_path: Path) -> None:
    # A chunk's failure said "validation of 10 rows in window <the whole file's span>", rows "of
    # the input file" without naming it, and ended "re-run the interval": a one-off has none.
    job = make_job(tmp_path).model_copy(update={"dimensions": ["region"]})
    frame = regional(20)
    frame.loc[23, "a"] = "slow"
    frame.to_csv(tmp_path / "input.csv", index=False)
    extracted = extract_chunks(job, run_id="one-off", input_path=str(tmp_path / "input.csv"), chunk_rows=10)

    with pytest.raises(DataValidationError) as failure:
        score_chunk(job, extracted.window, run_id="one-off", index=2, chunk_paths=extracted.paths, read_from=extracted.read_from)
    message = str(failure.value)
    assert message.startswith(
        f"job scored: validation of rows 21 to 30 of input file {str(tmp_path / 'input.csv')!r} (chunk 3 of 4) failed 1 of "
    )
    assert message.endswith(
        "/chunk2; fix the input file (or the job's validation settings) and score it again (predict --input, or a predict "
        "run with `input`). No output was written."
    )
    assert "window" not in message and "interval" not in message
    assert failure.value.report["batch"] == f"rows 21 to 30 of input file {str(tmp_path / 'input.csv')!r} (chunk 3 of 4)"
