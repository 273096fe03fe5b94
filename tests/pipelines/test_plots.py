from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
import pytest

from pipelines.cli import main
from pipelines.errors import DataValidationError, MissingDependencyError, SinkError
from pipelines.plots import MAX_PANELS, Panel, plot_outputs

#: Matplotlib's "tab:red", the colour of the anomaly markers.
RED = np.array([214, 39, 40]) / 255


def outputs(series: int, flagged: dict[int, list[int]], rows: int = 48) -> pd.DataFrame:
    """Output rows of ``series`` series of one feature; ``flagged`` maps a series to its
    flagged row numbers."""
    stamps = pd.date_range("2024-01-01", periods=rows, freq="h", tz="UTC")
    parts = []
    for s in range(series):
        value = np.sin(np.arange(rows) / 4.0)
        anomalous = np.isin(np.arange(rows), flagged.get(s, []))
        parts.append(pd.DataFrame({
            "series": f"host=h{s:02d}", "timestamp": stamps, "feature": "cpu", "value": value + 3 * anomalous,
            "expected": value, "lower": value - 0.5, "upper": value + 0.5, "is_anomaly": anomalous,
        }))
    return pd.concat(parts, ignore_index=True)


def red_pixels(path) -> int:
    import matplotlib.image

    image = matplotlib.image.imread(path)[:, :, :3]
    return int((np.abs(image - RED).max(axis=2) < 0.05).sum())


def test_each_series_gets_a_panel_with_its_flagged_rows_marked(tmp_path) -> None:
    path = tmp_path / "out" / "plot.png"  # the folder is made
    drawn = plot_outputs(outputs(2, {1: [10, 30]}), path, title="demo")
    assert drawn == [Panel("host=h01", "cpu", 48, 2, 2), Panel("host=h00", "cpu", 48, 0, 0)]  # the most flagged first
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and red_pixels(path) > 20


def test_nothing_is_marked_where_nothing_was_flagged(tmp_path) -> None:
    plot_outputs(outputs(1, {}), tmp_path / "quiet.png")
    assert red_pixels(tmp_path / "quiet.png") == 0


def test_a_flagged_timestamp_is_filled_on_the_signal_that_contributed_most(tmp_path) -> None:
    frame = outputs(1, {0: [10, 20]})
    frame = pd.concat([frame.assign(feature_score=0.2), frame.assign(feature="disk", feature_score=0.9)], ignore_index=True)
    frame.loc[(frame["feature"] == "cpu") & (frame["timestamp"] == frame["timestamp"].iloc[20]), "feature_score"] = 0.95
    drawn = plot_outputs(frame, tmp_path / "two.png")
    assert sorted(drawn, key=lambda panel: panel.feature) == [Panel("host=h00", "cpu", 48, 2, 1), Panel("host=h00", "disk", 48, 2, 1)]
    # Per-feature detectors flag each feature on its own: an unflagged feature never takes the lead.
    alone = frame.assign(is_anomaly=frame["is_anomaly"] & (frame["feature"] == "cpu"))
    assert [panel.leading for panel in plot_outputs(alone, tmp_path / "alone.png") if panel.feature == "cpu"] == [2]


def test_a_picture_holds_at_most_a_dozen_panels_the_most_flagged(tmp_path) -> None:
    flagged = {s: list(range(s % 5)) for s in range(MAX_PANELS + 3)}
    drawn = plot_outputs(outputs(MAX_PANELS + 3, flagged), tmp_path / "many.png")
    assert len(drawn) == MAX_PANELS
    counts = [panel.flagged for panel in drawn]
    assert counts == sorted(counts, reverse=True)
    left_out = {f"host=h{s:02d}" for s in range(MAX_PANELS + 3)} - {panel.series for panel in drawn}
    assert all(len(flagged[int(series[-2:])]) == 0 for series in left_out)


def test_rows_without_timestamps_are_drawn_by_row_number(tmp_path) -> None:
    frame = outputs(1, {0: [5]}).assign(timestamp=pd.NaT, row=np.arange(48))
    assert plot_outputs(frame, tmp_path / "rows.png") == [Panel("host=h00", "cpu", 48, 1, 1)]


def test_bad_input_and_a_missing_matplotlib_say_what_is_wrong(tmp_path, monkeypatch) -> None:
    with pytest.raises(DataValidationError, match="without the column\\(s\\) expected, upper"):
        plot_outputs(outputs(1, {}).drop(columns=["expected", "upper"]), tmp_path / "x.png")
    with pytest.raises(DataValidationError, match="no output rows"):
        plot_outputs(outputs(1, {}).iloc[:0], tmp_path / "x.png")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib then raises ImportError
    with pytest.raises(MissingDependencyError, match=r"pip install -c constraints.txt -e '\.\[plot\]' in the anomaly-pipelines repository"):
        plot_outputs(outputs(1, {}), tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_detect_draws_what_it_wrote(tmp_path, capsys) -> None:
    rng = np.random.default_rng(3)
    t = np.arange(720)
    frame = pd.DataFrame({
        "ts": pd.date_range("2024-01-01", periods=720, freq="h", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ"),
        "a": 10 + np.sin(2 * np.pi * t / 24) + rng.normal(0, 0.1, 720),
    })
    frame.iloc[:600].to_csv(tmp_path / "train.csv", index=False)
    test = frame.iloc[600:].copy()
    test.iloc[60, 1] += 3.0
    test.to_csv(tmp_path / "test.csv", index=False)
    args = ["detect", "--train", str(tmp_path / "train.csv"), "--input", str(tmp_path / "test.csv"), "--timestamp", "ts",
            "--features", "a", "--output", str(tmp_path / "out.parquet"), "--plot", str(tmp_path / "out.png")]
    assert main(args) == 0
    assert f"drawn: 1 panel (series x feature) in {tmp_path / 'out.png'}" in capsys.readouterr().out
    written = pd.read_parquet(tmp_path / "out.parquet")
    assert written["is_anomaly"].any() and red_pixels(tmp_path / "out.png") > 20


def test_plot_draws_what_a_job_published(project, capsys) -> None:
    assert main(["train", "demo_web_metrics", "--end", "2024-03-01T00:00:00Z"]) == 0
    capsys.readouterr()
    window = ["--start", "2024-03-03T00:00:00Z", "--end", "2024-03-04T00:00:00Z"]
    assert main(["predict", "demo_web_metrics", *window]) == 0
    published = json.loads(capsys.readouterr().out)
    out = project / "eu.png"
    assert main(["plot", "demo_web_metrics", *window, "--series", "region=eu", "--out", str(out)]) == 0
    rows = pd.concat(pd.read_parquet(path) for path in published["parquet_paths"])
    flagged = int(rows.loc[rows["series"] == "region=eu", "is_anomaly"].sum())
    assert flagged >= 2  # the demo's traffic spike
    assert capsys.readouterr().out.startswith(f"drawn: 2 panels (series x feature), {flagged} flagged rows, in {out}")
    assert red_pixels(out) > 0

    assert main(["plot", "demo_web_metrics", *window, "--series", "region=mars", "--out", str(out)]) == 2
    assert "no series 'region=mars'" in capsys.readouterr().err
    assert main(["plot", "demo_web_metrics", "--start", "2024-05-01T00:00:00Z", "--end", "2024-05-02T00:00:00Z", "--out", str(out)]) == 2
    error = capsys.readouterr().err
    assert "no outputs for 2024-05-01 00:00 .. 2024-05-02 00:00 UTC" in error and "anomaly-pipelines predict demo_web_metrics" in error


def test_a_picture_that_cannot_be_written_is_an_error_naming_it(tmp_path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    target = blocker / "plot.png"  # a folder cannot be made inside a file
    with pytest.raises(SinkError, match=f"cannot write the picture {target}"):
        plot_outputs(outputs(1, {0: [3]}), target)
    assert blocker.read_text() == "not a folder" and sorted(p.name for p in tmp_path.iterdir()) == ["file"]


@pytest.mark.parametrize(("name", "start"), [("plot.svg", b"<?xml"), ("plot.pdf", b"%PDF"), ("plot", b"\x89PNG")])
def test_a_picture_is_written_in_the_format_its_name_says(tmp_path, name: str, start: bytes) -> None:
    # PNG bytes were written under any name: scores.svg opened in no SVG viewer.
    plot_outputs(outputs(1, {0: [3]}), tmp_path / name)
    assert (tmp_path / name).read_bytes().startswith(start)
    with pytest.raises(SinkError, match=r"\.txt is not a picture format; name it \.png, \.svg or \.pdf"):
        plot_outputs(outputs(1, {0: [3]}), tmp_path / "plot.txt")
    assert not (tmp_path / "plot.txt").exists()


@pytest.mark.parametrize("value", ["$$", "$\\frac$", "price $5 to $10"])
def test_dollar_signs_in_names_are_drawn_as_text(tmp_path, value) -> None:
    """Dimension values are data: matplotlib must not read "$...$" in them as math (it fails on "$$")."""
    frame = outputs(1, {0: [5]}).assign(series=f"plan={value}")
    path = tmp_path / "dollars.png"
    panels = plot_outputs(frame, path, title=f"job costs ({value})")
    assert panels == [Panel(f"plan={value}", "cpu", 48, 1, 1)] and path.stat().st_size > 0


@pytest.fixture
def drawn(monkeypatch) -> list:
    """The figures ``plot_outputs`` saves, to read what each panel drew."""
    import pipelines.plots

    figures, real = [], pipelines.plots.save
    monkeypatch.setattr(pipelines.plots, "save", lambda figure, path: (figures.append(figure), real(figure, path)))
    return figures


def layers(axis) -> tuple:
    """The value line, the band and the anomaly markers of a panel."""
    value = next(line for line in axis.get_lines() if line.get_label() == "value")
    band = next(c for c in axis.collections if c.get_label() == "expected band")
    markers = [c for c in axis.collections if c.get_label().startswith("anomaly")]
    return value, band, markers


def test_a_long_series_is_thinned_to_the_pixels_keeping_spikes_gaps_and_every_flagged_row(tmp_path, drawn) -> None:
    """A million rows took half a minute to draw: each line is thinned to the picture's pixel columns,
    but a lone spike keeps its height, a gap stays a gap and every flagged row is marked."""
    rows = 1_000_000
    rng = np.random.default_rng(5)
    stamps = pd.date_range("2024-01-01", periods=rows, freq="min", tz="UTC")
    base = np.sin(np.arange(rows) / 50.0) + rng.normal(0, 0.1, rows)
    flagged = np.zeros(rows, dtype=bool)
    flagged[rng.choice(np.r_[:500_000, 500_100:rows], 500, replace=False)] = True  # none in the gap
    value = base + 3 * flagged
    value[777_900] = 40.0  # a spike the detector missed, mid-stretch: still to be seen
    value[500_000:500_100] = np.nan
    lower, upper = base - 0.5, base + 0.5
    lower[200_000:200_010] = np.nan
    frame = pd.DataFrame({"series": "host=a", "timestamp": stamps, "feature": "cpu", "value": value, "expected": base,
                          "lower": lower, "upper": upper, "is_anomaly": flagged})
    assert plot_outputs(frame, tmp_path / "long.png") == [Panel("host=a", "cpu", rows, 500, 500)]

    line, band, markers = layers(drawn[0].axes[0])
    x, y = line.get_xdata(), line.get_ydata()
    assert len(y) < rows / 20  # thinned
    assert np.nanmax(y) == 40.0 and np.nanmin(y) == np.nanmin(value)
    # The gap: nothing drawn between its neighbours but the break itself.
    inside = (x > stamps[499_999].tz_convert(None).to_datetime64()) & (x < stamps[500_100].tz_convert(None).to_datetime64())
    assert inside.any() and np.isnan(y[inside]).all()
    assert len(band.get_paths()) == 2  # the band is broken where its bounds are missing
    marked = np.concatenate([c.get_offsets()[:, 1] for c in markers])
    assert sorted(marked) == sorted(value[flagged])


def test_a_short_series_is_drawn_row_by_row(tmp_path, drawn) -> None:
    frame = outputs(1, {0: [5, 700]}, rows=3000).assign(timestamp=lambda f: f["timestamp"].dt.tz_convert("Europe/Paris"))
    frame.loc[100:110, "value"] = np.nan
    plot_outputs(frame, tmp_path / "short.png")
    axis = drawn[0].axes[0]
    line, band, markers = layers(axis)
    assert np.array_equal(line.get_ydata(), frame["value"].to_numpy(), equal_nan=True)
    assert np.array_equal(line.get_xdata(), frame["timestamp"].dt.tz_convert(None).to_numpy())
    expected = next(line for line in axis.get_lines() if line.get_label() == "expected")
    assert np.array_equal(expected.get_ydata(), frame["expected"].to_numpy())
    assert len(band.get_paths()[0].vertices) > 2 * 3000
    assert str(axis.xaxis.get_units()) == "Europe/Paris"  # dates labelled in the series' own zone


def test_a_lone_value_is_drawn_and_one_row_gets_a_readable_time_axis(tmp_path, drawn) -> None:
    """A line of one point draws nothing: a series of one row showed an empty panel spanning four
    years, and a value between two gaps was left out of the picture."""
    one = outputs(1, {}, rows=1)
    plot_outputs(one, tmp_path / "one.png")
    axis = drawn[-1].axes[0]
    dots = [line for line in axis.get_lines() if line.get_label() == "_alone"]
    assert [list(line.get_ydata()) for line in dots] == [one["expected"].tolist(), one["value"].tolist()]
    low, high = axis.get_xlim()
    assert high - low == pytest.approx(2 / 24)  # an hour either side, in matplotlib's days

    sparse = outputs(1, {}, rows=48)
    sparse.loc[sparse.index % 2 == 1, "value"] = np.nan  # every other row missing: no two values adjacent
    plot_outputs(sparse, tmp_path / "sparse.png")
    value = [line for line in drawn[-1].axes[0].get_lines() if line.get_label() == "_alone"][-1]
    assert np.array_equal(value.get_ydata(), sparse["value"].dropna().to_numpy())


def test_a_panel_says_when_every_value_is_missing_and_the_axis_its_zone(tmp_path, drawn) -> None:
    """A series whose values were all missing drew its band alone under "0 of 48 rows flagged", and
    the time axis ("01 00:00") did not say in which zone it was labelled."""
    frame = outputs(2, {}).assign(timestamp=lambda f: f["timestamp"].dt.tz_convert("Europe/Paris"))
    frame.loc[frame["series"] == "host=h01", "value"] = np.nan
    plot_outputs(frame, tmp_path / "void.png")
    titles = {axis.get_title(loc="left") for axis in drawn[0].axes if axis.get_title(loc="left")}
    assert titles == {"host=h00 · cpu: 0 of 48 rows flagged", "host=h01 · cpu: 0 of 48 rows flagged; every value missing"}
    assert drawn[0].axes[1].get_xlabel() == "timestamp (Europe/Paris)"
    plot_outputs(outputs(1, {}), tmp_path / "utc.png")
    assert drawn[-1].axes[0].get_xlabel() == "timestamp (UTC)"
