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

# --- reproduce the papers' tables ------------------------------------------------------------
# make reproduce-fcn8s [DATA=/path/above/VOCdevkit] [WEIGHTS=file.caffemodel|.safetensors]
#                      [DEVICE=cuda|cpu] [ARGS="--fast --limit 50"]
# Without DATA the dataset is downloaded into ./data; without WEIGHTS the released caffemodel is
# fetched, verified and converted once into weights/cache. Reports go to reports/<model>/.
DATA ?=
WEIGHTS ?=
DEVICE ?=
ARGS ?=
REPRODUCE_VOC := fcn32s fcn16s fcn8s fcn8s-atonce fcn-alexnet
REPRODUCE_SIFTFLOW := siftflow-fcn32s siftflow-fcn16s siftflow-fcn8s
REPRODUCE_NYUD := nyud-fcn32s-color nyud-fcn32s-hha nyud-fcn32s-color-hha
REPRODUCE_CONTEXT := pascalcontext-fcn32s pascalcontext-fcn16s pascalcontext-fcn8s
REPRODUCE_MODELS := $(REPRODUCE_VOC) $(REPRODUCE_SIFTFLOW) $(REPRODUCE_NYUD) $(REPRODUCE_CONTEXT)
REPRODUCE_FLAGS = $(if $(DATA),--data $(DATA)) $(if $(WEIGHTS),--weights $(WEIGHTS)) \
	$(if $(DEVICE),--device $(DEVICE)) $(ARGS)

.PHONY: reproduce-all reproduce-voc reproduce-siftflow reproduce-nyud reproduce-context \
	reproduce-demo $(addprefix reproduce-,$(REPRODUCE_MODELS))

$(addprefix reproduce-,$(REPRODUCE_MODELS)): reproduce-%: $(VENV)/.installed
	$(PY) -m reproduce $* --out reports/$* $(REPRODUCE_FLAGS)

reproduce-voc: $(addprefix reproduce-,$(REPRODUCE_VOC))
reproduce-siftflow: $(addprefix reproduce-,$(REPRODUCE_SIFTFLOW))
reproduce-nyud: $(addprefix reproduce-,$(REPRODUCE_NYUD))
reproduce-context: $(addprefix reproduce-,$(REPRODUCE_CONTEXT))
# WEIGHTS names one model's file, so reproduce-all always uses the released weights.
reproduce-all: WEIGHTS =
reproduce-all: $(addprefix reproduce-,$(REPRODUCE_MODELS))

reproduce-demo: $(VENV)/.installed
	$(PY) -m reproduce demo $(if $(WEIGHTS),--weights $(WEIGHTS)) $(if $(DEVICE),--device $(DEVICE))
