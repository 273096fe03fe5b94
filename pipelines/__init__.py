"""Anomaly Pipelines: time-series anomaly detection jobs, usable with or without Airflow.

Importing this package stays light (no pandas, scikit-learn or Great Expectations):
DAG files import it at parse time.
"""

__version__ = "0.1.0"
