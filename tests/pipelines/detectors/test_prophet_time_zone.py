"""ProphetDetector's ``time_zone``: seasonalities and holidays on local wall-clock time."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipelines.detectors.prophet import ProphetDetector

pytestmark = [
    pytest.mark.filterwarnings(r"error::DeprecationWarning:pipelines\."),
    pytest.mark.filterwarnings(r"error::PendingDeprecationWarning:pipelines\."),
    pytest.mark.filterwarnings(r"error::FutureWarning:pipelines\."),
]

NEW_YORK = "America/New_York"


def _local_cycle(start: str, end: str, freq: str, seed: int) -> pd.DataFrame:
    """UTC rows of a daily cycle that follows New York's wall clock, plus unit noise."""
    rng = np.random.default_rng(seed)
    index = pd.date_range(start, end, freq=freq, tz="UTC", inclusive="left")
    local = index.tz_convert(NEW_YORK)
    hours = local.hour.to_numpy() + local.minute.to_numpy() / 60
    return pd.DataFrame({"visits": 10 + 3 * np.sin(2 * np.pi * hours / 24) + rng.normal(size=len(index))}, index=index)


@pytest.fixture(scope="module")
def thanksgiving() -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Eight weeks of hourly rows around Thanksgiving 2023 with a dip of 8 sigma over the local day;
    masks of that local day and of the evening before it (19:00-24:00 local, already the 23rd in UTC)."""
    frame = _local_cycle("2023-10-16", "2023-12-11", "h", seed=0)
    local = frame.index.tz_convert(NEW_YORK)
    dates = np.array(local.date)
    on_day = dates == pd.Timestamp("2023-11-23").date()
    evening_before = (dates == pd.Timestamp("2023-11-22").date()) & (local.hour >= 19)
    frame.loc[on_day, "visits"] -= 8.0
    return frame, on_day, evening_before


def test_holidays_fall_on_local_days(thanksgiving) -> None:
    # In UTC the holiday ran from 19:00 the evening before to 19:00 on the day, New York time: the
    # evening before was expected to dip and the day's last five hours were not.
    frame, on_day, evening_before = thanksgiving
    utc = ProphetDetector(holidays_country="US").fit(frame).detect(frame).is_anomaly[:, 0]
    assert utc[on_day].sum() >= 3 and utc[evening_before].sum() >= 2
    local = ProphetDetector(holidays_country="US", time_zone=NEW_YORK).fit(frame).detect(frame)
    assert not local.is_anomaly[on_day | evening_before].any()
    week_before = np.roll(on_day, -24 * 7)
    assert (local.expected[on_day, 0] - local.expected[week_before, 0]).mean() == pytest.approx(-8.0, abs=1.0)


@pytest.mark.parametrize("freq", ["h", "15min"])
def test_daylight_saving_days_keep_every_row_in_order(freq: str) -> None:
    # Spring forward (2024-03-10) skips 02:00-03:00 local; fall back (2024-11-03) repeats 01:00-02:00,
    # and quarter-hourly rows then go back in local time (01:45 EDT, 01:00 EST): Prophet returned
    # its forecast sorted by time, so rows would have taken another row's forecast.
    for start, end, change in (("2024-02-25", "2024-03-13", "2024-03-10"), ("2024-10-20", "2024-11-06", "2024-11-03")):
        frame = _local_cycle(start, end, freq, seed=1)
        day = pd.Timestamp(change, tz="UTC")
        train, test = frame[frame.index < day + pd.Timedelta("1D")], frame[frame.index >= day - pd.Timedelta("6h")]
        detector = ProphetDetector(time_zone=NEW_YORK).fit(train)  # the change among its rows too
        assert len(detector.models_[0].history) == len(train)
        detection = detector.detect(test)
        assert detection.index.equals(test.index) and np.isfinite(detection.score).all()
        model = detector.models_[0]
        local = test.index.tz_convert(NEW_YORK).tz_localize(None)
        one_by_one = [float(model.predict(pd.DataFrame({"ds": [t]}))["yhat"].iloc[0]) for t in local]
        np.testing.assert_allclose(detection.expected[:, 0], one_by_one, rtol=1e-9)
        # The cycle follows the wall clock across the change: the forecast misses by noise only.
        assert np.abs(detection.values - detection.expected).mean() < 1.0


def test_save_and_load_give_identical_scores() -> None:
    from pipelines.detectors import load_detector

    frame = _local_cycle("2024-10-13", "2024-11-06", "30min", seed=2)
    train, test = frame.iloc[:-24 * 6], frame.iloc[-24 * 6 :]  # the last three days, the fall back among them
    detector = ProphetDetector(holidays_country="US", time_zone=NEW_YORK).fit(train)
    loaded = load_detector("prophet", detector.to_files())
    assert loaded.time_zone == NEW_YORK
    before, after = detector.detect(test), loaded.detect(test)
    for field in ("expected", "lower", "upper", "score", "is_anomaly"):
        np.testing.assert_array_equal(getattr(before, field), getattr(after, field), err_msg=field)


def test_utc_is_the_default_and_unchanged() -> None:
    from tests.pipelines.detectors.conftest import seasonal_frame

    frame = seasonal_frame(14, seed=3)
    default, utc = ProphetDetector().fit(frame), ProphetDetector(time_zone="UTC").fit(frame)
    assert default.time_zone == "UTC"
    # Prophet sees the UTC timestamps as they are, as before the parameter existed.
    np.testing.assert_array_equal(default.models_[0].history["ds"].to_numpy(), frame.index.tz_localize(None).to_numpy())
    for field in ("expected", "lower", "upper", "score"):
        np.testing.assert_array_equal(getattr(default.detect(frame), field), getattr(utc.detect(frame), field))


@pytest.mark.parametrize(
    ("zone", "hint"),
    [
        ("America/New_Yrok", r" \(did you mean 'America/New_York'\?\)"),
        ("europe/paris", r" \(did you mean 'Europe/Paris'\?\)"),
        ("localtime", ""),  # the worker's own zone: another machine would model other days
    ],
)
def test_an_unknown_time_zone_is_a_parameter_error(zone: str, hint: str) -> None:
    from pipelines.config import ModelConfig
    from pipelines.detectors import make_detector
    from pipelines.errors import ConfigError

    what = rf"not an IANA time zone name such as 'America/New_York', 'Europe/Paris' or 'UTC'{hint}"
    with pytest.raises(ConfigError, match=rf"parameter 'time_zone': {what} \(got '{zone}'\)"):
        make_detector("prophet", {"time_zone": zone})
    with pytest.raises(ConfigError, match=rf"parameter 'time_zone': {what}"):  # set_params cannot skip the check
        index = pd.date_range("2024-01-01", periods=30, freq="h", tz="UTC")
        ProphetDetector().set_params(time_zone=zone).fit(pd.DataFrame({"a": np.arange(30.0)}, index=index))
    with pytest.raises(ValueError, match=rf"params\.time_zone: {what}"):  # the job file is refused when loaded
        ModelConfig(kind="prophet", params={"time_zone": zone})


def test_a_model_saved_before_the_parameter_existed_loads_in_utc() -> None:
    import json

    from pipelines.detectors import load_detector
    from tests.pipelines.detectors.conftest import seasonal_frame

    frame = seasonal_frame(10, seed=4)
    files = ProphetDetector().fit(frame).to_files()
    meta = json.loads(files["detector.json"])
    del meta["params"]["time_zone"]
    old = load_detector("prophet", {**files, "detector.json": json.dumps(meta).encode()})
    assert old.time_zone == "UTC"
    np.testing.assert_array_equal(old.detect(frame).score, load_detector("prophet", files).detect(frame).score)


def test_daily_rows_at_local_midnight_are_one_per_day() -> None:
    # Stamped at New York midnight, daily rows are 23 or 25 hours apart in UTC across a change of
    # clocks: Prophet's "auto" then fitted a daily cycle to once-a-day data.
    local = pd.date_range("2023-01-01", "2023-12-31", freq="D", tz=NEW_YORK)
    frame = pd.DataFrame({"orders": 100 + np.random.default_rng(5).normal(size=len(local))}, index=local.tz_convert("UTC"))
    assert "daily" in ProphetDetector().fit(frame).models_[0].seasonalities
    assert "daily" not in ProphetDetector(time_zone=NEW_YORK).fit(frame).models_[0].seasonalities
