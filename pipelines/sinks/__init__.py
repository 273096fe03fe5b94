"""Where labeled anomalies go: a Parquet dataset and, optionally, a database table and a BigQuery table."""

from pipelines.sinks.base import Sink
from pipelines.sinks.bigquery import BigQuerySink
from pipelines.sinks.parquet import ParquetSink
from pipelines.sinks.sql import SqlSink

__all__ = ["BigQuerySink", "ParquetSink", "Sink", "SqlSink"]
