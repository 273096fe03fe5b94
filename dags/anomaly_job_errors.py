"""Import errors for the job files that do not validate; this Airflow DAG file defines no DAG.

``anomaly_jobs.py`` skips a job file that does not validate, so that one broken file does not
take every other job's DAGs down with it. This file then fails to import with the error of each
such file (the file, the field, what is allowed and what was given), so Airflow lists it among
its import errors (UI, ``airflow dags list-import-errors``) until the file is fixed.
"""

from __future__ import annotations

from pipelines.config import jobs_dir, scan_jobs
from pipelines.errors import ConfigError

# A folder that is not there (a misspelt $ANOMALY_PIPELINES_JOBS_DIR, a volume not mounted) made
# no DAGs and no error at all: Airflow looked like a project without jobs.
if not jobs_dir().is_dir():
    raise ConfigError(
        f"the job folder {jobs_dir()} does not exist, so no job has DAGs: create it, or point "
        "$ANOMALY_PIPELINES_JOBS_DIR (default: config/jobs under $ANOMALY_PIPELINES_BASE_DIR) at the folder holding the job files"
    )
_errors = scan_jobs().errors
if _errors:
    raise ConfigError(
        f"{len(_errors)} job file(s) make no DAGs until fixed (the other jobs' DAGs are not affected):\n\n" + "\n\n".join(_errors)
    )
