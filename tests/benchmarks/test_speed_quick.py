"""Quick runs of the speed benchmarks: they assert what the benchmarks compute and report, never
how fast anything is (timings on a shared machine are no test)."""

from __future__ import annotations

import math
import sys
import types

import numpy as np
import pytest

from benchmarks import __main__ as bench_main
from benchmarks import parse_time, predict_scaling, report, throughput
from benchmarks.detectors import DETECTORS


def _finite_positive(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > 0


# -- report ---------------------------------------------------------------------------------


def test_write_section_appends_then_replaces_only_its_own_section(tmp_path):
    path = tmp_path / "BENCHMARKS.md"
    report.write_section("speed", "first", path)
    report.write_section("nab", "nab text", path)
    path.write_text(path.read_text() + "\nHand-written note.\n")

    report.write_section("speed", "second", path)

    text = path.read_text()
    assert text.startswith("# Benchmarks")
    assert "<!-- speed:start -->\nsecond\n<!-- speed:end -->" in text
    assert "first" not in text
    assert "<!-- nab:start -->\nnab text\n<!-- nab:end -->" in text
    assert text.count("<!-- speed:start -->") == 1
    assert "Hand-written note." in text


def test_table_rows_returns_body_rows_of_every_table():
    markdown = "\n\n".join(
        [report.table(["a", "b"], [[1, 2], [3, 4]]), "text", report.table(["c"], [["x"]])]
    )
    assert report.table_rows(markdown) == [["1", "2"], ["3", "4"], ["x"]]


def test_machine_line_states_cores_memory_and_method():
    line = report.machine_line("3 repeats")
    assert f"{report.cores()} cores" in line
    assert "GiB RAM" in line
    assert "medians of 3 repeats, interleaved" in line


@pytest.mark.parametrize(
    ("value", "text"), [(1234.5, "1,234"), (0.012345, "0.0123"), (None, "—"), (float("nan"), "—")]
)
def test_fmt_number(value, text):
    assert report.fmt_number(value) == text


def test_interleaved_alternates_variants_and_reverses_every_other_repeat():
    calls = []
    seconds = report.interleaved({"ours": lambda: calls.append("ours"), "bare": lambda: calls.append("bare")}, 3)
    assert calls == ["ours", "bare", "bare", "ours", "ours", "bare"]
    assert [len(v) for v in seconds.values()] == [3, 3]


# -- throughput -----------------------------------------------------------------------------


def test_bare_seasonal_mad_computes_what_the_detector_computes():
    from pipelines.detectors import make_detector

    frame = throughput.synthetic_series(30_000)  # enough points per slot for per-slot scales
    detector = make_detector("seasonal_mad", {"season": "1d"}).fit(frame)
    detection = detector.detect(frame)
    bare = throughput.BareSeasonalMAD(detector.get_params())
    bare.prepare(frame)
    bare.fit()

    np.testing.assert_allclose(bare.scale, detector.scale_, rtol=1e-9)
    np.testing.assert_allclose(bare.expected(), detection.expected, rtol=1e-12)
    # The detector's score is its calibration of exactly the bare raw score.
    np.testing.assert_allclose(detector._calibrate(bare.score()), detection.score, atol=1e-4)


def test_bare_isolation_forest_scores_like_the_detector_forest():
    from pipelines.detectors import make_detector

    frame = throughput.synthetic_series(2_000)
    detector = make_detector("iforest", {}).fit(frame)
    bare = throughput.BareIsolationForest(detector.get_params())
    bare.prepare(frame)
    bare.fit()

    ours = -detector.model_.score_samples(detector.features(frame))
    # Same trees: scaling a column does not move a forest's splits; only rounding differs.
    assert np.corrcoef(ours, bare.score())[0, 1] > 0.9999
    np.testing.assert_allclose(ours, bare.score(), atol=1e-2)


def test_throughput_measures_every_detector_with_finite_ratios():
    results = [throughput.measure(d, 1_500, repeats=2) for d in DETECTORS]

    for result, under_test in zip(results, DETECTORS, strict=True):
        assert result.kind == under_test.kind
        assert all(_finite_positive(t) for t in (result.ours_fit, result.ours_score))
        if under_test.kind in throughput.BARE:
            assert _finite_positive(result.fit_ratio) and _finite_positive(result.score_ratio)
    rows = report.table_rows(throughput.markdown(results))
    assert [(row[0], row[1]) for row in rows] == [(d.label, "1,500") for d in DETECTORS]
    for row, under_test in zip(rows, DETECTORS, strict=True):
        with_bare = under_test.kind in throughput.BARE
        assert all(cell.endswith("×") if with_bare else cell == "—" for cell in (row[4], row[7]))


def test_throughput_without_bare_equivalent_reports_ours_only(monkeypatch):
    monkeypatch.delitem(throughput.BARE, "seasonal_mad")
    (under_test,) = [d for d in DETECTORS if d.kind == "seasonal_mad"]
    result = throughput.measure(under_test, 1_000, repeats=1)

    assert result.bare_fit is None and result.fit_ratio is None
    (row,) = report.table_rows(throughput.markdown([result]))
    assert row[3] == "—" and row[4] == "—"


def test_throughput_scores_as_often_as_the_budget_allows():
    (under_test,) = [d for d in DETECTORS if d.kind == "seasonal_mad"]
    result = throughput.measure(under_test, 1_000, repeats=1, score_budget=0.5)

    # A 1,000-point seasonal score takes about a millisecond: the budget buys many repeats (0.5 s: a
    # loaded machine, several times slower, still affords more than 10).
    assert 10 < result.score_repeats <= throughput.MAX_SCORE_REPEATS
    assert f"seasonal_mad (season=1d) {result.score_repeats} at 1,000 points" in throughput.markdown([result])
    assert throughput.measure(under_test, 1_000, repeats=2).score_repeats == 2  # no budget: as asked


# -- predict scaling ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def predict_results(tmp_path_factory):
    return predict_scaling.measure(quick=True, root=tmp_path_factory.mktemp("predict"))


@pytest.mark.slow
def test_predict_scores_every_row_of_every_series(predict_results):
    by_rows, by_series = predict_scaling.cases(quick=True)
    assert {m.case for m in predict_results} == {*by_rows, *by_series}
    for m in predict_results:
        assert m.output_rows == m.case.rows * len(predict_scaling.FEATURES)
        assert m.series_scored == m.case.series
        assert _finite_positive(m.seconds) and _finite_positive(m.rows_per_second)
        assert m.peak_rss >= m.baseline_rss > 0
        steps = {"extract", "validate", "score", "publish"}
        assert set(m.steps) == steps | {"parquet", "sql"}  # both sinks are within publish
        assert sum(m.steps[s] for s in steps) <= m.seconds
        assert m.steps["parquet"] + m.steps["sql"] <= m.steps["publish"]


@pytest.mark.slow
def test_predict_markdown_has_a_row_per_configuration(predict_results):
    markdown = predict_scaling.markdown(predict_results, quick=True)
    rows = report.table_rows(markdown)
    by_rows, by_series = predict_scaling.cases(quick=True)
    assert [(r[0], r[1]) for r in rows] == [(f"{c.rows:,}", f"{c.series:,}") for c in [*by_rows, *by_series]]
    assert rows[0][4] == "1.00×"
    assert "seasonal_mad" in markdown and "cores" in markdown


# -- parse time -----------------------------------------------------------------------------


@pytest.mark.slow
def test_parse_time_builds_four_dags_per_job():
    results = parse_time.measure(quick=True)

    empty, *with_jobs = results
    assert empty.variant.jobs is None and empty.dags == 0
    assert [m.variant.jobs for m in with_jobs] == list(parse_time.QUICK_JOBS)
    for m in with_jobs:
        assert m.dags == 4 * m.variant.jobs
        assert _finite_positive(m.parse) and _finite_positive(m.serialize) and _finite_positive(m.load_jobs)
    rows = report.table_rows(parse_time.markdown(results))
    assert [r[0] for r in rows] == ["empty DAG file", "1 job", "5 jobs"]
    assert [r[1] for r in rows] == ["0", "4", "20"]


def test_write_jobs_gives_distinct_valid_jobs(tmp_path):
    from pipelines.config import load_jobs

    names = parse_time.write_jobs(tmp_path, 3)
    assert list(load_jobs(tmp_path)) == names == ["bench_job_0000", "bench_job_0001", "bench_job_0002"]


# -- python -m benchmarks -------------------------------------------------------------------


@pytest.fixture
def fake_benchmark(monkeypatch):
    module = types.ModuleType("fake_benchmark")
    module.run = lambda quick: f"fake section (quick={quick})"
    monkeypatch.setitem(sys.modules, "fake_benchmark", module)
    monkeypatch.setitem(bench_main.BENCHMARKS, "fake", "fake_benchmark")
    written = []
    monkeypatch.setattr(bench_main, "write_section", lambda name, text: written.append((name, text)))
    return written


def test_quick_prints_and_writes_nothing(fake_benchmark, capsys):
    assert bench_main.main(["--quick", "--only", "fake"]) == 0
    assert "fake section (quick=True)" in capsys.readouterr().out
    assert fake_benchmark == []


def test_full_run_writes_each_section(fake_benchmark):
    assert bench_main.main(["--only", "fake"]) == 0
    assert fake_benchmark == [("fake", "fake section (quick=False)")]


def test_unknown_benchmark_is_refused():
    with pytest.raises(SystemExit, match="unknown benchmark"):
        bench_main.main(["--only", "nope"])
