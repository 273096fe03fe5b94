"""The project's web layer: the scoring API and the dashboard pages, served by the Airflow plugin.

``create_app`` (in :mod:`pipelines.web.app`) builds the FastAPI application that
``plugins/anomaly_pipelines_plugin.py`` mounts into Airflow's api-server; every route depends on
:func:`pipelines.web.auth.require_user`, so nothing is served without an Airflow login.
"""

URL_PREFIX = "/anomaly-pipelines"
"""Where the plugin mounts the app in Airflow's api-server."""
