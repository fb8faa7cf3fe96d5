# fcn-port: one virtualenv, one test command, one reproduce target per released net.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# CPU build for tests and CPU machines; a CUDA machine may bring its own torch (TORCH_SPEC=torch).
TORCH_SPEC ?= torch==2.13.0
PYTEST_WORKERS ?= 2

.PHONY: venv test lint clean help

help:
	@echo "make test               create/refresh $(VENV) and run the test suite"
	@echo "make reproduce-fcn8s    fetch, convert and evaluate FCN-8s on seg11valid (see README)"

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e '.[test,plot]'
	touch $@

venv: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q -n $(PYTEST_WORKERS) tests

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis *.egg-info
