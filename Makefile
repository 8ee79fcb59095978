# The two README commands: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test test-unit test-integration faults table1 bench schemas

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

# The fault suite of docs/RELIABILITY.md (also part of `make test`): poison input and 10,000 fuzzed
# messages, Triton SIGTERM / kill -9 / rejecting / hung, worker kill -9 and SIGTERM, broker restart, PHI.
FAULTS := tests/integration/test_fault_fuzz.py tests/integration/test_poison_input.py \
	tests/integration/test_faults_worker.py tests/integration/test_crash_recovery.py \
	tests/integration/test_exposure.py
faults: $(PY)
	$(PY) -P -m pytest -p no:cacheprovider -W ignore::DeprecationWarning --durations=0 $(FAULTS)

table1: $(PY)
	$(PY) -m homework_monitor.training.table1 --config full

bench: $(PY)
	$(PY) benchmarks/stream_latency.py --sessions 200

schemas: $(PY)
	$(VENV)/bin/homework-monitor export-schemas
