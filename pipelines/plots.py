"""Pictures of labeled outputs: each series' values, the band the detector expected, and the
rows it flagged, for people who would rather look than read a table of scores.

Matplotlib is an optional extra (``plot``; Prophet brings it too): only this module imports it,
and only when a picture is asked for.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import datetime, tzinfo
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from pipelines import storage
from pipelines.errors import DataValidationError, MissingDependencyError, SinkError

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

    from pipelines.config import JobConfig

#: Most panels in one picture: beyond a dozen a panel is too small to read; the ones with the
#: most flagged rows are drawn first.
MAX_PANELS = 12

#: A picture's width (inches) and resolution (dots per inch): together the pixel columns a line can show.
_WIDTH = 11
_DPI = 90
#: A long line is cut into this many stretches of its time axis, four per pixel column: with one, a
#: noisy series' thin value line came out visibly lighter than drawing every row does.
_STRETCHES = 4 * _WIDTH * _DPI

_NEEDED = ("series", "feature", "value", "expected", "lower", "upper", "is_anomaly")


def pyplot() -> ModuleType:
    """``matplotlib.pyplot`` drawing to files only (no display on a server), or an error naming the extra."""
    try:
        import matplotlib
    except ImportError as exc:
        raise MissingDependencyError("matplotlib", "plot", "Drawing pictures") from exc
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(figure: Figure, path: str | Path, dpi: int = _DPI) -> None:
    """Write ``figure`` at ``path`` (a local path or URL) whole or not at all, and close it: in the
    format its suffix names (``.svg``, ``.pdf``...; PNG without one). PNG bytes were written under
    any name, so ``scores.svg`` was a PNG no SVG viewer opens."""
    suffix = PurePosixPath(str(path)).suffix.lower().lstrip(".")
    buffer = io.BytesIO()
    try:
        known = figure.canvas.get_supported_filetypes()
        if suffix and suffix not in known:
            raise SinkError(f"cannot draw the picture {path}: .{suffix} is not a picture format; name it .png, .svg or .pdf")
        figure.savefig(buffer, format=suffix or "png", dpi=dpi)
    finally:
        pyplot().close(figure)
    try:
        storage.atomic_write(str(path), buffer.getvalue())
    except OSError as exc:  # a folder that cannot be made or written: nothing is left behind
        raise SinkError(f"cannot write the picture {path}: {exc.strerror or exc}; choose a writable path") from exc


def _drawn_rows(x: np.ndarray, lines: list[np.ndarray], stretches: int) -> np.ndarray:
    """Positions of the rows of ``lines`` (arrays along ``x``, which is sorted) to draw so that the
    picture shows what drawing every row would. A long series is cut into ``stretches`` equal
    stretches of ``x``; within each stretch and run of drawable rows the first, last, lowest and
    highest row of each line is kept (min/max or "M4" decimation), so a lone spike is still drawn
    at its height. The first row of each gap (a NaN) is kept, so a gap stays a gap. A series too
    short to gain anything is drawn whole.

    Plain numpy: no downsampling library is a dependency, and the usual one-point-per-bucket
    method (LTTB) may drop a spike that min/max keeps.
    """
    if len(x) <= 4 * stretches:
        return np.arange(len(x))
    drawable = np.isfinite(x) & np.logical_and.reduce([np.isfinite(line) for line in lines])
    gaps = np.flatnonzero(~drawable & np.r_[True, drawable[:-1]])
    rows = np.flatnonzero(drawable)
    if not rows.size:
        return gaps
    at = x[rows]
    low, high = at.min(), at.max()
    stretch = np.minimum(((at - low) * (stretches / ((high - low) or 1.0))).astype(np.int64), stretches - 1)
    run = np.cumsum(np.r_[True, np.diff(rows) > 1])
    new = np.r_[True, (stretch[1:] != stretch[:-1]) | (run[1:] != run[:-1])]
    starts = np.flatnonzero(new)
    group = np.cumsum(new) - 1
    keep = [starts, np.r_[starts[1:] - 1, rows.size - 1]]
    for line in lines:
        values = line[rows]
        for extreme in (np.minimum, np.maximum):
            hits = np.flatnonzero(values == extreme.reduceat(values, starts)[group])
            keep.append(hits[np.r_[True, group[hits][1:] != group[hits][:-1]]])  # the first such row of a group
    return np.union1d(rows[np.concatenate(keep)], gaps)


def _alone(position: np.ndarray, line: np.ndarray) -> np.ndarray:
    """Rows of ``line`` that can be drawn but whose neighbours (along ``position``, sorted) cannot."""
    drawable = np.isfinite(position) & np.isfinite(line)
    return drawable & ~np.r_[False, drawable[:-1]] & ~np.r_[drawable[1:], False]


def _along(column: pd.Series) -> tuple[np.ndarray, np.ndarray, tzinfo | None]:
    """The time (or row) axis of a panel: what matplotlib draws, numbers to cut it into stretches,
    and the time zone of its labels. Timestamps go to matplotlib as UTC ``datetime64`` (the zone set
    on the axis), not as ``Timestamp`` objects, which it converts one by one (seconds a million rows)."""
    tz = None
    if isinstance(column.dtype, pd.DatetimeTZDtype):
        tz, column = column.dt.tz, column.dt.tz_convert(None)
    if pd.api.types.is_datetime64_dtype(column.dtype):
        x = column.to_numpy()
        numbers = x.astype("datetime64[ns]").view(np.int64).astype(float)
        numbers[np.isnat(x)] = np.nan
        return x, numbers, tz
    if pd.api.types.is_numeric_dtype(column.dtype):
        x = column.to_numpy(dtype=float)
        return x, x, None
    return column.to_numpy(), np.arange(len(column), dtype=float), None  # drawn as it is, one stretch a row apart


@dataclass(frozen=True)
class Panel:
    """One drawn panel: a feature of a series, its rows, the rows flagged, and of those the
    rows where this feature contributed most to the anomaly (``feature_score``)."""

    series: str
    feature: str
    rows: int
    flagged: int
    leading: int


def plot_outputs(frame: pd.DataFrame, path: str | Path, *, title: str = "") -> list[Panel]:
    """Draw the outputs in ``frame`` (the platform's output columns) as one PNG at ``path``: a
    panel per series and feature, at most :data:`MAX_PANELS`, the most flagged first.

    A multivariate detector flags a timestamp for every feature of its series; the marker is
    filled on the feature that contributed most there (the largest ``feature_score``) and
    hollow on the others, so the picture shows which signal moved. The time axis is
    ``timestamp``, or ``row`` where there are no timestamps (``detect`` without a time column).
    A series longer than the picture has pixels is thinned to what they can show (its spikes and
    gaps kept, see :func:`_drawn_rows`); every flagged row is marked all the same.
    """
    missing = [column for column in _NEEDED if column not in frame.columns]
    if missing:
        raise DataValidationError(f"cannot plot outputs without the column(s) {', '.join(missing)}")
    if frame.empty:
        raise DataValidationError("no output rows to plot")
    plt = pyplot()
    axis_column = "timestamp" if "timestamp" in frame and frame["timestamp"].notna().any() else "row"
    frame = frame.assign(_leads=True)
    if "feature_score" in frame and frame["feature"].nunique() > 1:
        # Among the features flagged at a timestamp (per-feature detectors flag each on its own);
        # a row without a contribution leads.
        contribution = frame["feature_score"].astype(float).fillna(float("inf")).where(frame["is_anomaly"].astype(bool), -float("inf"))
        frame["_leads"] = contribution.eq(contribution.groupby([frame["series"], frame[axis_column]]).transform("max"))
    groups = [(key, part.sort_values(axis_column)) for key, part in frame.groupby(["series", "feature"], sort=True)]
    groups.sort(key=lambda item: -int(item[1]["is_anomaly"].sum()))  # stable: ties stay in name order
    shown = groups[:MAX_PANELS]

    figure, axes = plt.subplots(len(shown), 1, figsize=(_WIDTH, 2.3 * len(shown) + 0.6), squeeze=False, layout="constrained")
    drawn = []
    legend: dict[str, object] = {}
    for axis, ((series, feature), part) in zip(axes[:, 0], shown, strict=True):
        x, position, tz = _along(part[axis_column])
        if tz is not None:
            axis.xaxis_date(tz)
        values, expected = part["value"].to_numpy(dtype=float), part["expected"].to_numpy(dtype=float)
        lower, upper = part["lower"].to_numpy(dtype=float), part["upper"].to_numpy(dtype=float)
        flagged = part["is_anomaly"].to_numpy(dtype=bool)
        leads = flagged & part["_leads"].to_numpy(dtype=bool)
        # A long series is thinned to what the picture's pixels can show (a million rows took half a
        # minute and look the same); the flagged rows are all marked below, whatever the thinning kept.
        band = _drawn_rows(position, [lower, upper], _STRETCHES)
        axis.fill_between(x[band], lower[band], upper[band], color="tab:blue", alpha=0.15, lw=0, label="expected band")
        line = _drawn_rows(position, [expected], _STRETCHES)
        axis.plot(x[line], expected[line], color="tab:blue", lw=0.7, ls="--", label="expected")
        line = _drawn_rows(position, [values], _STRETCHES)
        axis.plot(x[line], values[line], color="0.2", lw=0.7, label="value")
        # A value between gaps (or a series of one row) is a line of one point, which draws nothing:
        # such values were missing from the picture, and a one-row series showed an empty panel.
        for curve, style in ((expected, {"color": "tab:blue"}), (values, {"color": "0.2"})):  # the value on top
            alone = _alone(position, curve)
            if alone.any():
                axis.plot(x[alone], curve[alone], ls="none", marker="o", ms=2.5, label="_alone", **style)
        placed = np.isfinite(position)
        if placed.any() and np.issubdtype(x.dtype, np.datetime64) and position[placed].min() == position[placed].max():
            # One instant: matplotlib spans it by years either side; an hour either side, as the dashboard does.
            moment = x[placed][0]
            axis.set_xlim(moment - np.timedelta64(1, "h"), moment + np.timedelta64(1, "h"))
        # Only markers that are there get a legend entry.
        if leads.any():
            axis.scatter(x[leads], values[leads], color="tab:red", s=18, zorder=3, label="anomaly")
        if (flagged & ~leads).any():
            axis.scatter(x[flagged & ~leads], values[flagged & ~leads], facecolors="none", edgecolors="tab:red", s=18, zorder=3,
                         label="anomaly, another signal contributed most")
        # Names are data, not markup: matplotlib would read "$...$" in a dimension value ("price=$5 to $10")
        # as mathematical notation, and fail on "$$".
        missing = "" if np.isfinite(values).any() else "; every value missing"
        caption = f"{series} · {feature}: {int(flagged.sum())} of {len(part)} rows flagged{missing}"
        axis.set_title(caption, fontsize=9, loc="left", parse_math=False)
        drawn.append(Panel(str(series), str(feature), len(part), int(flagged.sum()), int(leads.sum())))
        for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    figure.legend(list(legend.values()), list(legend), loc="outside lower center", fontsize=7, ncols=5, frameon=False)
    # The zone the times are labelled in (the outputs are UTC): "01 00:00" did not say which.
    zone = _along(shown[-1][1][axis_column])[2]
    axes[-1, 0].set_xlabel(f"{axis_column} ({zone})" if zone is not None else axis_column)
    omitted = len(groups) - len(shown)
    heading = title + (f" ({omitted} more panels not drawn: the {len(shown)} with the most flagged rows are)" if omitted else "")
    if heading:
        figure.suptitle(heading, fontsize=10, parse_math=False)
    save(figure, path)
    return drawn



def plot_job(job: JobConfig, start: datetime, end: datetime, path: str | Path, *, series: str | None = None) -> list[Panel]:
    """Draw what ``job`` published for ``[start, end)`` (its Parquet outputs), one series or all."""
    from pipelines.config import resolve_path
    from pipelines.sinks import ParquetSink

    frame = ParquetSink(resolve_path(job.outputs.parquet), job.outputs.storage_options).read(job=job.name, start=start, end=end)
    if series is not None:
        known = sorted(frame["series"].unique()) if len(frame) else []
        frame = frame[frame["series"] == series]
        if frame.empty and known:
            raise DataValidationError(
                f"job {job.name}: no series {series!r} in its outputs for {start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC; "
                f"its series there: {', '.join(known)}"
            )
    if frame.empty:
        raise DataValidationError(
            f"job {job.name}: no outputs for {start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC; "
            f"run its predict DAG (or anomaly-pipelines predict {job.name}) for that window first"
        )
    window = f"{start:%Y-%m-%d %H:%M} .. {end:%Y-%m-%d %H:%M} UTC"
    return plot_outputs(frame, path, title=f"job {job.name} ({job.model.kind}), {window}")
