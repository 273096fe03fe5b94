"""Airflow plugin of the anomaly pipelines: the scoring API and the dashboard, in the api-server.

Thin on purpose: everything lives in ``pipelines.web`` and is tested without Airflow's server.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from pipelines.web.app import URL_PREFIX, LazyApp

# Relative (no leading slash): the UI resolves its iframe and icon URLs against its <base href>,
# which ends in [api] base_url's path. "/anomaly-pipelines/..." left out that path: below a
# sub-path (base_url http://host:8080/airflow) the Anomalies view and its icon were a 404.
_DASHBOARD = f"{URL_PREFIX.lstrip('/')}/dashboard"


class AnomalyPipelinesPlugin(AirflowPlugin):
    name = "anomaly_pipelines"
    fastapi_apps = [
        {"app": LazyApp(), "url_prefix": URL_PREFIX, "name": "Anomaly Pipelines"},
    ]
    # Pages of the app above, shown in iframes of the UI (same origin, so its session cookie
    # authenticates them). The UI fills {DAG_ID} and {RUN_ID} in hrefs of non-nav destinations;
    # a dag_run tab shows on every DAG's runs, and the page says when a DAG is not a predict DAG.
    external_views = [
        {
            "name": "Anomalies",
            "href": f"{_DASHBOARD}/",
            "icon": f"{_DASHBOARD}/static/anomalies.svg",
            "url_route": "anomalies",
            "destination": "nav",
            "nav_top_level": True,
        },
        {
            "name": "Anomalies",
            "href": f"{_DASHBOARD}/runs/{{DAG_ID}}/{{RUN_ID}}",
            "url_route": "anomalies-run",
            "destination": "dag_run",
        },
    ]
