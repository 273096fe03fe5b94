"""One-off scoring of a large input (``predict --input``, the ``<job>__score`` DAG) as a demanding
user sees it: a failed split leaves no chunks behind, bad rows are named in any chunk, the output
appears whole or not at all and a re-run replaces it, and a long run says how far it is.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from pipelines.config import get_job
from pipelines.errors import SourceDataError
from pipelines.extraction import extract_chunks
from pipelines.workspace import Workspace, home

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "data" / "demo" / "web_metrics.csv"


def _lines() -> list[str]:
    return DATA.read_text().splitlines()


def _backwards_in_chunk_4(path: Path, chunk_rows: int = 200) -> None:
    """The demo file's first 3 chunks of ``chunk_rows`` rows, then its first rows again: back in time."""
    lines = _lines()
    path.write_text("\n".join(lines[: 3 * chunk_rows + 1] + lines[1 : chunk_rows // 2 + 1]) + "\n")


def _left_in(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.mark.airflow
@pytest.mark.slow
def test_a_score_dag_run_whose_split_fails_in_a_late_chunk_leaves_no_chunks(project: Path, airflow_db, capfd) -> None:
    # The raw chunks written before chunk 4 was refused stayed in work/<job>/score/<run>/chunks/
    # (a copy of most of the input, gigabytes for a large one) until swept as abandoned days later.
    from pipelines.demo import TRAIN_END
    from tests.dags.test_dag_runs import run, task_states

    assert run("demo_web_metrics__train", {"end": TRAIN_END}, TRAIN_END).endswith("success")
    data = pd.read_csv(DATA)
    # 2 chunks of 1,000 rows (the DAG's least), then a third going back in time.
    pd.concat([data.iloc[:2000], data.iloc[:500]]).to_csv(project / "in.csv", index=False)

    states = task_states("demo_web_metrics__score", {"input": str(project / "in.csv"), "chunk_rows": 1000}, None)

    assert states["extract"] == ("failed", 1), states
    assert "series region=apac: row 2001 (chunk 3" in capfd.readouterr().out  # the error as it was, not the clean-up's
    assert _left_in(project / "var" / "work" / "demo_web_metrics" / "score") == []


def _day_first_in_chunk_3(path: Path) -> None:
    rows = [f"{day:02d}/02/2024 00:00,eu,{day},1.5" for day in range(1, 30)]  # 13/02 and later prove day first
    path.write_text("timestamp,region,requests,latency_ms\n" + "\n".join(rows) + "\n")


def _naive_in_chunk_3(path: Path) -> None:
    lines = _lines()
    path.write_text("\n".join(lines[:401] + [line.replace("Z,", ",", 1) for line in lines[401:601]]) + "\n")


@pytest.mark.parametrize(
    ("write", "chunk_rows", "message"),
    [
        (_backwards_in_chunk_4, 200, r"row 601 \(chunk 4"),
        (_day_first_in_chunk_3, 10, "row 13"),
        (_naive_in_chunk_3, 200, "mixes timestamps with and without a time zone"),
    ],
    ids=["time order", "day first", "zones mixed"],
)
def test_a_split_that_fails_in_a_late_chunk_removes_the_chunks_it_wrote(project: Path, write, chunk_rows, message) -> None:
    write(project / "in.csv")
    workspace = Workspace("demo_web_metrics", "r1", "score")

    with pytest.raises(SourceDataError, match=message):
        extract_chunks(get_job("demo_web_metrics"), run_id="r1", input_path=str(project / "in.csv"), chunk_rows=chunk_rows)

    assert _left_in(home() / "work") == []
    assert not workspace.root.exists()


def test_a_split_that_cannot_remove_its_chunks_still_raises_its_own_error(project: Path, monkeypatch, caplog) -> None:
    import shutil

    def refuse(path, *args, **kwargs):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(shutil, "rmtree", refuse)
    _backwards_in_chunk_4(project / "in.csv")

    with pytest.raises(SourceDataError, match=r"row 601 \(chunk 4"):
        extract_chunks(get_job("demo_web_metrics"), run_id="r1", input_path=str(project / "in.csv"), chunk_rows=200)
    assert "could not remove the chunks of a failed split" in caplog.text


def test_a_split_that_succeeds_keeps_its_chunks(project: Path) -> None:
    extracted = extract_chunks(get_job("demo_web_metrics"), run_id="r1", input_path=str(DATA), chunk_rows=1000)
    assert len(extracted.paths) == 3 and all(Path(p).is_file() for p in extracted.paths)
    assert pd.read_parquet(extracted.paths[-1]).shape[0] == 592


@pytest.fixture
def trained(project: Path):
    from pipelines.runner import run_train
    from pipelines.workspace import to_utc, training_window

    job = get_job("demo_web_metrics")
    run_train(job, training_window(job, to_utc("2024-03-01T00:00:00Z")), run_id="train")
    return job


def _progress(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "pipelines.runner" and " chunks, " in r.getMessage()]


def test_scoring_a_file_logs_rows_done_rate_and_time_left(trained, project: Path, caplog) -> None:
    # Each chunk said only "chunk 3 of 6 scored: 500 rows, 3 series": nothing of the whole, its
    # rate, or how long the rest would take.
    from pipelines.runner import run_score_file

    caplog.set_level("INFO", logger="pipelines")
    run_score_file(trained, str(DATA), run_id="one-off", output=str(project / "scored.parquet"), chunk_rows=500)

    lines = _progress(caplog)
    assert len(lines) == 6, lines
    assert lines[0].startswith("job demo_web_metrics: scored 1 of 6 chunks, 500 of 2,592 rows (19%) in ")
    assert " rows/s; about " in lines[1] and lines[1].endswith("s left"), lines[1]
    assert lines[-1].startswith("job demo_web_metrics: scored 6 of 6 chunks, 2,592 of 2,592 rows (100%) in ")
    assert lines[-1].endswith("; done")
    assert f"job demo_web_metrics: writing the scored chunks into {project / 'scored.parquet'}" in caplog.text
    assert "(2,592 so far, " in caplog.text  # and splitting the file says its rate


def test_a_file_of_many_chunks_logs_progress_every_few_chunks(trained, project: Path, caplog) -> None:
    from pipelines.runner import PROGRESS_LINES, run_score_file

    caplog.set_level("INFO", logger="pipelines")
    run_score_file(trained, str(DATA), run_id="one-off", output=str(project / "scored.parquet"), chunk_rows=50)  # 52 chunks

    lines = _progress(caplog)
    assert len(lines) <= PROGRESS_LINES + 1 and len(lines) >= PROGRESS_LINES // 2, lines
    assert " scored 3 of 52 chunks, 150 of 2,592 rows " in lines[0] and " scored 52 of 52 chunks, " in lines[-1]


def test_a_failure_in_the_last_chunk_keeps_the_previous_output_and_a_rerun_replaces_it(trained, project: Path) -> None:
    from pipelines.errors import DataValidationError
    from pipelines.runner import run_score_file

    output = project / "scored.parquet"
    run_score_file(trained, str(DATA), run_id="first", output=str(output), chunk_rows=500)
    before = output.read_bytes()
    bad = pd.read_csv(DATA, dtype=str)
    bad.loc[2550, "requests"] = "lots"  # row 2551 of the file: chunk 6 of 6
    bad.to_csv(project / "bad.csv", index=False)

    with pytest.raises(DataValidationError, match=r"(?s)chunk 6 of 6.*at rows \[2551\] of the input file"):
        run_score_file(trained, str(project / "bad.csv"), run_id="bad", output=str(output), chunk_rows=500)
    assert output.read_bytes() == before  # whole or not at all: the previous file as it was
    assert sorted(p.name for p in project.iterdir() if p.name.startswith("scored")) == ["scored.parquet"]
    assert _left_in(home() / "work" / "demo_web_metrics" / "score") == []

    # A re-run of the same input to the same output replaces it, not adds to it.
    shorter = pd.read_csv(DATA).iloc[:2000]
    shorter.to_csv(project / "shorter.csv", index=False)
    run_score_file(trained, str(project / "shorter.csv"), run_id="again", output=str(output), chunk_rows=500)
    run_score_file(trained, str(project / "shorter.csv"), run_id="again2", output=str(output), chunk_rows=500)
    scored = pd.read_parquet(output)
    assert len(scored) == 2000 * 2 and not scored.duplicated(["series", "timestamp", "feature"]).any()
