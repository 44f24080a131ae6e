# train-platform: `make demo` and `make test` do all the set-up themselves.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export AIRFLOW_HOME ?= $(CURDIR)/.airflow
export AIRFLOW__CORE__DAGS_FOLDER ?= $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER ?= $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES ?= False
export AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT ?= 120
export TP_HOME ?= $(CURDIR)/.tp_home

.PHONY: install demo test bench airflow clean

install: $(STAMP)

# Re-installs only when requirements.txt or pyproject.toml change: a second `make install` is a no-op.
$(STAMP): requirements.txt pyproject.toml scripts/install-system.sh
	bash scripts/install-system.sh
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

demo: install
	$(PY) scripts/demo.py

test: install
	$(VENV)/bin/lint-imports
	bash scripts/services.sh start
	set -a; source .services/env; set +a; \
	  $(PY) -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	  bash scripts/services.sh stop; exit $$rc

bench: install
	$(PY) bench/parse_pipelines.py 500 1000
	@for b in datasets quality continual serving; do \
	  if [ -f bench/$$b.py ]; then echo "== bench/$$b.py"; $(PY) bench/$$b.py || exit 1; fi; done

airflow: install
	$(VENV)/bin/airflow standalone

clean:
	rm -rf .airflow .tp_home .services
