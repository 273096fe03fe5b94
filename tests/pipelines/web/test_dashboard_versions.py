"""The models page's versions (pipelines/web/dashboard_data.py models, templates/models.html): the
newest few of each series and the champion, however many versions a series has.

A series retrained hourly for a year has 8,760 versions, and the page read every one's metadata
(one GET each on object stores) to list them all."""

from __future__ import annotations

from collections import Counter

import pytest

from pipelines import storage
from pipelines.config import get_job
from pipelines.web import dashboard_data as data
from tests.pipelines.test_training import registry_at

D = "/dashboard"
SERIES = "region=eu"


def _job(where: str, request: pytest.FixtureRequest):
    return registry_at(get_job("demo_web_metrics"), where, request)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_only_the_newest_versions_and_an_older_champion_are_read(project, where, request, monkeypatch):
    job = _job(where, request)
    registry = data._registry(job)
    count = data.MODEL_VERSIONS + 5
    versions = [
        registry.register(job.name, SERIES, {"model.skops": b"m"}, {"model": "mad", "decision": {"promoted": i == 2, "reason": f"#{i}"}}).version
        for i in range(count)
    ]
    registry.promote(job.name, SERIES, versions[2])
    read = Counter()
    real = storage.read_bytes

    def counted(url: str, *args, **kwargs) -> bytes:
        if url.endswith("/metadata.json"):
            read[url.split("/versions/")[1].split("/")[0]] += 1
        return real(url, *args, **kwargs)

    monkeypatch.setattr(storage, "read_bytes", counted)
    [entry] = data.models(job, [SERIES])

    newest = versions[-data.MODEL_VERSIONS :]
    assert read == Counter([*newest, versions[2]])  # each once; the four in between and the two oldest never
    assert entry["version_count"] == count and entry["newest"] == data.MODEL_VERSIONS and entry["error"] is None
    assert [v["version"] for v in entry["versions"]] == [*reversed(newest), versions[2]]
    champion = entry["versions"][-1]
    assert champion["champion"] and champion["older"] and champion["promoted"] and champion["reason"] == "#2"
    assert not any(v["champion"] or v["older"] for v in entry["versions"][:-1])


def test_a_champion_among_the_newest_is_listed_once(project):
    job = get_job("demo_web_metrics")
    registry = data._registry(job)
    versions = [registry.register(job.name, SERIES, {"model.skops": b"m"}, {"model": "mad"}).version for _ in range(3)]
    registry.promote(job.name, SERIES, versions[1])
    [entry] = data.models(job, [SERIES])
    assert [(v["version"], v["champion"], v["older"]) for v in entry["versions"]] == [
        (versions[2], False, False), (versions[1], True, False), (versions[0], False, False)
    ]  # fmt: skip
    assert entry["version_count"] == entry["newest"] == 3


def test_models_page_says_how_many_versions_it_leaves_out(client, headers, web_project):
    job = get_job("demo_web_metrics")
    registry = data._registry(job)
    champion = registry.champion_version(job.name, SERIES)  # trained by the fixture: the oldest
    pending = {"promoted": False, "pending": True, "reason": "stopped while promoting"}
    for i in range(data.MODEL_VERSIONS + 3):
        decision = pending if i == data.MODEL_VERSIONS + 2 else {"promoted": False, "reason": "kept the champion"}
        registry.register(job.name, SERIES, {"model.skops": b"m"}, {"model": "mad", "decision": decision})

    page = client.get(f"{D}/jobs/demo_web_metrics/models", headers=headers).text
    section = page.split(f'data-series="{SERIES}"')[1].split("</section>")[0]
    total = data.MODEL_VERSIONS + 4
    assert f"the {data.MODEL_VERSIONS} newest of\n    {total} versions, and the older champion" in section
    assert "… 3\n        version(s) between these and the champion not shown" in section
    assert section.count('data-testid="champion"') == 1 and section.index(f'data-version="{champion}"') > section.index("versions-skipped")
    assert section.count("promotion not confirmed") == 1 and "champion-error" not in section
    # The series with few versions say nothing of it.
    assert page.count('data-testid="versions-shown"') == 1
