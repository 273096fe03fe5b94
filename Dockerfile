# Airflow with the anomaly-pipelines library installed at the versions pinned in constraints.txt.
# Build: docker compose build   (docker-compose.yaml uses this file through `build: .`)
FROM apache/airflow:3.3.2-python3.11

USER airflow
WORKDIR /opt/airflow/src

# Dependency layer: rebuilt only when the lock file or pyproject.toml change.
# The requirement list is read from pyproject.toml so the project's code is not needed yet.
COPY --chown=airflow:0 constraints.txt pyproject.toml README.md ./
# pip first, at the version the lock pins: older pips lack --build-constraint (below), and the
# base image's pip is whatever its release shipped.
RUN pip install --no-cache-dir -c constraints.txt pip
# Prophet and plots are in the image: Prophet is one of the platform's detectors (its wheels bundle
# CmdStan, nothing is fetched at run time). LSTM (torch, gigabytes) and the other warehouses' drivers
# are extras to add here and below when a deployment needs them (docs/DEPLOYMENT.md).
RUN python -c "import tomllib; \
      project = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
      extras = project['optional-dependencies']; \
      print('\n'.join(project['dependencies'] + sum((extras[name] for name in ('s3', 'postgres', 'alerts', 'prophet', 'plot')), [])))" > requirements.txt \
 && pip install --no-cache-dir -c constraints.txt -r requirements.txt

# Code layer: the library itself; its dependencies are already satisfied above.
COPY --chown=airflow:0 pipelines/ ./pipelines/
# The build backend that builds this project runs in an isolated environment that `-c` does not
# reach; --build-constraint pins it (setuptools) too.
RUN pip install --no-cache-dir -c constraints.txt --build-constraint constraints.txt ".[s3,postgres,alerts,prophet,plot]"

WORKDIR /opt/airflow
COPY --chown=airflow:0 dags/ /opt/airflow/dags/
COPY --chown=airflow:0 plugins/ /opt/airflow/plugins/
COPY --chown=airflow:0 config/ /opt/airflow/config/

# Relative paths in job files (var/outputs, var/models) resolve against this folder,
# and jobs are read from $ANOMALY_PIPELINES_BASE_DIR/config/jobs.
ENV ANOMALY_PIPELINES_BASE_DIR=/opt/airflow
