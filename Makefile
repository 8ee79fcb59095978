# The two README commands: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test test-unit test-integration table1 bench schemas

$(PY):
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"

install: $(PY)

demo: $(PY)
	$(VENV)/bin/homework-monitor demo

test: $(PY)
	$(PY) -P -m pytest -p no:cacheprovider -W ignore::DeprecationWarning tests

test-unit: $(PY)
	$(PY) -P -m pytest -p no:cacheprovider -W ignore::DeprecationWarning tests --ignore=tests/integration

test-integration: $(PY)
	$(PY) -P -m pytest -p no:cacheprovider -W ignore::DeprecationWarning tests/integration

table1: $(PY)
	$(PY) -m homework_monitor.training.table1 --config full

bench: $(PY)
	$(PY) benchmarks/stream_latency.py --sessions 200

schemas: $(PY)
	$(VENV)/bin/homework-monitor export-schemas
