"""Where labeled anomalies go: a Parquet dataset and, optionally, a database table."""

from pipelines.sinks.base import Sink
from pipelines.sinks.parquet import ParquetSink
from pipelines.sinks.sql import SqlSink

__all__ = ["ParquetSink", "Sink", "SqlSink"]
