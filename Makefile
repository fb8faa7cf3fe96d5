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
	@echo "make train-fcn8s        train FCN-32s -> 16s -> 8s by upstream's recipe (DATA=, DEVICE=, INIT=; README Training)"

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
# fetched, verified and converted once into the per-user cache ($FCN_PORT_CACHE, else
# $XDG_CACHE_HOME/fcn-port, else ~/.cache/fcn-port). Reports go to reports/<model>/.
DATA ?=
WEIGHTS ?=
DEVICE ?=
ARGS ?=
REPRODUCE_VOC := fcn32s fcn16s fcn8s fcn8s-atonce fcn-alexnet
REPRODUCE_SIFTFLOW := siftflow-fcn32s siftflow-fcn16s siftflow-fcn8s
REPRODUCE_NYUD := nyud-fcn32s-color nyud-fcn32s-hha nyud-fcn32s-color-hha
REPRODUCE_CONTEXT := pascalcontext-fcn32s pascalcontext-fcn16s pascalcontext-fcn8s
REPRODUCE_MODELS := $(REPRODUCE_VOC) $(REPRODUCE_SIFTFLOW) $(REPRODUCE_NYUD) $(REPRODUCE_CONTEXT)
# The nets fcnize casts from a classifier (FCN-GoogLeNet, FCN-ResNet): no released weights, so
# make reproduce-<net> WEIGHTS=runs/<net>/final.safetensors, and not part of reproduce-all.
REPRODUCE_CAST := fcn-googlenet $(foreach d,50 101 152,$(foreach s,32 16 8,fcn-resnet$(d)-$(s)s))
REPRODUCE_FLAGS = $(if $(DATA),--data $(DATA)) $(if $(WEIGHTS),--weights $(WEIGHTS)) \
	$(if $(DEVICE),--device $(DEVICE)) $(ARGS)

.PHONY: reproduce-all reproduce-voc reproduce-siftflow reproduce-nyud reproduce-context \
	reproduce-demo $(addprefix reproduce-,$(REPRODUCE_MODELS) $(REPRODUCE_CAST))

$(addprefix reproduce-,$(REPRODUCE_MODELS) $(REPRODUCE_CAST)): reproduce-%: $(VENV)/.installed
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

# --- train the released nets by upstream's recipes (python -m reproduce train) ------------------
# make train-fcn32s DATA=/path/above/SBD-and-VOC [DEVICE=cpu] [INIT=VGG16.caffemodel] [RUNS=runs]
#      [TRAIN_ARGS="--iters 100"]   (the device: cuda when a GPU is visible, as evaluation)
# Runs go to $(RUNS)/<model>/ (train_log.jsonl, snapshots/, final.safetensors, report.md,
# curves.png). A later stage starts from the previous stage's $(RUNS)/<stage>/final.safetensors
# (upstream voc-fcn16s/solve.py, voc-fcn8s/solve.py), so make train-fcn8s runs FCN-32s ->
# FCN-16s -> FCN-8s, each stage once. Interrupted (SIGTERM/Ctrl-C)? Rerun with
# TRAIN_ARGS=--resume. Several GPUs: torchrun --nproc_per_node=N -m reproduce train MODEL ...
# INIT=FILE: your copy of the ILSVRC classifier (VGG16, or CaffeNet for fcn-alexnet) instead of
# the download, passed as --init FILE to the stages that start from it (TRAIN_CLASSIFIER_INIT).
# FCN-ResNet trains with BatchNorm frozen at the classifier's statistics (its recipe);
# TRAIN_ARGS=--train-batchnorm trains it on batch statistics instead (every stage; another recipe).
RUNS ?= runs
TRAIN_ARGS ?=
INIT ?=
TRAIN_MODELS := $(REPRODUCE_MODELS) $(REPRODUCE_CAST)
TRAIN_CLASSIFIER_INIT := fcn32s fcn8s-atonce fcn-alexnet siftflow-fcn32s nyud-fcn32s-color \
	nyud-fcn32s-hha pascalcontext-fcn32s fcn-googlenet fcn-resnet50-32s fcn-resnet101-32s \
	fcn-resnet152-32s
TRAIN_FLAGS = --data $(or $(DATA),data) $(if $(DEVICE),--device $(DEVICE)) $(TRAIN_ARGS)

.PHONY: $(addprefix train-,$(TRAIN_MODELS))

$(addprefix train-,$(TRAIN_MODELS)): train-%: $(RUNS)/%/final.safetensors

$(RUNS)/%/final.safetensors: | $(VENV)/.installed
	$(PY) -m reproduce train $* --out $(RUNS)/$* $(TRAIN_FLAGS) \
		$(if $(and $(INIT),$(filter $*,$(TRAIN_CLASSIFIER_INIT))),--init $(INIT))

# the staged chains: each stage from the previous stage's final weights
$(RUNS)/fcn16s/final.safetensors: $(RUNS)/fcn32s/final.safetensors
$(RUNS)/fcn8s/final.safetensors: $(RUNS)/fcn16s/final.safetensors
$(foreach d,50 101 152,$(eval $(RUNS)/fcn-resnet$(d)-16s/final.safetensors: $(RUNS)/fcn-resnet$(d)-32s/final.safetensors))
$(foreach d,50 101 152,$(eval $(RUNS)/fcn-resnet$(d)-8s/final.safetensors: $(RUNS)/fcn-resnet$(d)-16s/final.safetensors))
$(RUNS)/siftflow-fcn16s/final.safetensors: $(RUNS)/siftflow-fcn32s/final.safetensors
$(RUNS)/siftflow-fcn8s/final.safetensors: $(RUNS)/siftflow-fcn16s/final.safetensors
$(RUNS)/pascalcontext-fcn16s/final.safetensors: $(RUNS)/pascalcontext-fcn32s/final.safetensors
$(RUNS)/pascalcontext-fcn8s/final.safetensors: $(RUNS)/pascalcontext-fcn16s/final.safetensors
$(RUNS)/nyud-fcn32s-color-hha/final.safetensors: $(RUNS)/nyud-fcn32s-color/final.safetensors \
	$(RUNS)/nyud-fcn32s-hha/final.safetensors
