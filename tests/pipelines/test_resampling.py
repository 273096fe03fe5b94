"""Series put on the job's frequency grid by its ``resample`` rule, and the counts every run
reports of what was merged, filled and left missing."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipelines.config import FileSource, ResampleConfig, get_job, parse_job
from pipelines.errors import ConfigError
from pipelines.extraction import extract, read_series, validate
from pipelines.resampling import ResampleStats, floor_to_grid, grid_buckets, resample_series
from pipelines.runner import run_predict, run_train
from pipelines.workspace import Window, to_utc, validation_report_path

HOUR = timedelta(hours=1)


def series(*rows: tuple[str, float, float]) -> pd.DataFrame:
    index = pd.DatetimeIndex([pd.Timestamp(t, tz="UTC") for t, _, _ in rows], name="ts")
    return pd.DataFrame({"a": [a for _, a, _ in rows], "b": [b for _, _, b in rows]}, index=index)


IRREGULAR = series(
    ("2024-01-01 00:05", 1.0, 10.0),
    ("2024-01-01 00:40", 3.0, 30.0),  # same bucket as 00:05
    ("2024-01-01 01:00", 5.0, 50.0),
    # 02:00 missing: a gap of one bucket
    ("2024-01-01 03:20", 7.0, np.nan),  # a value missing in the source stays missing
    # 04:00 to 06:00 missing: a gap of three buckets
    ("2024-01-01 07:00", 9.0, 90.0),
)


@pytest.mark.parametrize(
    ("aggregate", "first_bucket"),
    [("mean", 2.0), ("sum", 4.0), ("min", 1.0), ("max", 3.0), ("first", 1.0), ("last", 3.0), ("median", 2.0)],
)
def test_rows_sharing_a_bucket_are_combined_by_the_aggregate(aggregate: str, first_bucket: float) -> None:
    out, stats = resample_series(IRREGULAR, HOUR, ResampleConfig(aggregate=aggregate))
    assert out.index[0] == pd.Timestamp("2024-01-01 00:00", tz="UTC")
    assert out["a"].iloc[0] == first_bucket
    assert stats.merged_rows == 2 and stats.moved_rows == 3  # 00:05, 00:40, 03:20 are off the grid
    # An empty bucket is missing, never a summed zero.
    assert np.isnan(out.loc["2024-01-01 02:00", "a"])


def test_default_rule_leaves_gaps_missing_between_the_first_and_last_rows() -> None:
    out, stats = resample_series(IRREGULAR, HOUR, ResampleConfig())
    assert list(out.index) == list(pd.date_range("2024-01-01 00:00", "2024-01-01 07:00", freq="h", tz="UTC"))
    assert out.index.name == "ts"
    assert out["a"].isna().tolist() == [False, False, True, False, True, True, True, False]
    assert np.isnan(out.loc["2024-01-01 03:00", "b"])
    assert stats == ResampleStats(rows=5, buckets=8, merged_rows=2, moved_rows=3, filled=0, missing=4)


def test_forward_fill_covers_gaps_up_to_the_limit() -> None:
    out, stats = resample_series(IRREGULAR, HOUR, ResampleConfig(fill="ffill", ffill_limit=2))
    # The one-bucket gap is filled; of the three-bucket gap only the first two buckets are.
    assert out.loc["2024-01-01 02:00", "a"] == 5.0
    assert out.loc["2024-01-01 04:00", "a"] == 7.0 and out.loc["2024-01-01 05:00", "a"] == 7.0
    assert np.isnan(out.loc["2024-01-01 06:00", "a"])
    # b was missing at 03:00 in the source: it stays missing and nothing after it is invented.
    assert np.isnan(out.loc["2024-01-01 03:00", "b"])
    assert out.loc["2024-01-01 02:00", "b"] == 50.0
    assert stats.filled == 3 and stats.missing == 1


@pytest.mark.parametrize("limit", [None, 1, 2])
def test_forward_fill_never_reaches_across_a_value_missing_in_the_source(limit: int | None) -> None:
    # a was reported missing at 01:00: the empty 02:00 and 03:00 follow a missing value, not 1.0.
    rows = series(("2024-01-01 00:00", 1.0, 10.0), ("2024-01-01 01:00", np.nan, 20.0), ("2024-01-01 04:00", 4.0, 40.0))
    out, stats = resample_series(rows, HOUR, ResampleConfig(fill="ffill", ffill_limit=limit))

    assert out["a"].isna().tolist() == [False, True, True, True, False]
    assert out["b"].tolist()[:3] == [10.0, 20.0, 20.0]  # b was measured at 01:00: it fills
    assert np.isnan(out.loc["2024-01-01 03:00", "b"]) == (limit == 1)
    # In IRREGULAR, b was missing at 03:00: nothing after it is invented either.
    irregular, _ = resample_series(IRREGULAR, HOUR, ResampleConfig(fill="ffill", ffill_limit=limit))
    assert irregular.loc["2024-01-01 04:00":"2024-01-01 06:00", "b"].isna().all()
    assert irregular.loc["2024-01-01 04:00", "a"] == 7.0
    # A bucket counts as filled when any feature was filled (b here).
    assert (stats.filled, stats.missing) == ((1, 1) if limit == 1 else (2, 0))


def test_forward_fill_without_a_limit_fills_every_gap() -> None:
    out, stats = resample_series(IRREGULAR, HOUR, ResampleConfig(fill="ffill"))
    assert out["a"].notna().all()
    assert stats.filled == 4 and stats.missing == 0


def test_a_regular_series_is_returned_unchanged() -> None:
    index = pd.date_range("2024-01-01", periods=48, freq="h", tz="UTC", name="ts")
    rows = pd.DataFrame({"a": np.arange(48.0)}, index=index)
    out, stats = resample_series(rows, HOUR, ResampleConfig())
    assert out is rows
    assert stats == ResampleStats(48, 48, 0, 0, 0, 0) and not stats.changed


def test_buckets_are_aligned_to_the_epoch_and_left_closed() -> None:
    rows = series(("2024-01-01 23:59:59", 1.0, 1.0), ("2024-01-02 00:00", 2.0, 2.0), ("2024-01-02 05:59", 4.0, 4.0))
    out, _ = resample_series(rows, timedelta(hours=6), ResampleConfig())
    assert out["a"].to_dict() == {
        pd.Timestamp("2024-01-01 18:00", tz="UTC"): 1.0,
        pd.Timestamp("2024-01-02 00:00", tz="UTC"): 3.0,
    }
    # Weekly buckets count from 1970-01-01, a Thursday.
    assert floor_to_grid(to_utc("2024-01-01T10:00:00Z"), timedelta(weeks=1)) == to_utc("2023-12-28T00:00:00Z")
    assert floor_to_grid(to_utc("2024-01-01T10:15:00+02:00"), HOUR) == to_utc("2024-01-01T08:00:00Z")


def test_ffill_limit_without_ffill_is_rejected_with_the_field_path() -> None:
    job = get_job("demo_web_metrics").model_dump(mode="json", by_alias=True)
    job["resample"] = {"fill": "none", "ffill_limit": 3}
    with pytest.raises(ConfigError, match="resample: ffill_limit only applies with fill: ffill"):
        parse_job(job, source="web.yaml")
    job["resample"] = {"aggregate": "average"}
    with pytest.raises(ConfigError, match=r"resample.aggregate: .*'mean'.*\(got 'average'\)"):
        parse_job(job, source="web.yaml")


# -- through the pipeline -------------------------------------------------------------------


def irregular_job(project: Path, **rule) -> tuple:
    """demo_web_metrics over a CSV where 2024-03-03 has extra readings, a missing hour and a
    three-hour outage in region eu."""
    data = pd.read_csv(Path(__file__).resolve().parents[2] / "data" / "demo" / "web_metrics.csv")
    stamp = pd.to_datetime(data["timestamp"])
    eu = data["region"] == "eu"
    day = stamp.dt.strftime("%Y-%m-%d") == "2024-03-03"
    gap = eu & day & stamp.dt.hour.isin([4, 9, 10, 11])
    extra = data[eu & day & stamp.dt.hour.isin([14, 15])].copy()
    extra["timestamp"] = (pd.to_datetime(extra["timestamp"]) + pd.Timedelta(minutes=30)).dt.strftime("%Y-%m-%dT%H:%M:%SZ")
    extra["requests"] = extra["requests"] + 100
    path = project / "irregular.csv"
    pd.concat([data[~gap], extra]).to_csv(path, index=False)
    job = get_job("demo_web_metrics").model_copy(
        update={"source": FileSource(kind="file", path=str(path), format="csv"), "resample": ResampleConfig(**rule)}
    )
    return job, data[eu & day & stamp.dt.hour.isin([14, 15])]


DAY = Window(to_utc("2024-03-03T00:00:00Z"), to_utc("2024-03-04T00:00:00Z"))


def test_validate_resamples_each_series_and_reports_it(project: Path) -> None:
    job, originals = irregular_job(project, fill="ffill", ffill_limit=1)
    extracted = extract(job, DAY, run_id="rs")
    keys = validate(job, DAY, run_id="rs", purpose="predict", raw_path=extracted.paths[0])
    eu = read_series(job, "rs", "region=eu", purpose="predict")
    assert len(eu) == 24 and eu.index.is_monotonic_increasing
    # 14:00 and 14:30 share a bucket: their mean.
    assert eu.loc["2024-03-03 14:00", "requests"] == originals["requests"].iloc[0] + 50
    assert eu.loc["2024-03-03 04:00", "requests"] == eu.loc["2024-03-03 03:00", "requests"]  # filled
    assert eu.loc["2024-03-03 09:00", "requests"] == eu.loc["2024-03-03 08:00", "requests"]  # filled (limit 1)
    assert eu.loc["2024-03-03 10:00":"2024-03-03 11:00", "requests"].isna().all()  # left missing
    expected = {"rows": 22, "buckets": 24, "merged_rows": 4, "moved_rows": 2, "filled": 2, "missing": 2}
    assert eu.attrs["resampling"] == expected
    assert read_series(job, "rs", "region=us", purpose="predict").attrs["resampling"] == {
        "rows": 24, "buckets": 24, "merged_rows": 0, "moved_rows": 0, "filled": 0, "missing": 0
    }
    report = json.loads(Path(validation_report_path(job, "predict", DAY, "rs")).read_text())
    assert report["resampling"]["rule"] == {"aggregate": "mean", "fill": "ffill", "ffill_limit": 1}
    assert report["resampling"]["series"]["region=eu"] == expected
    assert set(report["resampling"]["series"]) == set(keys)


def test_train_and_predict_results_carry_the_counts(project: Path, caplog: pytest.LogCaptureFixture) -> None:
    job, _ = irregular_job(project)
    trained = run_train(job, Window(to_utc("2024-02-05T00:00:00Z"), DAY.end), run_id="train")
    eu = next(r for r in trained if r["series"] == "region=eu")
    assert eu["resampling"]["missing"] == 4 and eu["resampling"]["merged_rows"] == 4
    caplog.set_level("INFO")
    result = run_predict(job, DAY, run_id="predict")
    assert result.rows_per_series["region=eu"] == 24  # missing hours are kept as rows without a score
    assert "series region=eu: resampled to 1:00:00 (aggregate mean, fill none)" in caplog.text
    assert "4 rows merged into shared buckets, 2 moved to their bucket start, 0 empty buckets forward-filled, 4 left missing" in caplog.text
    frame = pd.read_parquet(project / "var" / "outputs" / f"job={job.name}")
    gaps = frame[(frame["series"] == "region=eu") & frame["timestamp"].dt.hour.isin([4, 9, 10, 11])]
    assert gaps["value"].isna().all() and not gaps["is_anomaly"].any() and (gaps["score"] == 0).all()


def test_regular_data_off_the_epoch_grid_keep_their_timestamps() -> None:
    """5-minute data stamped at :04, :09, ... with a gap: the gap becomes one missing row, and
    no timestamp moves."""
    from pipelines.config import ResampleConfig
    from pipelines.resampling import resample_series

    index = pd.date_range("2024-01-01 00:04", periods=12, freq="5min", tz="UTC").delete([5])
    rows = pd.DataFrame({"v": np.arange(11.0)}, index=index)
    out, stats = resample_series(rows, pd.Timedelta("5min").to_pytimedelta(), ResampleConfig())
    assert stats.moved_rows == 0 and stats.missing == 1 and stats.merged_rows == 0
    assert out.index.equals(pd.date_range("2024-01-01 00:04", periods=12, freq="5min", tz="UTC"))
    assert np.isnan(out["v"].iloc[5]) and out["v"].iloc[6] == 5.0


@pytest.mark.parametrize(
    "stamps",
    [
        ["2024-01-01 00:59", "2024-01-01 02:00"],  # 61 minutes apart, yet on three hourly buckets
        ["2024-01-01 00:05", "2024-01-01 00:40", "2024-01-01 01:00", "2024-01-01 03:20", "2024-01-01 07:00"],
        ["2024-01-01 00:04", "2024-01-01 05:04", "2024-01-01 09:04"],  # one offset: the grid shifts
        ["2024-01-01 00:00"],
    ],
)
def test_grid_buckets_counts_the_buckets_resample_series_makes(stamps: list[str]) -> None:
    from pipelines.resampling import grid_buckets

    rows = pd.DataFrame({"a": np.arange(float(len(stamps)))}, index=pd.DatetimeIndex(stamps, tz="UTC"))
    out, stats = resample_series(rows, HOUR, ResampleConfig())
    assert grid_buckets(rows.index, HOUR) == len(out) == stats.buckets


# -- daily data stamped at a local midnight, across daylight-saving changes ---------------------


@pytest.mark.parametrize(
    ("zone", "first", "last"),
    [
        ("America/New_York", "2024-03-01", "2024-03-20"),  # 05:00Z, then 04:00Z from 2024-03-11
        ("America/New_York", "2024-10-25", "2024-11-10"),  # 04:00Z, then 05:00Z from 2024-11-04
        ("Europe/Berlin", "2024-03-20", "2024-04-05"),  # 23:00Z, then 22:00Z the day before
        ("Australia/Sydney", "2024-03-28", "2024-04-15"),  # 13:00Z, then 14:00Z the day before
        # 00:00Z, then 23:00Z the day before from 2024-04-01: two local days in UTC's 2024-03-31 (merged)
        ("Europe/London", "2024-03-25", "2024-04-10"),
        # 23:00Z, then 00:00Z from 2024-10-28: no local day in UTC's 2024-10-27 (one invented)
        ("Europe/London", "2024-10-20", "2024-11-05"),
    ],
)
@pytest.mark.parametrize("days", [1, 7])
def test_days_at_local_midnight_keep_their_stamps_across_a_dst_change_in_every_window(
    zone: str, first: str, last: str, days: int
) -> None:
    """Before: rows with two times of day shared no grid offset, so a window straddling the
    change moved every day to 00:00Z while a window on one side kept 05:00Z or 04:00Z: the same
    day was published under another stamp depending on the run (and in New York on the previous
    local date)."""
    local = pd.date_range(first, periods=40 if days == 7 else None, end=None if days == 7 else last, freq=f"{days}D", tz=zone)
    stamps = local.tz_convert("UTC").rename("ts")
    rows = pd.DataFrame({"a": np.arange(float(len(stamps)))}, index=stamps)
    frequency = timedelta(days=days)
    for start in range(len(rows) - 1):
        for end in (start + 2, len(rows)):
            out, stats = resample_series(rows.iloc[start:end], frequency, ResampleConfig())
            assert out.index.equals(stamps[start:end]) and not stats.changed, (start, end)
    # A missing day sits at the time of day of the one before it, on its own UTC day.
    out, stats = resample_series(rows.drop(stamps[5]), frequency, ResampleConfig())
    assert stats == ResampleStats(len(rows) - 1, len(rows), 0, 0, 0, 1)
    assert out.index[5] == stamps[4] + frequency and np.isnan(out["a"].iloc[5])
    assert out.index.drop(stamps[5:6]).equals(stamps.drop(stamps[5]))
    assert grid_buckets(rows.drop(stamps[5]).index, frequency) == len(out)


def test_a_missing_london_day_across_the_spring_change_is_one_missing_row() -> None:
    """London's local days either side of the change share UTC's 2024-03-31: before, they were
    averaged into one row, and a day missing just before them went unnoticed."""
    stamps = pd.date_range("2024-03-28", "2024-04-03", freq="D", tz="Europe/London").tz_convert("UTC").rename("ts")
    rows = pd.DataFrame({"a": np.arange(float(len(stamps)))}, index=stamps).drop(stamps[2])  # local 03-30
    out, stats = resample_series(rows, timedelta(days=1), ResampleConfig(fill="ffill"))
    assert stats == ResampleStats(rows=6, buckets=7, merged_rows=0, moved_rows=0, filled=1, missing=0)
    assert out["a"].tolist() == [0.0, 1.0, 1.0, 3.0, 4.0, 5.0, 6.0]
    assert out.index[2] == stamps[1] + pd.Timedelta(days=1) and out.index.drop(out.index[2]).equals(rows.index)
    assert grid_buckets(rows.index, timedelta(days=1)) == len(out)


@pytest.mark.parametrize("hours", [4, 6, 12])
def test_rows_every_few_hours_of_a_local_clock_keep_their_stamps_across_a_dst_change(hours: int) -> None:
    """12-hourly rows at New York's 00:00 and 12:00 (05:00Z and 17:00Z, then 04:00Z and 16:00Z):
    before, a window straddling the change moved every row to 00:00Z and 12:00Z, while a window on
    one side kept them."""
    for first, last in (("2024-03-05", "2024-03-15"), ("2024-10-28", "2024-11-08")):
        stamps = pd.date_range(first, last, freq=f"{hours}h").tz_localize("America/New_York").tz_convert("UTC").rename("ts")
        rows = pd.DataFrame({"a": np.arange(float(len(stamps)))}, index=stamps)
        frequency = timedelta(hours=hours)
        for start in range(0, len(rows) - 1, 3):
            out, stats = resample_series(rows.iloc[start:], frequency, ResampleConfig())
            assert out.index.equals(stamps[start:]) and not stats.changed, (first, start)
        out, stats = resample_series(rows.drop(stamps[10]), frequency, ResampleConfig())
        assert stats.missing == 1 and out.index.drop(out.index[10]).equals(stamps.drop(stamps[10]))
        assert grid_buckets(rows.drop(stamps[10]).index, frequency) == len(out)


def test_rows_two_hours_apart_at_a_three_hour_frequency_share_a_bucket() -> None:
    """A gap of an hour less than a period is a local clock's shift only at several hours' frequency."""
    rows = series(("2024-01-01 00:00", 1.0, 1.0), ("2024-01-01 02:00", 3.0, 3.0), ("2024-01-01 03:00", 5.0, 5.0))
    out, stats = resample_series(rows, timedelta(hours=3), ResampleConfig())
    assert out["a"].tolist() == [2.0, 5.0] and stats.merged_rows == 2


def test_daily_rows_at_different_times_of_one_utc_day_are_merged_at_its_start() -> None:
    rows = series(("2024-01-01 05:00", 1.0, 1.0), ("2024-01-01 17:00", 3.0, 3.0), ("2024-01-03 05:00", 5.0, 5.0))
    out, stats = resample_series(rows, timedelta(days=1), ResampleConfig(fill="ffill"))
    assert out["a"].to_dict() == {
        pd.Timestamp("2024-01-01 00:00", tz="UTC"): 2.0,
        pd.Timestamp("2024-01-02 00:00", tz="UTC"): 2.0,  # the time of day of the bucket filled from
        pd.Timestamp("2024-01-03 05:00", tz="UTC"): 5.0,
    }
    assert stats == ResampleStats(rows=3, buckets=3, merged_rows=2, moved_rows=2, filled=1, missing=0)


@pytest.mark.parametrize(
    ("zone", "stretches"),
    [
        ("America/New_York", (("2024-03-09", "2024-03-12"), ("2024-11-02", "2024-11-05"))),
        # Midnight at 00:00Z in winter, 23:00Z the day before in summer: a one-day run reads two local
        # days (spring) or none (autumn); the backfill merged two local days into one row.
        ("Europe/London", (("2024-03-29", "2024-04-02"), ("2024-10-25", "2024-10-29"))),
    ],
)
def test_a_daily_job_publishes_each_local_day_once_under_one_stamp_in_every_run(
    project: Path, zone: str, stretches: tuple[tuple[str, str], ...]
) -> None:
    """A daily job over a CSV stamped at a zone's midnight with its offsets (New York's -05:00 and
    -04:00, London's +00:00 and +01:00): each local day is published once, at its local midnight,
    whether it is scored alone or by a re-run of a longer window, around the spring and the autumn
    changes."""
    import sqlalchemy as sa

    local = pd.date_range("2024-01-01", "2024-12-31", freq="D", tz=zone)
    values = 100 + np.sin(np.arange(len(local)))
    path = project / "daily.csv"
    pd.DataFrame(
        {"timestamp": [t.isoformat() for t in local], "region": "us", "requests": values, "latency_ms": values / 2}
    ).to_csv(path, index=False)
    base = get_job("demo_web_metrics")
    job = base.model_copy(
        update={
            "source": FileSource(kind="file", path=str(path), format="csv"),
            "frequency": timedelta(days=1),
            "model": base.model.model_copy(update={"params": {"season": None, "level_window": 3}}),
            "validation": base.validation.model_copy(update={"min_rows": 3, "suite": None}),
        }
    )
    run_train(job, Window(to_utc("2024-02-01T00:00:00Z"), to_utc("2024-02-29T00:00:00Z")), run_id="train")
    engine = sa.create_engine(f"sqlite:///{project / 'var' / 'anomalies.db'}")

    def published(start: str, end: str) -> tuple[list[pd.Timestamp], list[pd.Timestamp]]:
        parquet = pd.read_parquet(project / "var" / "outputs" / f"job={job.name}")
        parquet = parquet[(parquet["feature"] == "requests") & parquet["timestamp"].between(start, end, inclusive="left")]
        with engine.connect() as connection:
            table = pd.read_sql("SELECT timestamp FROM anomalies WHERE feature = 'requests' ORDER BY timestamp", connection)
        stamps = pd.to_datetime(table["timestamp"], utc=True)
        return sorted(parquet["timestamp"]), sorted(stamps[stamps.between(start, end, inclusive="left")])

    # The days after each change: the history a one-day run reads straddles it.
    stamps = local.tz_convert("UTC")
    for first, last in stretches:
        days = pd.date_range(first, last, freq="D", tz="UTC")
        end = days[-1] + pd.Timedelta(days=1)
        expected = list(stamps[(stamps >= days[0]) & (stamps < end)])
        for day in days[-2:]:  # the scheduled runs, one day each
            run_predict(job, Window(day.to_pydatetime(), (day + pd.Timedelta(days=1)).to_pydatetime()), run_id=f"p{day:%m%d}")
        scheduled = [t for t in expected if t >= days[-2]]
        assert published(str(days[-2]), str(end)) == (scheduled, scheduled)
        # A backfill of the whole stretch replaces those rows under the same stamps, and adds the others.
        run_predict(job, Window(days[0].to_pydatetime(), end.to_pydatetime()), run_id=f"b{first}")
        assert published(first, str(end)) == (expected, expected)
    engine.dispose()
