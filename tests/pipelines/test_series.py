"""Series keys: one per dimension group, parsed back to the group's values."""

from __future__ import annotations

import pytest

from pipelines.series import (
    ALL_SERIES,
    MAX_SLUG_CHARS,
    key_dimensions,
    parse_series_key,
    series_key,
    series_slug,
    slug_may_be_cut,
)


def test_a_job_without_dimensions_has_one_series():
    assert series_key([], []) == ALL_SERIES
    assert parse_series_key(ALL_SERIES, []) == {}


def test_plain_values_keep_their_readable_key():
    assert series_key(["region", "host"], ["eu", "a-1"]) == "region=eu,host=a-1"
    assert series_key(["region"], {"region": "eu"}) == "region=eu"


@pytest.mark.parametrize(
    "values",
    [
        ("Paris, FR", "h1"),
        ("eu,host=h9", "h1"),
        ("100%", "%2C"),
        ("=", ","),
        ("", "x y/ü"),
    ],
)
def test_keys_parse_back_to_the_values_they_were_made_of(values):
    dimensions = ["region", "host"]
    key = series_key(dimensions, values)
    assert parse_series_key(key, dimensions) == dict(zip(dimensions, values, strict=True))


def test_groups_holding_the_separators_never_share_a_key():
    # Unescaped, both were "a=x,b=y,b=z".
    assert series_key(["a", "b"], ["x,b=y", "z"]) != series_key(["a", "b"], ["x", "y,b=z"])


def test_slugs_of_escaped_keys_stay_distinct():
    keys = {series_key(["city"], [value]) for value in ("Paris, FR", "Paris%2C FR", "Paris,FR")}
    assert len(keys) == 3 and len({series_slug(key) for key in keys}) == 3


def test_a_long_key_gets_a_bounded_slug_that_stays_distinct():
    long_a, long_b = "host=" + "x" * 300 + "a", "host=" + "x" * 300 + "b"
    slugs = {series_slug(long_a), series_slug(long_b)}
    assert len(slugs) == 2 and all(len(slug) == MAX_SLUG_CHARS for slug in slugs)
    assert all(slug_may_be_cut(slug) for slug in slugs)
    # Keys that fit keep their reversible slug, so models already stored stay where they are.
    assert series_slug("region=eu west,host=a") == "region=eu%20west,host=a" and not slug_may_be_cut("region=eu%20west,host=a")


@pytest.mark.parametrize("dimensions", [[], ["region"], ["region", "host"], ["share%,=", "Ort"]])
def test_key_dimensions_names_a_key_s_dimensions_in_order(dimensions) -> None:
    key = series_key(dimensions, ["a,b=c%d"] * len(dimensions))
    assert key_dimensions(key) == dimensions
    assert key_dimensions(ALL_SERIES) == []
