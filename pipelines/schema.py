"""The labeled-anomaly output: long format, one row per (series, timestamp, feature).

Every writer (Parquet, SQL, the CLI, one-off scoring) and every reader (dashboard, API) uses
these names, so they are defined once here.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    import pandas as pd

#: Columns in order, with the Arrow type each has in Parquet.
OUTPUT_COLUMNS: dict[str, str] = {
    "job": "string",
    "series": "string",
    "timestamp": "timestamp[us, tz=UTC]",
    "feature": "string",
    "value": "double",
    "expected": "double",
    "lower": "double",
    "upper": "double",
    "score": "double",
    "feature_score": "double",
    "is_anomaly": "bool",
    "model": "string",
    "model_version": "string",
    "run_id": "string",
    "interval_start": "timestamp[us, tz=UTC]",
    "interval_end": "timestamp[us, tz=UTC]",
    "scored_at": "timestamp[us, tz=UTC]",
}


def output_columns(dimensions: list[str]) -> list[str]:
    """Column order of a job's output: the fixed columns, then its dimension columns."""
    return [*OUTPUT_COLUMNS, *dimensions]


def arrow_schema(dimensions: list[str]):
    """The pyarrow schema of a job's output (dimension values are strings)."""
    import pyarrow as pa

    def _type(name: str) -> pa.DataType:
        if name.startswith("timestamp"):
            return pa.timestamp("us", tz="UTC")
        return {"string": pa.string(), "double": pa.float64(), "bool": pa.bool_()}[name]

    fields = [pa.field(name, _type(kind)) for name, kind in OUTPUT_COLUMNS.items()]
    fields += [pa.field(dim, pa.string()) for dim in dimensions]
    return pa.schema(fields)


def conform(frame: pd.DataFrame, dimensions: list[str]) -> pd.DataFrame:
    """``frame`` with exactly the output columns, in order, with their dtypes."""
    import pandas as pd

    missing = [c for c in output_columns(dimensions) if c not in frame.columns]
    if missing:
        raise ValueError(f"output frame lacks columns {missing}")
    out = frame[output_columns(dimensions)].copy()
    for name, kind in OUTPUT_COLUMNS.items():
        if kind.startswith("timestamp"):
            out[name] = pd.to_datetime(out[name], utc=True).astype("datetime64[us, UTC]")
        elif kind == "double":
            out[name] = out[name].astype("float64")
        elif kind == "bool":
            out[name] = out[name].astype("bool")
        else:
            out[name] = out[name].astype("string")
    for dim in dimensions:
        out[dim] = out[dim].astype("string")
    return out.reset_index(drop=True)
