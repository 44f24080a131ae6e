# train-platform: `make demo` and `make test` do all the set-up themselves.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Benchmark-only packages (the dag-factory baseline) live in their own venv, never in the
# one Airflow runs from.
BENCH_VENV := .venv-bench
BENCH_STAMP := $(BENCH_VENV)/.installed
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER ?= $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER ?= $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES ?= False
export AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT ?= 120
export TP_HOME ?= $(CURDIR)/.tp_home

.PHONY: install demo test bench airflow clean

install: $(STAMP)

# Re-installs only when the requirements or pyproject.toml change: a second `make install` is a no-op.
$(STAMP): requirements.txt requirements-test.txt pyproject.toml scripts/install-system.sh
	bash scripts/install-system.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -r requirements-test.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	# benchmark-only packages an older checkout installed here (pip install -r never removes)
	$(PY) -m pip uninstall --quiet --yes dag-factory
	touch $(STAMP)

$(BENCH_STAMP): requirements.txt requirements-bench.txt constraints.txt
	test -x $(BENCH_VENV)/bin/python || $(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(BENCH_VENV)/bin/python -m pip install --quiet -r requirements-bench.txt
	touch $(BENCH_STAMP)

demo: install
	$(PY) scripts/demo.py

# One pytest worker per core (at least 2: most tests wait on subprocesses and servers); a
# test file runs whole on one worker, so its module fixtures are built once; files go out in
# collection order (tests/conftest.py puts the ones marked `long` first), not by test count.
TEST_WORKERS ?= $(shell n=$$(nproc); [ $$n -lt 2 ] && n=2; echo $$n)
test: install
	$(VENV)/bin/lint-imports
	bash scripts/services.sh start
	set -a; source .services/env; set +a; \
	  $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=40 $(PYTEST_ARGS); rc=$$?; \
	  bash scripts/services.sh stop; exit $$rc

bench: install $(BENCH_STAMP)
	$(PY) bench/parse_pipelines.py --dagfactory-python $(BENCH_VENV)/bin/python 500 1000
	@for b in datasets quality continual serving; do \
	  if [ -f bench/$$b.py ]; then echo "== bench/$$b.py"; $(PY) bench/$$b.py || exit 1; fi; done

# `make airflow`: the UI on http://$(HOST):$(PORT) (make variables, from the command line or the
# environment); the embedded shape's Airflow settings are in scripts/airflow-env.sh.
PORT ?= 8080
HOST ?= 127.0.0.1
airflow: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" AIRFLOW__API__PORT="$(PORT)" AIRFLOW__API__HOST="$(HOST)" \
	  bash scripts/airflow-ui.sh

clean:
	rm -rf .airflow .tp_home .services $(BENCH_VENV)
