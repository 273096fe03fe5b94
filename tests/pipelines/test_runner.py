"""Whole runs through the library (what the tasks chain), and the bad inputs that must stop them.

Every bad input must give a clear error naming the job and what is wrong, write nothing to the
outputs, and leave the serving models as they were.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from pipelines.config import get_job, load_job_file
from pipelines.errors import ConfigError, DataValidationError, ModelError, SourceError
from pipelines.runner import check_one_off, run_predict, run_score_file, run_train, run_tune
from pipelines.training import registry_for
from pipelines.workspace import Window, Workspace, home, to_utc

TRAIN = Window(to_utc("2024-02-02T00:00:00Z"), to_utc("2024-03-01T00:00:00Z"))
DAY = Window(to_utc("2024-03-03T00:00:00Z"), to_utc("2024-03-04T00:00:00Z"))


@pytest.fixture
def trained(project: Path):
    """demo_web_metrics trained and one day scored, in a private project copy."""
    job = get_job("demo_web_metrics")
    run_train(job, TRAIN, run_id="train-1")
    run_predict(job, DAY, run_id="predict-1")
    return job


def snapshot(job, project: Path) -> dict:
    """Everything a failed run must leave untouched: outputs, SQL rows, champions, versions."""
    outputs = project / "var" / "outputs" / f"job={job.name}"
    files = {
        str(p.relative_to(outputs)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(outputs.rglob("*.parquet"))
    }
    engine = sa.create_engine(f"sqlite:///{project / 'var' / 'anomalies.db'}")
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT count(*), sum(score) FROM anomalies")).one()
    registry = registry_for(job)
    models = {
        s: (registry.champion(job.name, s).version, len(registry.versions(job.name, s)))
        for s in registry.series(job.name)
    }
    return {"files": files, "rows": tuple(rows), "models": models}


def test_train_then_predict_writes_labeled_rows(trained, project):
    job = trained
    frame = pd.read_parquet(project / "var" / "outputs" / f"job={job.name}")
    assert len(frame) == 3 * 24 * 2  # regions x hours x features
    assert set(frame["series"]) == {"region=eu", "region=us", "region=apac"}
    assert frame["timestamp"].min() == pd.Timestamp(DAY.start) and frame["timestamp"].max() < pd.Timestamp(DAY.end)
    # The eu traffic spike of 2024-03-03 14:00-17:00 is found, with the expected value well below it.
    spike = frame[(frame["series"] == "region=eu") & (frame["feature"] == "requests") & frame["is_anomaly"]]
    assert {14, 15, 16} <= set(spike["timestamp"].dt.hour)
    assert (spike["value"] > spike["upper"]).all() and (spike["expected"] < spike["value"]).all()
    quiet = frame[frame["series"] != "region=eu"]
    assert quiet["is_anomaly"].mean() < 0.03
    assert snapshot(job, project)["rows"][0] == len(frame)


def test_predicting_the_same_interval_twice_replaces_rows(trained, project):
    job = trained
    before = snapshot(job, project)
    run_predict(job, DAY, run_id="predict-2")
    after = snapshot(job, project)
    assert after["rows"][0] == before["rows"][0] == 144
    assert after["models"] == before["models"]


@pytest.mark.parametrize("chunk_rows", [1000, 7])
def test_one_off_scoring_of_a_file_in_chunks(trained, project, tmp_path, chunk_rows):
    data = pd.read_csv(project / "data" / "demo" / "web_metrics.csv")
    data[data["timestamp"].str.startswith("2024-03-05")].to_csv(tmp_path / "new.csv", index=False)
    before = snapshot(trained, project)
    result = run_score_file(
        trained, str(tmp_path / "new.csv"), run_id=f"one-off-{chunk_rows}", output=str(tmp_path / "scored.parquet"), chunk_rows=chunk_rows
    )
    scored = pd.read_parquet(tmp_path / "scored.parquet")
    assert len(scored) == result.rows == 3 * 24 * 2
    assert result.rows_per_series == {"region=apac": 24, "region=eu": 24, "region=us": 24}
    assert result.anomalies["region=us"] > 0  # the latency shift of 2024-03-05 09:00
    assert snapshot(trained, project) == before  # the job's own outputs are not touched


def test_chunked_scoring_matches_scoring_in_one_piece(trained, project, tmp_path):
    # With the previous chunk's tail as history, chunks of 7 rows score as one chunk does.
    data = pd.read_csv(project / "data" / "demo" / "web_metrics.csv")
    data[data["timestamp"].str.startswith("2024-03-05")].to_csv(tmp_path / "new.csv", index=False)
    scores = {}
    for rows in (1000, 7):
        out = tmp_path / f"scored-{rows}.parquet"
        run_score_file(trained, str(tmp_path / "new.csv"), run_id=f"cmp-{rows}", output=str(out), chunk_rows=rows)
        frame = pd.read_parquet(out).sort_values(["series", "timestamp", "feature"]).reset_index(drop=True)
        scores[rows] = frame[["series", "timestamp", "feature", "expected", "score", "is_anomaly"]]
    pd.testing.assert_frame_equal(scores[1000], scores[7])


def test_each_chunk_of_a_mapped_one_off_run_says_how_far_the_whole_run_is(trained, project, tmp_path, caplog):
    # On Airflow each chunk is its own task, and its log said only "chunk 3 of 40 scored".
    from datetime import UTC, datetime, timedelta

    from pipelines.extraction import extract_chunks
    from pipelines.runner import log_score_run_progress
    from pipelines.scoring import score_chunk

    data = pd.read_csv(project / "data" / "demo" / "web_metrics.csv")
    data[data["timestamp"].str.startswith("2024-03-05")].to_csv(tmp_path / "new.csv", index=False)
    extracted = extract_chunks(trained, run_id="mapped", input_path=str(tmp_path / "new.csv"), chunk_rows=18)
    assert len(extracted.paths) == 4 and extracted.rows == 72
    assert log_score_run_progress(trained, run_id="mapped", chunk_paths=extracted.paths, total_rows=extracted.rows, split_at=extracted.split_at) is None
    assert log_score_run_progress(trained, run_id="mapped", chunk_paths=extracted.paths, total_rows=extracted.rows, split_at=None) is None
    # Chunks finish in any order, as mapped tasks do; 10 s after the split, two of four are done.
    for index in (2, 0):
        score_chunk(trained, extracted.window, run_id="mapped", index=index, chunk_paths=extracted.paths, read_from=extracted.read_from)
    ten_seconds_ago = (datetime.now(UTC) - timedelta(seconds=10)).isoformat()
    with caplog.at_level("INFO", logger="pipelines.runner"):
        line = log_score_run_progress(trained, run_id="mapped", chunk_paths=extracted.paths, total_rows=extracted.rows, split_at=ten_seconds_ago)
    assert line in caplog.text
    assert line.startswith("job demo_web_metrics: the run has scored 2 of 4 chunks, 36 of 72 input rows (50%) in 10s since the split, 4 rows/s")
    assert line.endswith("; about 10s left")
    for index in (1, 3):
        score_chunk(trained, extracted.window, run_id="mapped", index=index, chunk_paths=extracted.paths, read_from=extracted.read_from)
    line = log_score_run_progress(trained, run_id="mapped", chunk_paths=extracted.paths, total_rows=extracted.rows, split_at=ten_seconds_ago)
    assert "scored 4 of 4 chunks, 72 of 72 input rows (100%)" in line and line.endswith("; all scored")
    # A workspace it cannot read costs the line, never the chunk's task.
    Path(Workspace(trained.name, "mapped", "score").chunk_manifest).write_text("{not json")
    with caplog.at_level("WARNING", logger="pipelines.runner"):
        assert log_score_run_progress(trained, run_id="mapped", chunk_paths=extracted.paths, total_rows=extracted.rows, split_at=ten_seconds_ago) is None
    assert "job demo_web_metrics: cannot tell how far run mapped is" in caplog.text


def test_one_off_scoring_stops_on_a_bad_chunk_and_writes_no_output(trained, project, tmp_path):
    data = pd.read_csv(project / "data" / "demo" / "web_metrics.csv", dtype=object)
    data = data[data["timestamp"].str.startswith("2024-03-05")].copy()
    data.iloc[50, data.columns.get_loc("latency_ms")] = "slow"
    data.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataValidationError, match='latency_ms.*"slow"') as failure:
        run_score_file(trained, str(tmp_path / "bad.csv"), run_id="bad-one-off", output=str(tmp_path / "out.parquet"), chunk_rows=20)
    assert not (tmp_path / "out.parquet").exists()
    # The error names the file and the chunk's rows in it (it said "32 rows in window <the file's
    # span>" and rows "of the input file"), says to score the file again (not "re-run the
    # interval"), and the demo suite's range check on latency_ms says why it could not run (it
    # gave GX's "Column values, min_value, and max_value must either be None or of the same type").
    lines = str(failure.value).splitlines()
    bad = str(tmp_path / "bad.csv")
    assert lines[0].startswith(f"job demo_web_metrics: validation of rows 41 to 60 of input file {bad!r} (chunk 3 of 4) failed 2 of ")
    typed, between = "  - expect_column_values_to_be_in_type_list on latency_ms", "  - expect_column_values_to_be_between on latency_ms"
    assert any(line.startswith(typed) and "at rows [51] of the input file" in line for line in lines)
    assert any(line.startswith(f"{between}, not checked: latency_ms holds values that are not numbers") for line in lines)
    assert lines[-1].endswith(
        "fix the input file (or the job's validation settings) and score it again (predict --input, or a predict run "
        "with `input`). No output was written."
    )


def _write_job(project: Path, name: str, **changes) -> Path:
    path = project / "config" / "jobs" / "demo_web_metrics.yaml"
    data = yaml.safe_load(path.read_text())
    data.update(changes)
    path.write_text(yaml.safe_dump(data))
    return path


def _bad_csv(project: Path, mutate) -> str:
    frame = pd.read_csv(project / "data" / "demo" / "web_metrics.csv", dtype=object)
    frame = mutate(frame)
    path = project / "bad.csv"
    frame.to_csv(path, index=False)
    return str(path)


def _in_day(frame: pd.DataFrame) -> pd.Series:
    return frame["timestamp"].str.startswith("2024-03-03T05")


BAD_DATA = {
    "missing column": (lambda f: f.drop(columns=["latency_ms"]), DataValidationError, ["expect_column_to_exist", "latency_ms"]),
    "non-numeric feature": (
        lambda f: f.assign(requests=f["requests"].mask(_in_day(f), "twelve")),
        DataValidationError,
        ["requests", '"twelve"'],
    ),
    "duplicate timestamps": (
        lambda f: pd.concat([f, f[_in_day(f) & (f["region"] == "eu")]]),
        DataValidationError,
        ["expect_compound_columns_to_be_unique", "timestamp, region"],
    ),
    "unparseable timestamps": (
        lambda f: f.assign(timestamp=f["timestamp"].mask(_in_day(f) & (f["region"] == "us"), "yesterday-ish")),
        DataValidationError,
        ["timestamp", '"yesterday-ish"'],
    ),
    "NaN over the allowed share": (
        lambda f: f.assign(latency_ms=f["latency_ms"].mask(f["timestamp"].str.startswith("2024-03-03T0"), None)),
        DataValidationError,
        ["expect_column_values_to_not_be_null", "latency_ms"],
    ),
    "infinite values": (
        lambda f: f.assign(latency_ms=f["latency_ms"].mask(_in_day(f), "inf")),
        DataValidationError,
        ["latency_ms", "inf"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_data_stops_the_run_and_writes_nothing(trained, project, case):
    mutate, error, fragments = BAD_DATA[case]
    path = _bad_csv(project, mutate)
    job = load_job_file(_write_job(project, "demo_web_metrics", source={"kind": "file", "path": path, "format": "csv"}))
    before = snapshot(job, project)
    with pytest.raises(error) as info:
        run_predict(job, DAY, run_id=f"bad-{case}")
    message = str(info.value)
    assert message.startswith("job demo_web_metrics: validation of")
    for fragment in fragments:
        assert fragment in message
    assert "The rejected batch is kept at" in message
    assert (Path(info.value.quarantine_path) / "batch.parquet").exists()
    assert snapshot(job, project) == before
    # Training on the same bad batch fails the same way and leaves the champions serving.
    with pytest.raises(error):
        run_train(job, Window(TRAIN.start, DAY.end), run_id=f"bad-train-{case}")
    assert snapshot(job, project) == before


BAD_SOURCES = {
    "empty window": ({}, Window(to_utc("2031-01-01T00:00:00Z"), to_utc("2031-01-02T00:00:00Z")), "has no rows in window"),
    "missing file": ({"source": {"kind": "file", "path": "data/demo/nope.csv"}}, DAY, "nope.csv"),
    "wrong file format": ({"source": {"kind": "file", "path": "data/demo/web_metrics.csv", "format": "parquet"}}, DAY, "parquet"),
    "SQL error": (
        {
            "source": {
                "kind": "sql",
                "connection": {"url": "sqlite:///var/anomalies.db"},
                "query": "SELECT * FROM no_such_table WHERE timestamp >= :start AND timestamp < :end",
            }
        },
        DAY,
        "no_such_table",
    ),
}


@pytest.mark.parametrize("case", list(BAD_SOURCES))
def test_unreadable_sources_give_clear_errors_and_write_nothing(trained, project, case):
    changes, window, fragment = BAD_SOURCES[case]
    job = load_job_file(_write_job(project, "demo_web_metrics", **changes))
    before = snapshot(job, project)
    with pytest.raises(SourceError) as info:
        run_predict(job, window, run_id=f"bad-{case}")
    message = str(info.value)
    assert "demo_web_metrics" in message and fragment in message
    assert snapshot(job, project) == before


@pytest.mark.parametrize(
    ("changes", "fragment"),
    [
        ({"model": {"kind": "deep_magic"}}, "unknown model kind 'deep_magic'"),
        ({"schedules": {"predict": "0 25 * * *"}}, "schedules.predict: '0 25 * * *' is not a valid cron expression"),
        ({"outputz": {}}, "outputz: unknown field"),
    ],
)
def test_bad_configuration_is_rejected_before_anything_runs(trained, project, changes, fragment):
    before = snapshot(trained, project)
    path = _write_job(project, "demo_web_metrics", **changes)
    with pytest.raises(ConfigError) as info:
        load_job_file(path)
    assert str(path) in str(info.value) and fragment in str(info.value)
    assert snapshot(trained, project) == before


def test_failed_runs_leave_no_work_files(trained, project):
    job = load_job_file(_write_job(project, "demo_web_metrics", source={"kind": "file", "path": "missing.csv"}))
    with pytest.raises(SourceError):
        run_predict(job, DAY, run_id="bad-missing")
    assert not any((home() / "work").rglob("*.parquet"))


def test_tune_writes_params_that_the_next_training_uses(project):
    job = get_job("demo_web_metrics").model_copy(
        update={"tune": get_job("demo_web_metrics").tune.model_copy(update={"grid": {"level_window": [6, 48]}})}
    )
    results = run_tune(job, TRAIN, run_id="tune-1")
    assert {r["series"] for r in results} == {"region=eu", "region=us", "region=apac"}
    assert all(r["trials"] == 2 for r in results)
    registry = registry_for(job)
    run_train(job, TRAIN, run_id="train-after-tune")
    for result in results:
        tuned = registry.tuned_params(job.name, result["series"])
        assert tuned == result["params"] and tuned["level_window"] in (6, 48)
        champion = registry.champion(job.name, result["series"])
        assert champion.metadata["tuned_params"] == tuned
        assert champion.metadata["params"]["level_window"] == tuned["level_window"]


def test_dimension_values_holding_the_key_separators_train_and_score(project):
    # "," and "=" separate a series key's parts: a value holding them must still name one
    # series that parses back to its own value when scored.
    odd = "eu, 50% west=1"
    frame = pd.read_csv(project / "data" / "demo" / "web_metrics.csv", dtype=object)
    frame["region"] = frame["region"].replace({"eu": odd})
    frame.to_csv(project / "odd.csv", index=False)
    suite = project / "config" / "expectations" / "demo_web_metrics.json"
    suite.write_text(suite.read_text().replace('"eu"', json.dumps(odd)))
    job = load_job_file(_write_job(project, "demo_web_metrics", source={"kind": "file", "path": str(project / "odd.csv")}))
    trained = run_train(job, TRAIN, run_id="train-odd")
    assert sorted(t["series"] for t in trained) == ["region=apac", "region=eu%2C 50%25 west%3D1", "region=us"]
    for attempt in ("predict-odd-1", "predict-odd-2"):
        run_predict(job, DAY, run_id=attempt)
    out = pd.read_parquet(project / "var" / "outputs" / f"job={job.name}")
    assert len(out) == 3 * 24 * 2  # the second run replaced the first's rows
    assert dict(zip(out["series"], out["region"])) == {"region=apac": "apac", "region=eu%2C 50%25 west%3D1": odd, "region=us": "us"}


def test_publishing_a_one_off_run_into_a_folder_is_a_configuration_error(trained, project, tmp_path):
    # The DAG's publish gets `output` from the run's conf: a folder there failed on the final move
    # with IsADirectoryError, which Airflow retried as if it could pass.
    from pipelines.extraction import extract_chunks
    from pipelines.scoring import publish_file, score_chunk

    extracted = extract_chunks(trained, run_id="to-folder", input_path=str(project / "data" / "demo" / "web_metrics.csv"), chunk_rows=10_000)
    part = score_chunk(
        trained, extracted.window, run_id="to-folder", index=0, chunk_paths=extracted.paths, read_from=extracted.read_from
    )["path"]
    (tmp_path / "out").mkdir()
    with pytest.raises(ConfigError, match=r"job demo_web_metrics: output '.*/out' is a folder: give the path of the Parquet file"):
        publish_file(trained, extracted.window, [part], str(tmp_path / "out"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"input_path": None, "output": "scored.parquet"}, r"output 'scored.parquet' goes with input \(one-off scoring\)"),
        ({"start": "2024-03-01"}, r"input 'in.csv' is scored whole: leave out start and end"),
        ({"chunk_rows": 0}, r"chunk_rows must be a positive number of rows up to 10,000,000 \(a task reads its chunk whole\), got 0"),
        ({"output": "{folder}"}, r"job demo_web_metrics: output '.*/out' is a folder: give the path of the Parquet file"),
        # The input resolves against the project root: the same file, however each is spelt.
        ({"output": "{base}/in.csv"}, r"output '.*/in.csv' is the input file \('in.csv'\): writing the scores there would replace"),
        ({"input_path": "batches/*.csv", "output": "{base}/batches/b.csv"}, r"output '.*/batches/b.csv' is the input file"),
        # Read as the job's published scores: every row it covered was there twice.
        (
            {"output": "{base}/var/outputs/job=demo_web_metrics/scored.parquet"},
            r"output '.*/job=demo_web_metrics/scored.parquet' is inside the Parquet dataset of the job's outputs",
        ),
        # A configuration error, which the DAG fails at once: as a source error it took both retries.
        ({"input_path": "inn.csv"}, r"input 'inn.csv' \(.*/inn.csv\): no such file or folder. Check the input path"),
        # A run's conf naming a csv output got Parquet bytes under that name.
        ({"output": "{base}/scores.csv"}, r"output '.*/scores.csv' names a csv file, but the scores are written as Parquet"),
    ],
    ids=[
        "output-without-input", "window-with-input", "chunk-rows", "output-folder", "output-is-input", "output-in-input-glob",
        "output-in-the-dataset", "missing-input", "output-named-csv",
    ],
)
def test_bad_one_off_arguments_are_refused_before_any_work(project, tmp_path, args, message):
    # The predict DAG's extract checks its conf with this: an output folder was found by publish,
    # after every chunk was scored; an output without input, or a window beside it, was ignored.
    (tmp_path / "out").mkdir()
    (project / "in.csv").touch()
    given = {"input_path": "in.csv", "output": None, "chunk_rows": 1000, **args}
    given["output"] = given["output"] and given["output"].replace("{folder}", str(tmp_path / "out")).replace("{base}", str(project))
    with pytest.raises(ConfigError, match=message):
        check_one_off(get_job("demo_web_metrics"), **given)
    check_one_off(get_job("demo_web_metrics"), input_path="in.csv", output=str(tmp_path / "out" / "s.parquet"), chunk_rows=1000)
    check_one_off(get_job("demo_web_metrics"), input_path="batches/*.csv", output=str(project / "batches.parquet"), chunk_rows=1000)
    # Beside the dataset's partitions, in a folder Parquet readers skip, as the default _one_off/ is.
    check_one_off(get_job("demo_web_metrics"), input_path="in.csv", output=str(project / "var/outputs/_mine/s.parquet"), chunk_rows=1000)
    check_one_off(get_job("demo_web_metrics"), input_path=None, output=None, chunk_rows=1000, start="2024-03-01")


def test_a_sensor_that_never_reported_stops_the_run_naming_the_setting_that_lets_mset_watch_the_others(project):
    # latency_ms has no value in any row: validation stops the run, naming the share and the setting;
    # with the setting raised, mset trains on the signal left and records why it left latency_ms out.
    frame = pd.read_csv(project / "data" / "demo" / "web_metrics.csv", dtype=object)
    frame.assign(latency_ms=None).to_csv(project / "dead_sensor.csv", index=False)
    changes = {"source": {"kind": "file", "path": str(project / "dead_sensor.csv")}, "model": {"kind": "mset"}}
    job = load_job_file(_write_job(project, "demo_web_metrics", **changes))
    with pytest.raises(
        DataValidationError,
        match=r"expect_column_values_to_not_be_null on latency_ms, .*no row has a value of latency_ms: the job allows at "
        r"most 1\.0% \(validation.max_null_fraction\); .*raise validation.max_null_fraction in the job file",
    ):
        run_train(job, TRAIN, run_id="train-dead-sensor")
    assert registry_for(job).series(job.name) == []

    written = yaml.safe_load((project / "config" / "jobs" / "demo_web_metrics.yaml").read_text())
    validation = {**written["validation"], "max_null_fraction": 1.0}
    job = load_job_file(_write_job(project, "demo_web_metrics", **changes, validation=validation))
    run_train(job, TRAIN, run_id="train-dead-sensor-allowed")
    registry = registry_for(job)
    assert registry.series(job.name) == ["region=apac", "region=eu", "region=us"]
    for series in registry.series(job.name):
        detector = registry.champion(job.name, series).metadata["detector"]
        assert detector["signals"] == ["requests"]
        assert detector["dropped_signals"] == {"latency_ms": "missing in 100% of training rows (more than max_missing 50%)"}


def _job_with_a_new_region(project, region: str, when: str):
    """demo_web_metrics over its data plus a copy of region eu's rows whose time starts with
    ``when``, as ``region`` (which its expectation suite allows)."""
    frame = pd.read_csv(project / "data" / "demo" / "web_metrics.csv", dtype=object)
    new = frame[(frame["region"] == "eu") & frame["timestamp"].str.startswith(when)].assign(region=region)
    pd.concat([frame, new]).to_csv(project / "new_region.csv", index=False)
    suite = project / "config" / "expectations" / "demo_web_metrics.json"
    suite.write_text(suite.read_text().replace('["eu", "us", "apac"]', f'["eu", "us", "apac", "{region}"]'))
    return load_job_file(_write_job(project, "demo_web_metrics", source={"kind": "file", "path": str(project / "new_region.csv")}))


def test_a_series_without_a_model_is_named_and_the_others_are_published(project):
    # A region that first appears after the last training has no model: the other regions are
    # still scored and published, the new one is named, and monitoring asks for a training once.
    from pipelines.monitoring import monitor_window, read_request

    job = _job_with_a_new_region(project, "sa", "2024-03-03")
    run_train(job, TRAIN, run_id="train-before-sa")

    result = run_predict(job, DAY, run_id="predict-with-sa")
    assert list(result.unscored) == ["region=sa"] and "no champion model is serving" in result.unscored["region=sa"]
    assert sorted(result.rows_per_series) == ["region=apac", "region=eu", "region=us"]
    out = pd.read_parquet(project / "var" / "outputs" / f"job={job.name}")
    assert set(out["series"]) == {"region=apac", "region=eu", "region=us"} and len(out) == 3 * 24 * 2

    first = monitor_window(job, DAY, run_id="predict-with-sa", unscored=result.unscored)
    assert first.due and "series region=sa: no model yet, so its rows were not scored" in first.reasons
    assert read_request(job, "region=sa")["model_version"] is None
    again = monitor_window(job, DAY, run_id="predict-with-sa-2", unscored=result.unscored)
    assert not any("region=sa" in reason for reason in again.reasons)  # asked once, not at every run


def test_a_series_too_short_to_train_fails_the_run_after_the_others_are_trained(project):
    # A region that appeared two days before the end of the training window ("af", sorted first)
    # has too few rows for its model. It stopped the run before any region was trained; the DAG's
    # mapped tasks train every other region, and so must the CLI's run.
    job = _job_with_a_new_region(project, "af", "2024-02-28T0")
    with pytest.raises(
        ModelError,
        match=r"^job demo_web_metrics: train failed for 1 of 4 series \(region=af\): job demo_web_metrics, series region=af, "
        r"training window .*got 8\. Widen the training window or wait for more data\. "
        r"The other series were trained: region=apac, region=eu, region=us$",
    ) as caught:
        run_train(job, TRAIN, run_id="train-with-af")
    assert [result["series"] for result in caught.value.completed] == ["region=apac", "region=eu", "region=us"]
    registry = registry_for(job)
    assert registry.series(job.name) == ["region=apac", "region=eu", "region=us"]
    assert all(registry.champion(job.name, s) is not None for s in registry.series(job.name))
    assert not (home() / "work" / job.name / "train-with-af").exists()


def test_predicting_before_the_first_training_says_to_train(project):
    # One hour has 3 rows: without models no history is read, and the job's min_rows of 24 failed
    # validation, quarantining a good batch and telling people to fix the source data.
    job = get_job("demo_web_metrics")
    hour = Window(to_utc("2024-03-03T05:00:00Z"), to_utc("2024-03-03T06:00:00Z"))
    train_first = r"^job demo_web_metrics: no champion model is serving for any series .*`anomaly-pipelines train demo_web_metrics` first"
    with pytest.raises(ModelError, match=train_first):
        run_predict(job, hour, run_id="predict-untrained")
    assert not (home() / "quarantine").exists() and not (home() / "work" / job.name / "predict-untrained").exists()


def test_the_cli_prints_what_the_other_series_got_when_one_fails(project, capsys):
    # It exited 2 with an empty stdout: the versions the other series got were lost to scripts.
    from pipelines.cli import main

    _job_with_a_new_region(project, "af", "2024-02-28T0")
    assert main(["train", "demo_web_metrics", "--end", TRAIN.end.isoformat()]) == 2
    out, err = capsys.readouterr()
    assert [result["series"] for result in json.loads(out)] == ["region=apac", "region=eu", "region=us"]
    assert "job demo_web_metrics: trained 3 series" in err and "train failed for 1 of 4 series (region=af)" in err


def test_series_failing_for_want_of_an_optional_package_are_each_named_as_that_error(project):
    # MissingDependencyError is built from (package, extra, purpose), not from a message: combining
    # several series' failures called it with the message alone and crashed with a TypeError.
    from pipelines.errors import MissingDependencyError
    from pipelines.runner import _fit_each

    job = get_job("demo_web_metrics")

    def fit(series: str) -> dict:
        if series == "region=eu":
            return {"series": series}
        raise MissingDependencyError("prophet", "prophet", f"the model of series {series}")

    with pytest.raises(
        MissingDependencyError,
        match=r"^job demo_web_metrics: train failed for 2 of 3 series \(region=apac, region=us\): the model of series "
        r"region=apac needs the optional package 'prophet': pip install .*; the model of series region=us needs .*"
        r"The other series were trained: region=eu$",
    ) as caught:
        _fit_each(job, ["region=apac", "region=eu", "region=us"], fit, "train")
    assert caught.value.completed == [{"series": "region=eu"}]


def test_a_finished_run_sweeps_the_work_folders_runs_left_a_week_ago(project: Path) -> None:
    # A failed run never cleans up: each failed one-off run left a chunked copy of its input in
    # var/work for ever. A week is the time to clear and re-run its failed tasks in Airflow.
    import os
    import time

    from pipelines.runner import ABANDONED_AFTER, cleanup
    from pipelines.workspace import Workspace

    job = get_job("demo_web_metrics")
    folders = {run: Path(Workspace(job.name, run, "predict").root) for run in ("failed-long-ago", "failed-yesterday", "this-run", "running")}
    # A run folder of the layout before purposes (work/<job>/<run>), left by an older version.
    folders["before-purposes"] = Path(Workspace(job.name, "before-purposes").root)
    for folder in folders.values():
        (folder / "chunks").mkdir(parents=True)
        (folder / "chunks" / "raw-000000.parquet").write_bytes(b"x")
    schema = Path(home()) / "work" / job.name / "source-schema-abc.json"
    schema.write_text("{}")
    now = time.time()
    long_ago = now - ABANDONED_AFTER.total_seconds() - 3600
    old = [folders[run] / part for run in ("failed-long-ago", "before-purposes") for part in ("", "chunks", "chunks/raw-000000.parquet")]
    for path in (*old, folders["running"], folders["running"] / "chunks", schema):
        os.utime(path, (long_ago, long_ago))
    # A run still writing: its top folders are old, a file deep inside is fresh.
    (folders["running"] / "chunks" / "raw-000001.parquet").write_bytes(b"x")
    os.utime(folders["running"] / "chunks", (long_ago, long_ago))

    assert cleanup(job, "this-run", purpose="predict") == ["failed-long-ago", "before-purposes"]

    assert [run for run, folder in folders.items() if folder.exists()] == ["failed-yesterday", "running"]
    assert schema.exists()


def test_a_successful_retry_of_a_run_clears_the_quarantine_its_failed_attempt_left(project: Path, tmp_path: Path) -> None:
    """The failed attempt's rejected batch stayed after the same run (an Airflow retry, a cleared
    task: one run id) validated the fixed source and succeeded, sending people to fix fixed data."""
    import shutil

    good = project / "data" / "demo" / "web_metrics.csv"
    source = tmp_path / "source.csv"
    in_train = lambda f: f["timestamp"].str.startswith("2024-02-10T05")  # noqa: E731
    shutil.copy(_bad_csv(project, lambda f: f.assign(requests=f["requests"].mask(in_train(f), "twelve"))), source)
    job = load_job_file(_write_job(project, "demo_web_metrics", source={"kind": "file", "path": str(source), "format": "csv"}))
    with pytest.raises(DataValidationError) as failed:
        run_train(job, TRAIN, run_id="scheduled__2024-03-01")
    kept = Path(failed.value.quarantine_path)
    assert (kept / "batch.parquet").exists()
    other = home() / "quarantine" / job.name / "scheduled__2024-02-01"  # another run's: not this run's to clear
    shutil.copytree(kept, other)

    # A failed retry keeps it.
    with pytest.raises(DataValidationError):
        run_train(job, TRAIN, run_id="scheduled__2024-03-01")
    assert (kept / "batch.parquet").exists()

    shutil.copy(good, source)
    [*results] = run_train(job, TRAIN, run_id="scheduled__2024-03-01")
    assert len(results) == 3 and all(result["promoted"] for result in results)
    assert not kept.exists()
    assert (other / "batch.parquet").exists() and (other / "validation.json").exists()


def test_a_re_run_of_the_interval_under_another_run_id_marks_the_failed_run_s_quarantine_superseded(
    project: Path, tmp_path: Path
) -> None:
    # A manual re-run of a failed scheduled interval (another run id) left the failed run's
    # quarantine as it was, still saying to fix data that a later run validated. It is kept (it
    # may be what someone inspects) and marked, and a quarantine of another window is left alone.
    import shutil

    good = project / "data" / "demo" / "web_metrics.csv"
    source = tmp_path / "source.csv"
    in_train = lambda f: f["timestamp"].str.startswith("2024-02-10T05")  # noqa: E731
    shutil.copy(_bad_csv(project, lambda f: f.assign(requests=f["requests"].mask(in_train(f), "twelve"))), source)
    job = load_job_file(_write_job(project, "demo_web_metrics", source={"kind": "file", "path": str(source), "format": "csv"}))
    with pytest.raises(DataValidationError) as failed:
        run_train(job, TRAIN, run_id="scheduled__2024-03-01")
    kept = Path(failed.value.quarantine_path)
    earlier = Window(to_utc("2024-02-01T00:00:00Z"), to_utc("2024-02-29T00:00:00Z"))
    with pytest.raises(DataValidationError) as failed_earlier:
        run_train(job, earlier, run_id="scheduled__2024-02-29")
    other_window = Path(failed_earlier.value.quarantine_path)

    shutil.copy(good, source)
    run_train(job, TRAIN, run_id="manual__re-run")
    assert (kept / "batch.parquet").exists() and (kept / "validation.json").exists()
    note = json.loads((kept / "superseded.json").read_text())
    assert note["superseded_by"] == "manual__re-run" and note["window"] == TRAIN.to_dict()
    assert note["validation_report"].endswith("manual__re-run.json") and Path(note["validation_report"]).exists()
    assert not (other_window / "superseded.json").exists()


def test_a_successful_retry_of_a_one_off_run_clears_its_chunks_quarantine(trained, project: Path, tmp_path: Path) -> None:
    frame = pd.read_parquet(project / "var" / "outputs" / f"job={trained.name}")
    wide = frame.pivot_table(index=["timestamp", "region"], columns="feature", values="value").reset_index()
    wide["timestamp"] = wide["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    bad = wide.astype(object)
    bad.loc[50, "latency_ms"] = "slow"
    path = tmp_path / "input.csv"
    bad.to_csv(path, index=False)
    with pytest.raises(DataValidationError) as failed:
        run_score_file(trained, str(path), run_id="one-off", chunk_rows=20)
    kept = Path(failed.value.quarantine_path)
    assert kept.parent == Path(Workspace(trained.name, "one-off", "score").quarantine) and kept.name.startswith("chunk")
    assert (kept / "batch.parquet").exists()

    wide.to_csv(path, index=False)
    run_score_file(trained, str(path), run_id="one-off", chunk_rows=20)
    assert not kept.exists()
