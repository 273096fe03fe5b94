"""The Airflow plugin: what it registers, and that importing it stays cheap."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

PLUGINS = Path(__file__).resolve().parents[3] / "plugins"


def test_plugin_registers_the_app_and_the_views_without_heavy_imports() -> None:
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(PLUGINS)!r})\n"
        "from anomaly_pipelines_plugin import AnomalyPipelinesPlugin as P\n"
        "print(json.dumps({'apps': [a['url_prefix'] for a in P.fastapi_apps],\n"
        "                  'views': [(v['name'], v['destination'], v['href']) for v in P.external_views],\n"
        "                  'icons': [v['icon'] for v in P.external_views if 'icon' in v],\n"
        "                  'heavy': [m for m in ('pandas', 'pyarrow', 'sklearn', 'great_expectations') if m in sys.modules]}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    facts = json.loads(result.stdout.strip().splitlines()[-1])
    assert facts["apps"] == ["/anomaly-pipelines"]
    assert ["Anomalies", "nav", "anomaly-pipelines/dashboard/"] in facts["views"]
    assert ["Anomalies", "dag_run", "anomaly-pipelines/dashboard/runs/{DAG_ID}/{RUN_ID}"] in facts["views"]
    # Every Airflow process that loads plugins imports this file; only the api-server serves it.
    assert facts["heavy"] == []


def test_the_lazy_app_serves_the_real_app() -> None:
    from fastapi.testclient import TestClient

    from pipelines.web.app import LazyApp

    with TestClient(LazyApp()) as client:
        answer = client.get("/openapi.json")
    assert answer.status_code == 401  # the real app's authentication answered


def test_the_views_follow_airflow_below_a_url_prefix() -> None:
    """With [api] base_url http://host:8080/airflow the views and the icon were a 404: their
    "/anomaly-pipelines/..." left out the UI's path, against which it resolves them (<base href>)."""
    import importlib.util
    from urllib.parse import urljoin

    spec = importlib.util.spec_from_file_location("anomaly_pipelines_plugin", PLUGINS / "anomaly_pipelines_plugin.py")
    plugin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(plugin)
    views = plugin.AnomalyPipelinesPlugin.external_views
    urls = [view["href"] for view in views] + [view["icon"] for view in views if "icon" in view]
    for base in ("http://host:8080/", "http://host:8080/airflow/"):  # the UI's <base href>
        for url in urls:
            assert urljoin(base, url).startswith(f"{base}anomaly-pipelines/dashboard/"), (base, url)
