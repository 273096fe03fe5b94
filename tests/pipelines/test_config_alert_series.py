"""alerts.series patterns that can never match a series key of the job are refused when it loads."""

from __future__ import annotations

import fnmatch

import pytest
import yaml

from pipelines.config import load_job_file, parse_job
from pipelines.errors import ConfigError
from pipelines.series import series_key


def job(dimensions: list[str], series: list[str]) -> dict:
    return {
        "name": "web", "source": {"kind": "file", "path": "data/x.csv"}, "timestamp": "ts", "frequency": "1h",
        "dimensions": dimensions, "features": ["value"], "model": {"kind": "seasonal_mad"},
        "alerts": {"email": {"to": ["oncall@example.com"]}, "series": series},
    }


@pytest.mark.parametrize(
    ("dimensions", "pattern"),
    [
        (["region"], "host=web*"),  # a dimension the job does not have
        (["region"], "region"),  # no value
        (["region"], "eu"),  # a value without its dimension
        (["region"], "region=eu,host=*"),  # one dimension too many
        (["region", "host"], "region=eu"),  # the host part missing: keys always name every dimension
        (["region", "host"], "host=a,region=eu"),  # not in the job's order
        (["region", "host"], "region=eu*,host=*,*"),  # a third part
        (["city"], "city=Paris, FR"),  # a "," in a value is written %2C
        (["ratio"], "ratio=a=b"),  # a "=" in a value is written %3D
        (["region"], "region=[,=]*"),  # a class of only the separators
        (["region"], "region=*,*"),  # a one-dimension key holds no "," (one in a value is %2C)
        (["region"], "[!r]*"),  # every key starts with region=
        ([], "region=eu"),  # a job without dimensions has the one series 'all'
        ([], "All"),  # case matters (fnmatchcase)
        ([], "al"),
        ([], "all?"),
    ],
)
def test_a_pattern_that_can_never_match_is_refused_naming_everything(dimensions, pattern):
    with pytest.raises(ConfigError) as info:
        parse_job(job(dimensions, ["region=*", pattern] if dimensions == ["region"] else [pattern]))
    message = str(info.value)
    where = "alerts.series.1" if dimensions == ["region"] else "alerts.series.0"
    assert f"  {where}: {pattern!r} can never match a series key of job 'web', " in message
    if dimensions:
        assert f"whose dimensions are [{', '.join(dimensions)}]: each key is {series_key(dimensions, ['<value>'] * len(dimensions))}" in message
        example = series_key(dimensions, [f"{name[0]}1" for name in dimensions])
        assert f"(e.g. {example!r}; ',', '=' and '%' inside a value are written %2C, %3D and %25)" in message
    else:
        assert "which has no dimensions: its only series key is 'all'" in message
    assert "so no alert would ever be sent for it;" in message and "or remove it (an empty alerts.series alerts on every series)" in message


@pytest.mark.parametrize(
    ("dimensions", "pattern"),
    [
        (["region"], "region=eu"),
        (["region"], "region=eu*"),
        (["region"], "*"),
        (["region"], "*=eu"),  # a wildcard across the "="
        (["region"], "r*n=eu"),
        (["region"], "region="),  # an empty value
        (["region"], "region=?"),
        (["region"], "region=[a-z][!,]"),
        (["region"], "region=[+-=]"),  # a range across the separators holds other characters
        (["region"], "region=eu west/2"),
        (["region"], "region=[eu"),  # an unclosed [ is a literal [
        (["region"], "region=Paris%2C FR"),  # an escaped ","
        (["region"], "region=100%25"),
        (["region"], "region={{ ds }}"),
        (["region", "host"], "region=eu,host=web*"),
        (["region", "host"], "region=eu*"),  # * runs on into the host part
        (["region", "host"], "*host=web*"),
        (["region", "host"], "region=?*,host=*"),
        (["region", "host"], "*,*"),
        (["disk%", "a,b"], "disk%25=*,a%2Cb=*"),  # names with the key's separators are escaped too
        ([], "all"),
        ([], "a*"),
        ([], "*"),
        ([], "[a-c]ll"),
        ([], "al?"),
    ],
)
def test_a_pattern_that_may_match_a_key_is_accepted(dimensions, pattern):
    assert parse_job(job(dimensions, [pattern])).alerts.series == [pattern]


def test_every_pattern_that_matches_a_real_key_is_accepted():
    # The keys series_key makes of awkward values: every pattern some of them match loads.
    values = ["", "eu", "a=b", "a,b", "100%", "[x]", "*", "?", "!"]
    dimensions = ["region", "host"]
    keys = [series_key(dimensions, [a, b]) for a in values for b in values]
    patterns = {key[:cut] + "*" for key in keys for cut in range(len(key) + 1)}
    patterns |= {"?" * len(key) for key in keys} | {key.replace("=", "?") for key in keys} | set(keys)
    # A key is no pattern of itself when a value holds [, * or ?: only those some key matches.
    patterns = {p for p in patterns if any(fnmatch.fnmatchcase(key, p) for key in keys)}
    assert len(patterns) > 300
    assert parse_job(job(dimensions, sorted(patterns))).alerts.series == sorted(patterns)


def test_several_patterns_that_can_never_match_are_named_in_one_line(tmp_path):
    path = tmp_path / "web.yaml"
    path.write_text(yaml.safe_dump(job(["region"], ["region=eu", "host=a", "region=us", "zone=*"]), sort_keys=False))
    with pytest.raises(ConfigError) as info:
        load_job_file(path)
    message = str(info.value)
    assert str(path) in message
    assert (
        "  alerts.series: alerts.series.1 'host=a', alerts.series.3 'zone=*' can never match a series key of job 'web', "
        "whose dimensions are [region]: each key is region=<value>"
    ) in message
    assert "so no alert would ever be sent for them; correct them (e.g. 'region=*' for every region), or remove them" in message


def test_the_hint_of_a_job_of_several_dimensions_is_a_pattern_that_loads():
    with pytest.raises(ConfigError, match=r"correct it \(e\.g\. 'region=r1,host=\*' for every host of r1\)"):
        parse_job(job(["region", "host"], ["region=eu"]))
    assert parse_job(job(["region", "host"], ["region=r1,host=*"])).alerts.series == ["region=r1,host=*"]
