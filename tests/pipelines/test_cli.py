from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipelines.cli import main
from pipelines.config import get_job, load_job_file
from pipelines.training import registry_for

REPO = Path(__file__).resolve().parents[2]


def test_validate_config_reports_each_file(tmp_path, capsys):
    good = {
        "name": "good",
        "source": {"kind": "file", "path": "x.csv"},
        "timestamp": "ts",
        "frequency": "1h",
        "features": ["v"],
        "model": {"kind": "iforest"},
    }
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(good))
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump({**good, "name": "bad", "featurez": ["v"]}))
    assert main(["validate-config", str(tmp_path / "good.yaml")]) == 0
    assert "ok   " in capsys.readouterr().out
    assert main(["validate-config", str(tmp_path / "good.yaml"), str(tmp_path / "bad.yaml")]) == 1
    err = capsys.readouterr().err
    assert "bad.yaml: invalid job configuration" in err and "featurez: unknown field" in err


def test_validate_config_fails_a_suite_that_checks_a_column_the_job_does_not_read(tmp_path, capsys):
    # It failed only in the validate task of every run, quarantining good data.
    suite = {"name": "s", "expectations": [
        {"type": "expect_column_values_to_not_be_null", "kwargs": {"column": "v"}},
        {"type": "expect_column_values_to_be_between", "kwargs": {"column": "vv", "min_value": 0}},
    ]}
    (tmp_path / "suite.json").write_text(json.dumps(suite))
    job = {
        "name": "checked", "source": {"kind": "file", "path": "x.csv"}, "timestamp": "ts", "frequency": "1h",
        "features": ["v"], "model": {"kind": "iforest"}, "validation": {"suite": str(tmp_path / "suite.json")},
    }
    (tmp_path / "checked.yaml").write_text(yaml.safe_dump(job))

    assert main(["validate-config", str(tmp_path / "checked.yaml")]) == 1
    err = capsys.readouterr().err
    assert f"FAIL {tmp_path / 'checked.yaml'}: {tmp_path / 'suite.json'}: expectation 2 (expect_column_values_to_be_between) " \
        "checks 'vv', which job checked does not read (its columns: ts, v)" in err

    suite["expectations"].pop()
    (tmp_path / "suite.json").write_text(json.dumps(suite))
    assert main(["validate-config", str(tmp_path / "checked.yaml")]) == 0


def test_validate_config_fails_a_job_name_used_by_two_files(tmp_path, monkeypatch, capsys):
    job = {
        "name": "web",
        "source": {"kind": "file", "path": "x.csv"},
        "timestamp": "ts",
        "frequency": "1h",
        "features": ["v"],
        "model": {"kind": "iforest"},
    }
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text(yaml.safe_dump(job))
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({**job, "name": "other", "featurez": ["v"]}))
    expected = f"FAIL {tmp_path / 'b.yaml'}: job name 'web' is already used by {tmp_path / 'a.yaml'}; rename one of them"
    # Named on the command line (as `validate-config config/jobs/*.yaml` does in CI).
    assert main(["validate-config", str(tmp_path / "a.yaml"), str(tmp_path / "b.yaml")]) == 1
    assert expected in capsys.readouterr().err
    # The whole folder, where another broken file must not hide the clash.
    monkeypatch.setenv("ANOMALY_PIPELINES_JOBS_DIR", str(tmp_path))
    assert main(["validate-config"]) == 1
    err = capsys.readouterr().err
    assert expected in err and "featurez: unknown field" in err
    # The same file given twice is one file.
    assert main(["validate-config", str(tmp_path / "a.yaml"), str(tmp_path / "a.yaml")]) == 0


def test_validate_config_checks_the_job_files_of_a_folder(tmp_path, capsys):
    # A folder was read as one job file: "cannot read job file: [Errno 21] Is a directory".
    job = yaml.safe_load((REPO / "config" / "jobs" / "demo_web_metrics.yaml").read_text())
    (tmp_path / "jobs").mkdir()
    (tmp_path / "jobs" / "web.yml").write_text(yaml.safe_dump(job))
    (tmp_path / "jobs" / "notes.txt").write_text("not a job")
    assert main(["validate-config", str(tmp_path / "jobs")]) == 0
    assert capsys.readouterr().out == f"ok   {tmp_path / 'jobs' / 'web.yml'}: job demo_web_metrics (seasonal_mad, 2 features)\n"
    (tmp_path / "empty").mkdir()
    assert main(["validate-config", str(tmp_path / "empty")]) == 1
    assert capsys.readouterr().err == f"no job files (*.yaml, *.yml) found in {tmp_path / 'empty'}\n"


def test_shipped_jobs_validate(capsys):
    assert main(["validate-config"]) == 0
    assert "job demo_web_metrics" in capsys.readouterr().out


def test_train_and_predict_from_the_shell(project, capsys):
    assert main(["train", "demo_web_metrics", "--end", "2024-03-01T00:00:00Z"]) == 0
    out, err = capsys.readouterr()
    trained = json.loads(out)
    assert {r["series"] for r in trained} == {"region=eu", "region=us", "region=apac"}
    assert all(r["promoted"] for r in trained)
    # A last line for the shell user, on stderr so that stdout stays one JSON document.
    assert err.endswith("job demo_web_metrics: trained 3 series: 3 promoted, 0 kept the serving model\n")
    job = get_job("demo_web_metrics")
    assert registry_for(job).champion(job.name, "region=eu").version == next(r["version"] for r in trained if r["series"] == "region=eu")

    assert main(["predict", "demo_web_metrics", "--start", "2024-03-03T00:00:00Z", "--end", "2024-03-04T00:00:00Z"]) == 0
    out, err = capsys.readouterr()
    published = json.loads(out)
    assert published["rows"] == 3 * 24 * 2
    assert published["anomalies"]["region=eu"] >= 2  # the traffic spike of 14:00-17:00
    [path] = published["parquet_paths"]
    assert err.endswith(
        f"job demo_web_metrics: scored 72 points in 3 series: {sum(published['anomalies'].values())} anomalous; "
        f"written to {path} and table {published['table']}\n"
    )
    assert pd.read_parquet(published["parquet_paths"][0]).shape[0] == published["rows"]


def test_models_lists_each_series_serving_model(project, capsys):
    assert main(["models", "demo_web_metrics"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == [] and "run `anomaly-pipelines train demo_web_metrics`" in err
    assert main(["train", "demo_web_metrics", "--end", "2024-03-01T00:00:00Z"]) == 0
    trained = {r["series"]: r["version"] for r in json.loads(capsys.readouterr().out)}

    assert main(["models", "demo_web_metrics"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {m["series"]: m["version"] for m in listed} == trained
    for model in listed:
        assert model["model"] == "seasonal_mad" and model["chosen"] is None and "metadata" not in model
        assert model["decision"] == {"promoted": True, "reason": "no champion yet"} and model["rows"] == 28 * 24
    assert main(["models", "demo_web_metrics", "--series", "region=eu", "--full"]) == 0
    [full] = json.loads(capsys.readouterr().out)
    assert full["version"] == trained["region=eu"] and full["metadata"]["version"] == trained["region=eu"]
    assert main(["models", "demo_web_metrics", "--series", "region=mars"]) == 2
    assert "series with models: region=apac, region=eu, region=us" in capsys.readouterr().err


def test_tuning_lists_each_series_runs_after_tune(project, capsys):
    # Before any tune run: an empty list, and stderr says how to get one.
    assert main(["tuning", "demo_web_metrics"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == [] and "run `anomaly-pipelines tune demo_web_metrics`" in err
    assert main(["train", "demo_web_metrics", "--end", "2024-03-01T00:00:00Z"]) == 0
    capsys.readouterr()
    assert main(["tune", "demo_web_metrics", "--end", "2024-03-01T00:00:00Z"]) == 0
    out, err = capsys.readouterr()
    tuned = {r["series"]: r for r in json.loads(out)}
    promoted = sum(r["promoted"] for r in tuned.values())
    assert err.endswith(f"job demo_web_metrics: tuned 3 series: {promoted} promoted, {3 - promoted} kept the serving model\n")
    assert main(["tuning", "demo_web_metrics"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [entry["series"] for entry in listed] == sorted(tuned)
    for entry in listed:
        [run] = entry["runs"]
        result = tuned[entry["series"]]
        assert run["reason"] == result["reason"] and run["promoted"] == result["promoted"]
        assert run["best"]["kind"] == result["kind"] and run["best"]["params"] == result["params"]
        assert [s["stretch"] for s in run["stretches"]] == [s["stretch"] for s in result["stretches"]]
    assert main(["tuning", "demo_web_metrics", "--series", "region=eu", "--limit", "1"]) == 0
    assert [entry["series"] for entry in json.loads(capsys.readouterr().out)] == ["region=eu"]
    with pytest.raises(SystemExit) as exited:
        main(["tuning", "demo_web_metrics", "--limit", "0"])
    assert exited.value.code == 2 and "'0' is not a whole number of at least 1" in capsys.readouterr().err


def test_errors_exit_2_with_the_message(project, capsys):
    assert main(["predict", "demo_web_metrics", "--start", "2024-03-03T00:00:00Z", "--end", "2024-03-04T00:00:00Z"]) == 2
    err = capsys.readouterr().err
    assert "no champion model is serving" in err and "demo_web_metrics__train" in err
    assert main(["train", "nope"]) == 2
    assert "no job named 'nope'" in capsys.readouterr().err


def test_a_job_file_path_runs_without_being_in_the_jobs_folder(project, tmp_path, capsys):
    elsewhere = tmp_path / "mine"
    elsewhere.mkdir()
    settings = yaml.safe_load((project / "config" / "jobs" / "demo_web_metrics.yaml").read_text())
    (elsewhere / "web_copy.yml").write_text(yaml.safe_dump({**settings, "name": "web_copy"}))
    assert main(["train", str(elsewhere / "web_copy.yml"), "--end", "2024-03-01T00:00:00Z"]) == 0
    trained = json.loads(capsys.readouterr().out)
    assert {r["series"] for r in trained} == {"region=eu", "region=us", "region=apac"}
    job = load_job_file(elsewhere / "web_copy.yml")
    served = registry_for(job).champion("web_copy", "region=eu").version
    assert served == next(r["version"] for r in trained if r["series"] == "region=eu")

    # By name it is not found: the error says where names are looked up and how to point elsewhere.
    assert main(["train", "web_copy"]) == 2
    err = capsys.readouterr().err
    assert "no job named 'web_copy'" in err and str(project / "config" / "jobs") in err
    assert "ANOMALY_PIPELINES_JOBS_DIR" in err and "job file's path" in err
    assert main(["train", str(elsewhere / "missing.yaml")]) == 2
    assert "missing.yaml: cannot read job file" in capsys.readouterr().err


def test_verbose_logs_the_librarys_progress_not_its_dependencies_start_up(project):
    # A subprocess, as a shell runs it: pytest's own log handlers would hide what -v configures.
    done = subprocess.run(
        [sys.executable, "-c", "import sys; from pipelines.cli import main; sys.exit(main(sys.argv[1:]))",
         "-v", "train", "demo_web_metrics", "--end", "2024-03-01T00:00:00Z"],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    assert any(line.startswith("INFO pipelines.validation: job demo_web_metrics") for line in lines)
    assert sum(line.startswith("INFO pipelines.training: job demo_web_metrics, series region=") for line in lines) == 3
    assert not [line for line in lines if line.startswith("INFO") and not line.startswith("INFO pipelines.")]


@pytest.fixture
def files(tmp_path):
    rng = np.random.default_rng(3)
    n = 720
    t = np.arange(n)
    frame = pd.DataFrame(
        {
            "ts": pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ"),
            "a": 10 + np.sin(2 * np.pi * t / 24) + rng.normal(0, 0.1, n),
            "b": 5 + rng.normal(0, 0.1, n),
        }
    )
    frame.iloc[:600].to_csv(tmp_path / "train.csv", index=False)
    test = frame.iloc[600:].copy()
    test.iloc[60, 1] += 3.0  # a spike in a at the file's 61st data row
    test.to_csv(tmp_path / "test.csv", index=False)
    return tmp_path


@pytest.mark.parametrize("model", ["seasonal_mad", "iforest"])
def test_detect_with_timestamps(files, model, capsys):
    out = files / "out.parquet"
    args = ["detect", "--train", str(files / "train.csv"), "--input", str(files / "test.csv"), "--timestamp", "ts"]
    assert main([*args, "--features", "a,b", "--model", model, "--output", str(out)]) == 0
    assert "scored 120 points x 2 features in 1 series" in capsys.readouterr().out
    frame = pd.read_parquet(out)
    assert len(frame) == 240 and frame["series"].eq("all").all()
    flagged = frame[frame["is_anomaly"] & (frame["feature"] == "a")]
    assert pd.Timestamp("2024-01-28T12:00:00Z") in set(flagged["timestamp"])  # 600 + 60 hours after the start
    assert len(flagged) <= 4


def test_detect_without_timestamps_uses_row_numbers(files, capsys):
    out = files / "rows.parquet"
    args = ["detect", "--train", str(files / "train.csv"), "--input", str(files / "test.csv")]
    assert main([*args, "--features", "a", "--model", "seasonal_mad", "--params", '{"season": 24}', "--output", str(out)]) == 0
    frame = pd.read_parquet(out)
    assert frame["timestamp"].isna().all()
    assert frame.loc[frame["is_anomaly"], "row"].tolist() == [61]  # counted from 1, as errors count rows
    # Rows continue the training file's, so the seasonal slot of data row 61 is (600 + 60) % 24.
    assert abs(frame.loc[frame["row"] == 62, "expected"].iloc[0] - (10 + np.sin(2 * np.pi * 661 / 24))) < 0.2


def test_detect_without_timestamps_numbers_rows_as_its_errors_do(files, capsys):
    # The output numbered rows from 0, its errors from 1: the spike's row and a bad value in that
    # same row had different numbers.
    args = ["detect", "--train", str(files / "train.csv"), "--features", "a", "--params", '{"season": 24}']
    assert main([*args, "--input", str(files / "test.csv"), "--output", str(files / "rows.parquet")]) == 0
    frame = pd.read_parquet(files / "rows.parquet")
    assert frame.loc[frame["is_anomaly"], "row"].tolist() == [61] and frame["row"].min() == 1
    bad = pd.read_csv(files / "test.csv", dtype=str)
    bad.loc[60, "a"] = "spike"
    bad.to_csv(files / "bad.csv", index=False)
    capsys.readouterr()
    assert main([*args, "--input", str(files / "bad.csv"), "--output", str(files / "bad.parquet")]) == 2
    assert 'sample values ["spike"], at rows [61] of the --input file, counting its first data row as 1' in capsys.readouterr().err


def test_detect_reads_and_writes_paths_relative_to_the_working_directory(files, monkeypatch, capsys):
    # The project root (ANOMALY_PIPELINES_BASE_DIR, where a job file's relative paths resolve) is
    # elsewhere: paths typed in a shell still mean the shell's working directory.
    project = files / "project"
    project.mkdir()
    monkeypatch.setenv("ANOMALY_PIPELINES_BASE_DIR", str(project))
    monkeypatch.chdir(files)
    args = ["detect", "--train", "train.csv", "--input", "test.csv", "--timestamp", "ts", "--features", "a", "--output", "out/rel.parquet"]
    assert main([*args, "--plot", "rel.png"]) == 0
    assert "written to out/rel.parquet" in capsys.readouterr().out
    assert len(pd.read_parquet(files / "out" / "rel.parquet")) == 120
    assert (files / "rel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (project / "out").exists()


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("{season: 24}", "--params is not valid JSON"),
        ("[24]", "--params must be a JSON object"),
        ('{"seasn": 24}', "params.seasn: unknown parameter (check its spelling; seasonal_mad's parameters are "),
    ],
)
def test_detect_params_errors_name_the_problem(files, params, message, capsys):
    args = ["detect", "--train", str(files / "train.csv"), "--input", str(files / "test.csv"), "--features", "a"]
    assert main([*args, "--params", params, "--output", str(files / "never.parquet")]) == 2
    assert message in capsys.readouterr().err
    assert not (files / "never.parquet").exists()


@pytest.mark.parametrize("missing", ["--train", "--input"])
def test_detect_names_the_option_whose_file_is_missing(files, missing, capsys):
    paths = {"--train": str(files / "train.csv"), "--input": str(files / "test.csv"), missing: str(files / "nope.csv")}
    args = ["detect", "--train", paths["--train"], "--input", paths["--input"], "--timestamp", "ts", "--features", "a"]
    assert main([*args, "--output", str(files / "never.parquet")]) == 2
    err = capsys.readouterr().err
    assert f"{files / 'nope.csv'}" in err and f"no such file or folder. Check the {missing} path." in err
    assert "job file" not in err
    assert not (files / "never.parquet").exists()


@pytest.mark.parametrize(
    ("option", "value", "column"),
    [("--features", "a,c", "c"), ("--timestamp", "time", "time")],
)
def test_detect_names_the_option_whose_column_the_file_lacks(files, option, value, column, capsys):
    given = {"--timestamp": "ts", "--features": "a", option: value}
    args = ["detect", "--train", str(files / "train.csv"), "--input", str(files / "test.csv")]
    args += [part for pair in given.items() for part in pair]
    assert main([*args, "--output", str(files / "never.parquet")]) == 2
    err = capsys.readouterr().err
    assert f"expect_column_to_exist on {column}, the file has no such column: check {option} against its columns (ts, a, b)" in err
    assert "job file" not in err
    assert not (files / "never.parquet").exists()


def test_detect_reads_a_tab_separated_export_with_decimal_commas(files, capsys):
    # A tab is typed as '\t' (two characters), as a job file writes it; detect had no csv options.
    for name in ("train", "test"):
        pd.read_csv(files / f"{name}.csv").to_csv(files / f"{name}.tsv.csv", sep="\t", decimal=",", index=False)
    args = ["detect", "--train", str(files / "train.tsv.csv"), "--input", str(files / "test.tsv.csv"), "--timestamp", "ts"]
    assert main([*args, "--features", "a,b", "--output", str(files / "out.parquet"), "--delimiter", "\\t", "--decimal", ","]) == 0
    assert "scored 120 points x 2 features in 1 series" in capsys.readouterr().out

    assert main([*args, "--features", "a,b", "--output", str(files / "never.parquet")]) == 2
    err = capsys.readouterr().err
    assert "has the header 'ts\\ta\\tb', which looks \\t-separated. Give --delimiter '\\t'." in err
    assert "job file" not in err and not (files / "never.parquet").exists()


def test_detect_reads_files_without_a_known_suffix_with_format(files, capsys):
    # The advice said "Set `format`", and detect had no way to: a .tsv export could only be renamed.
    for name in ("train", "test"):
        pd.read_csv(files / f"{name}.csv").to_csv(files / f"{name}.tsv", sep="\t", index=False)
    args = ["detect", "--train", str(files / "train.tsv"), "--input", str(files / "test.tsv"), "--timestamp", "ts", "--features", "a,b"]
    assert main([*args, "--output", str(files / "never.parquet")]) == 2
    err = capsys.readouterr().err
    assert "cannot tell the format from the file suffixes ['.tsv']. Give --format csv, jsonl, json or parquet, or name" in err
    assert "`" not in err

    assert main([*args, "--output", str(files / "out.parquet"), "--format", "csv", "--delimiter", "\\t"]) == 0
    assert "scored 120 points x 2 features in 1 series" in capsys.readouterr().out


def test_detect_format_choices_are_the_ones_detect_reads():
    from pipelines.adhoc import FORMATS
    from pipelines.cli import DETECT_FORMATS

    assert DETECT_FORMATS == FORMATS


@pytest.mark.parametrize(("name", "tail"), [("existing", ""), ("missing", "/")])
def test_predict_input_refuses_an_output_that_is_a_folder_before_scoring(project, tmp_path, name, tail, capsys):
    # Found only when the file was moved into place, after the whole input was scored: a traceback.
    (tmp_path / "existing").mkdir()
    output = str(tmp_path / name) + tail
    args = ["predict", "demo_web_metrics", "--input", str(project / "data" / "demo" / "web_metrics.csv"), "--output", output]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"job demo_web_metrics: output {output!r} is a folder: give the path of the Parquet file to write" in err
    assert "Traceback" not in err
    assert not (tmp_path / "missing").exists()  # `missing/` did not become a file named `missing`


def test_detect_refuses_an_output_that_is_a_folder(files, capsys):
    (files / "out").mkdir()
    args = ["detect", "--train", str(files / "train.csv"), "--input", str(files / "test.csv"), "--timestamp", "ts"]
    assert main([*args, "--features", "a", "--output", str(files / "out")]) == 2
    assert f"--output {str(files / 'out')!r} is a folder" in capsys.readouterr().err
    assert list((files / "out").iterdir()) == []


@pytest.mark.parametrize("option", ["--train", "--input"])
def test_detect_names_the_option_whose_file_holds_only_a_header(files, option, capsys):
    (files / "header.csv").write_text("ts,a,b\n")
    paths = {"--train": str(files / "train.csv"), "--input": str(files / "test.csv"), option: str(files / "header.csv")}
    args = ["detect", "--train", paths["--train"], "--input", paths["--input"], "--timestamp", "ts", "--features", "a"]
    assert main([*args, "--output", str(files / "never.parquet")]) == 2
    assert f"{files / 'header.csv'}: the {option} file holds no rows (only a header, or nothing)" in capsys.readouterr().err
    assert not (files / "never.parquet").exists()


def test_chunk_rows_below_one_names_the_option(project, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["predict", "demo_web_metrics", "--input", "x.csv", "--output", "y.parquet", "--chunk-rows", "0"])
    assert exited.value.code == 2
    assert "argument --chunk-rows: '0' is not a whole number of at least 1" in capsys.readouterr().err


def test_chunk_rows_beyond_the_largest_is_refused_before_anything_is_read(project, capsys):
    # A mistyped 1,000,000,000 read the whole input into one task until the worker ran out of memory.
    from pipelines.config import DEFAULT_CHUNK_ROWS, MAX_CHUNK_ROWS

    args = ["predict", "demo_web_metrics", "--input", "never-read.csv", "--output", "y.parquet"]
    assert main([*args, "--chunk-rows", str(MAX_CHUNK_ROWS + 1)]) == 2
    assert f"chunk_rows must be a positive number of rows up to {MAX_CHUNK_ROWS:,}" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())  # argparse wraps it
    assert f"up to {MAX_CHUNK_ROWS:,} (bounds memory; default {DEFAULT_CHUNK_ROWS})" in help_text


@pytest.mark.parametrize(
    ("command", "option"),
    [(["train", "demo_web_metrics"], "--end"), (["tune", "demo_web_metrics"], "--start"),
     (["predict", "demo_web_metrics", "--end", "2024-03-02"], "--start"),
     (["plot", "demo_web_metrics", "--end", "2024-03-02", "--out", "x.png"], "--start")],
)
def test_a_window_bound_that_is_not_a_date_time_names_the_option(project, capsys, command, option):
    with pytest.raises(SystemExit) as exited:
        main([*command, option, "yesterday"])
    assert exited.value.code == 2
    assert f"argument {option}: 'yesterday' is not an ISO 8601 date-time" in capsys.readouterr().err


def test_models_of_a_series_of_a_job_never_trained_says_to_train(project, capsys):
    assert main(["models", "demo_web_metrics", "--series", "region=eu"]) == 2
    assert "series with models: none (train the job first)" in capsys.readouterr().err


def test_json_output_keeps_non_ascii_dimension_values_readable(capsys):
    from pipelines.cli import _print_json

    _print_json([{"series": "region=zürich"}])
    out = capsys.readouterr().out
    assert '"series": "region=zürich"' in out and json.loads(out) == [{"series": "region=zürich"}]


def test_json_output_on_a_console_that_cannot_show_the_values_is_escaped_json(tmp_path):
    # An ASCII or cp1252 stdout: a UnicodeEncodeError traceback, and no output at all.
    script = "from pipelines.cli import _print_json; _print_json([{'series': 'region=zürich', 'note': '☕'}])"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=60, check=False,
                          env={**os.environ, "PYTHONIOENCODING": "ascii"})
    assert done.returncode == 0, done.stderr.decode()
    assert b"region=z\\u00fcrich" in done.stdout and json.loads(done.stdout) == [{"series": "region=zürich", "note": "☕"}]


def test_sigterm_removes_the_runs_work_folder(project):
    # A subprocess that stops itself with SIGTERM once the input is split into chunks, as `kill`
    # or a timeout would: the run's work folder must go, as it does on Ctrl-C or an error.
    script = """
import os, signal, sys
import pipelines.runner as runner
from pipelines.cli import main

real = runner.extract_chunks

def extract_then_terminate(*args, **kwargs):
    extracted = real(*args, **kwargs)
    os.kill(os.getpid(), signal.SIGTERM)
    return extracted

runner.extract_chunks = extract_then_terminate
sys.exit(main(sys.argv[1:]))
"""
    done = subprocess.run(
        [sys.executable, "-c", script, "predict", "demo_web_metrics", "--input", str(project / "data" / "demo" / "web_metrics.csv"),
         "--output", str(project / "out.parquet")],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 128 + 15, done.stderr
    work = project / "var" / "work" / "demo_web_metrics"  # then <purpose>/<run>
    assert not [run for purpose in work.iterdir() if purpose.is_dir() for run in purpose.iterdir()]
    assert not (project / "out.parquet").exists()


def test_a_missing_one_off_input_says_to_check_the_input_not_the_job_file(project, tmp_path, capsys):
    assert main(["predict", "demo_web_metrics", "--input", str(tmp_path / "nope.csv"), "--output", str(tmp_path / "o.parquet")]) == 2
    err = capsys.readouterr().err
    assert "nope.csv" in err and "no such file or folder" in err and "Check the input path" in err
    assert "job file" not in err


def test_python_dash_m_pipelines_is_the_cli():
    done = subprocess.run([sys.executable, "-m", "pipelines", "validate-config", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "usage: anomaly-pipelines validate-config" in done.stdout


def test_a_one_off_scoring_says_what_it_found_and_where_it_wrote(project, tmp_path, capsys):
    assert main(["train", "demo_web_metrics", "--end", "2024-03-01T00:00:00Z"]) == 0
    capsys.readouterr()
    output = tmp_path / "scored.parquet"
    args = ["predict", "demo_web_metrics", "--input", str(project / "data" / "demo" / "web_metrics.csv"), "--output", str(output)]
    assert main(args) == 0
    out, err = capsys.readouterr()
    published = json.loads(out)
    points, flagged = sum(published["rows_per_series"].values()), sum(published["anomalies"].values())
    assert err.endswith(f"job demo_web_metrics: scored {points} points in 3 series: {flagged} anomalous; written to {output}\n")


def test_ctrl_c_says_interrupted_exits_130_and_removes_the_work_folder(project, monkeypatch, capsys):
    # Ctrl-C printed a traceback dozens of frames deep (wherever pandas or Optuna happened to be).
    import pipelines.runner as runner

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "read_series", interrupted)
    assert main(["train", "demo_web_metrics", "--end", "2024-03-01T00:00:00Z"]) == 130
    out, err = capsys.readouterr()
    assert out == "" and err == "interrupted\n"
    work = project / "var" / "work" / "demo_web_metrics"  # then <purpose>/<run>
    assert not [run for purpose in work.iterdir() if purpose.is_dir() for run in purpose.iterdir()]


def test_a_reader_that_stops_reading_ends_the_command_quietly():
    # `anomaly-pipelines validate-config | head -0`: a BrokenPipeError traceback, twice (once more
    # when Python flushed stdout at exit).
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([sys.executable, "-m", "pipelines", "validate-config"], stdout=write, stderr=subprocess.PIPE,
                              text=True, timeout=120, check=False)
    finally:
        os.close(write)
    assert (done.returncode, done.stderr) == (141, "")


def test_a_picture_path_the_system_refuses_exits_1_as_any_refused_path(files, capsys):
    # The library says it ("cannot write the picture ..."); the status was 2, where detect and
    # predict answer a refused path with 1, as the README says.
    args = ["detect", "--train", str(files / "train.csv"), "--input", str(files / "test.csv"), "--timestamp", "ts"]
    assert main([*args, "--features", "a", "--output", str(files / "out.parquet"), "--plot", "/proc/w.png"]) == 1
    assert "cannot write the picture /proc/w.png" in capsys.readouterr().err


def test_a_path_the_system_refuses_is_one_line_not_a_traceback(files, capsys):
    (files / "plain").write_text("a file, not a folder")
    args = ["detect", "--train", str(files / "train.csv"), "--input", str(files / "test.csv"), "--timestamp", "ts"]
    assert main([*args, "--features", "a", "--output", str(files / "plain" / "out.parquet")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(files / "plain") in err and "Traceback" not in err and len(err.splitlines()) == 1


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--output", "./test.csv"], "--output '{files}/test.csv' is the --input file"),
     (["--output", "train.csv"], "--output '{files}/train.csv' is the --train file"),
     (["--output", "out.parquet", "--plot", "out.parquet"], "--plot '{files}/out.parquet' is the --output file")],
)
def test_detect_refuses_to_write_over_a_file_it_reads(files, monkeypatch, extra, message, capsys):
    # The scores silently replaced the data they were computed from.
    monkeypatch.chdir(files)
    before = {name: (files / name).read_bytes() for name in ("train.csv", "test.csv")}
    assert main(["detect", "--train", "train.csv", "--input", "test.csv", "--timestamp", "ts", "--features", "a", *extra]) == 2
    assert message.format(files=files) + ": writing it would replace that file; give another path" in capsys.readouterr().err
    assert {name: (files / name).read_bytes() for name in before} == before and not (files / "out.parquet").exists()


def test_predict_input_refuses_an_output_that_is_the_input(project, tmp_path, capsys):
    data = tmp_path / "web.csv"
    data.write_bytes((project / "data" / "demo" / "web_metrics.csv").read_bytes())
    (tmp_path / "link.csv").symlink_to(data)
    assert main(["predict", "demo_web_metrics", "--input", str(data), "--output", str(tmp_path / "link.csv")]) == 2
    assert f"--output '{tmp_path / 'link.csv'}' is the --input file" in capsys.readouterr().err
    assert data.read_bytes() == (project / "data" / "demo" / "web_metrics.csv").read_bytes()


def _strict_json(text: str) -> object:
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")

    return json.loads(text, parse_constant=refuse)


def test_json_output_is_strict_json_when_a_champion_cannot_be_loaded(project, capsys):
    # The champion is then compared at an infinite holdout error, printed as `Infinity`: Python
    # reads it back, but JSON.parse, Go and serde refuse the whole document.
    assert main(["train", "demo_web_metrics", "--end", "2024-03-01T00:00:00Z"]) == 0
    version = {r["series"]: r["version"] for r in json.loads(capsys.readouterr().out)}["region=eu"]
    (project / "var" / "models" / "demo_web_metrics" / "region=eu" / "versions" / version / "detector.json").write_text("garbage")
    assert main(["train", "demo_web_metrics", "--end", "2024-03-01T00:00:00Z"]) == 0
    [retrained] = [r for r in _strict_json(capsys.readouterr().out) if r["series"] == "region=eu"]
    assert retrained["promoted"] and retrained["metrics"]["champion_holdout_error"] is None
    assert main(["models", "demo_web_metrics", "--series", "region=eu", "--full"]) == 0
    [model] = _strict_json(capsys.readouterr().out)
    assert model["metadata"]["metrics"]["champion_holdout_error"] is None


@pytest.mark.parametrize("given", [[], ["--start", "2024-03-03T00:00:00Z"], ["--end", "2024-03-04T00:00:00Z"]])
def test_predict_without_a_whole_window_names_the_options(project, given, capsys):
    # It said "a scheduled data interval, or both 'start' and 'end'": no option, and no schedule here.
    assert main(["predict", "demo_web_metrics", *given]) == 2
    err = capsys.readouterr().err
    assert err == "error: job demo_web_metrics: give the window to score with --start and --end, or a file with --input\n"


def test_the_help_is_plain_text(capsys):
    # The module docstring is reST: its ``anomaly-pipelines`` was shown with the backticks.
    with pytest.raises(SystemExit) as stopped:
        main(["--help"])
    out = capsys.readouterr().out
    assert stopped.value.code == 0 and "anomaly-pipelines: the library's steps from a shell" in out and "``" not in out


@pytest.mark.parametrize(
    "command",
    [["predict", "demo_web_metrics"], ["plot", "demo_web_metrics", "--out", "x.png"],
     ["train", "demo_web_metrics"], ["tune", "demo_web_metrics"]],
)
def test_a_window_ending_before_it_starts_names_the_job_and_says_what_to_do(project, command, capsys):
    # predict and plot handed the job's name where its config was expected: an AttributeError
    # traceback instead of the window's error.
    assert main([*command, "--start", "2024-03-08T00:00:00Z", "--end", "2024-03-01T00:00:00Z"]) == 2
    assert capsys.readouterr().err == (
        "error: job demo_web_metrics: window end 2024-03-01T00:00:00+00:00 is not after its start 2024-03-08T00:00:00+00:00; "
        "give a start before the end\n"
    )


@pytest.mark.parametrize(
    ("picture", "message"),
    [("scores.bmp", "--plot '{files}/scores.bmp': .bmp is not a picture format; name it .png, .svg or .pdf"),
     ("pictures/", "--plot '{files}/pictures/' is a folder: give the picture's file name, e.g. '{files}/pictures/anomalies.png'"),
     ("existing", "--plot '{files}/existing' is a folder: give the picture's file name, e.g. '{files}/existing/anomalies.png'")],
)
def test_detect_refuses_a_picture_it_cannot_draw_before_writing_anything(files, monkeypatch, picture, message, capsys):
    # The output was scored and written, then the picture failed (exit 2, "written to" on stdout);
    # a folder's name with a trailing slash became a PNG file named like the folder.
    monkeypatch.chdir(files)
    (files / "existing").mkdir()
    args = ["detect", "--train", "train.csv", "--input", "test.csv", "--timestamp", "ts", "--features", "a"]
    assert main([*args, "--output", "out.parquet", "--plot", picture]) == 2
    assert capsys.readouterr().err == f"error: {message.format(files=files)}\n"
    assert not (files / "out.parquet").exists() and not (files / "pictures").exists()


def test_plot_refuses_a_folder_for_the_picture(project, tmp_path, capsys):
    window = ["--start", "2024-03-01T00:00:00Z", "--end", "2024-03-02T00:00:00Z"]
    assert main(["plot", "demo_web_metrics", *window, "--out", f"{tmp_path}/pictures/"]) == 2
    assert f"--out '{tmp_path}/pictures/' is a folder" in capsys.readouterr().err


@pytest.mark.parametrize(("output", "kind"), [("scores.csv", "csv"), ("scores.jsonl.gz", "jsonl"), ("scores.json", "json")])
def test_an_output_named_as_another_format_is_refused_before_scoring(files, project, output, kind, capsys):
    # Parquet bytes were written under the name: a `scores.csv` that no CSV reader opens.
    message = f"--output {str(files / output)!r} names a {kind} file, but the scores are written as Parquet: give a .parquet name"
    detect = ["detect", "--train", str(files / "train.csv"), "--input", str(files / "test.csv"), "--timestamp", "ts", "--features", "a"]
    assert main([*detect, "--output", str(files / output)]) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    predict = ["predict", "demo_web_metrics", "--input", str(project / "data" / "demo" / "web_metrics.csv")]
    assert main([*predict, "--output", str(files / output)]) == 2
    # The check is the predict DAG's too (runner.check_one_off), which names the job, not the flag.
    assert capsys.readouterr().err == f"error: job demo_web_metrics: {message.removeprefix('--')}\n"
    assert not (files / output).exists()


def test_validate_config_says_the_job_folder_does_not_exist(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ANOMALY_PIPELINES_JOBS_DIR", str(tmp_path / "jobz"))
    assert main(["validate-config"]) == 1
    assert capsys.readouterr().err.startswith(f"the job folder {tmp_path / 'jobz'} does not exist: create it, or point $ANOMALY_PIPELINES_JOBS_DIR")


@pytest.mark.parametrize(
    ("extra", "message"),
    [(["--output", "{files}/plain/out.parquet"], "error: --output: cannot write the output {files}/plain/out.parquet: Not a directory"),
     (["--output", "/proc/out.parquet"], "error: --output: cannot write the output /proc/out.parquet: "),
     (["--output", "{files}/out.parquet", "--plot", "{files}/plain/sub/p.png"],
      "error: --plot: cannot write the picture {files}/plain/sub/p.png: Not a directory ({files}/plain)")],
)
def test_detect_refuses_a_path_it_cannot_write_before_scoring(files, extra, message, capsys):
    # Found when writing: detect scored the whole input (a million rows: most of a minute), then
    # failed with "[Errno 2] No such file or directory: '/proc/out.parquet'", naming no option;
    # an unwritable --plot came after the output was written.
    (files / "plain").write_text("a file, not a folder")
    args = ["detect", "--train", str(files / "train.csv"), "--input", str(files / "test.csv"), "--timestamp", "ts", "--features", "a"]
    assert main([*args, *(part.format(files=files) for part in extra)]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith(message.format(files=files)) and captured.err.rstrip().endswith("choose a writable path")
    assert captured.out == "" and not (files / "out.parquet").exists()


def test_predict_and_plot_refuse_a_path_they_cannot_write_before_any_work(project, tmp_path, capsys):
    (tmp_path / "plain").write_text("a file, not a folder")
    scored = ["predict", "demo_web_metrics", "--input", str(REPO / "data" / "demo" / "web_metrics.csv")]
    assert main([*scored, "--output", str(tmp_path / "plain" / "out.parquet")]) == 1
    assert capsys.readouterr().err.startswith(f"error: --output: cannot write the output {tmp_path}/plain/out.parquet: Not a directory")
    # Before looking for outputs: the job has none here, which was the error shown instead.
    window = ["--start", "2024-03-01T00:00:00Z", "--end", "2024-03-02T00:00:00Z"]
    assert main(["plot", "demo_web_metrics", *window, "--out", str(tmp_path / "plain" / "p.png")]) == 1
    assert capsys.readouterr().err.startswith(f"error: --out: cannot write the picture {tmp_path}/plain/p.png: Not a directory")
