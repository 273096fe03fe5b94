# The two commands of the README: `make demo` (set up and run the demo jobs) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
EXTRAS := airflow,s3,postgres,mysql,mssql,redshift,duckdb,bigquery,gcs,prophet,plot,alerts,lstm,dev
AIRFLOW_ENV := source scripts/airflow-env.sh
# torch (the lstm extra) comes from PyTorch's CPU-only index, at the version pinned in constraints.txt:
# PyPI's Linux torch wheels are CUDA builds that pull GBs of nvidia-* packages constraints.txt does not pin.
# A local wheel (pip's find-links) serves as well; TORCH_INDEX= (empty) skips the index.
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH := torch==$(shell sed -n 's/^torch==\([^+]*\).*/\1/p' constraints.txt)+cpu
# pip and the build backend (setuptools, which builds this project's editable install) are pinned in
# constraints.txt too: `pip freeze` leaves them out unless asked (--all), and the build backend is
# fetched into an isolated environment that `-c` does not constrain (`--build-constraint` does).
PIP := $(shell grep '^pip==' constraints.txt)

.PHONY: demo up test bench lock venv system-deps airflow-db clean

venv: $(VENV)/.installed

# Installs exactly the versions pinned in constraints.txt (the lock); reinstalls when it changes.
$(VENV)/.installed: constraints.txt pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "Python 3.11 is required ($(PYTHON) not found)"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "$(PIP)"
	$(BIN)/pip install --quiet --no-deps $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) "$(TORCH)"
	$(BIN)/pip install --quiet -c constraints.txt --build-constraint constraints.txt -e ".[$(EXTRAS)]"
	touch $@

airflow-db: venv
	$(AIRFLOW_ENV) && $(BIN)/airflow db migrate >/dev/null && echo "Airflow metadata DB ready in $$AIRFLOW_HOME"

## demo: set everything up, train and score the demo jobs through Airflow, print the results
demo: airflow-db
	$(AIRFLOW_ENV) && AIRFLOW__LOGGING__LOGGING_LEVEL=$${AIRFLOW__LOGGING__LOGGING_LEVEL:-WARNING} \
	  PATH="$(CURDIR)/$(BIN):$$PATH" $(BIN)/python -m pipelines.demo

## up: the Airflow UI with this project's DAGs (airflow standalone)
up: airflow-db
	$(AIRFLOW_ENV) && $(BIN)/python -m pipelines.demo --setup-only && \
	  echo "Airflow UI: http://localhost:$$AIRFLOW__API__PORT  login: admin / password in $$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE (also printed below)" && \
	  PATH="$(CURDIR)/$(BIN):$$PATH" exec $(BIN)/airflow standalone

system-deps:
	scripts/install-system-deps.sh

## test: set everything up (venv; Debian's PostgreSQL, MariaDB and Chromium) and run the whole test suite
test: venv system-deps
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

bench: venv
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

## lock: re-pin constraints.txt from the current venv (after changing dependencies)
# --all keeps pip and setuptools. torch's local label (+cpu) is dropped: which build to take is the
# install's business (TORCH above), and `torch==X` in the lock is satisfied by the installed X+cpu.
lock:
	$(BIN)/pip freeze --all --exclude-editable | grep -v '^-e ' | sed -E 's/^(torch==[^+]+)\+cpu$$/\1/' > constraints.txt

clean:
	rm -rf var/work var/outputs var/models var/quarantine var/anomalies.db var/demo
