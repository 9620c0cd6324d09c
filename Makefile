# Two commands on a fresh machine: `make run` (set up + run the default pipeline) and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# CPU default; a GPU user passes the CUDA build, e.g. `make setup TORCH_SPEC="torch==2.13.0" PIP_EXTRA_INDEX_URL=<their CUDA index>`
TORCH_SPEC ?= torch==2.13.0
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
# tiny models on 2 contended cores: spinning OpenMP threads cost more than the work (50 ms → 3 ms a vmapped step)
export OMP_WAIT_POLICY := PASSIVE
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export NO_MKDOCS_2_WARNING := 1  # mkdocs-material's end-of-life banner

.PHONY: setup run run-mnist mnist-table test lint docs stack-up stack-down bench clean

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned: a looser requirement on a machine without torch pulls CUDA wheels
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $@

setup: $(BIN)/.installed

run: setup
	PATH=$(CURDIR)/$(BIN):$$PATH hyperforget import-data
	PATH=$(CURDIR)/$(BIN):$$PATH dvc repro
	PATH=$(CURDIR)/$(BIN):$$PATH hyperforget summary

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# two workers, a test file each at a time: unit tests run on one torch thread and the integration tests wait
# on servers, so one process leaves a core idle; each worker starts its own servers on free ports
# the docs site (docs/, mkdocs.yml) into site/ (git-ignored); --strict: a broken link or anchor fails it
docs: setup
	$(BIN)/mkdocs build --strict -q -d $(CURDIR)/site

test: lint docs
	PATH=$(CURDIR)/$(BIN):$$PATH $(BIN)/pytest -q -n 2 --dist loadfile

stack-up: setup
	$(BIN)/python infra/local/stack.py up
	@echo "source .stack/env to point hyperforget, mlflow, prefect and boto3 at the local stack"

stack-down:
	$(BIN)/python infra/local/stack.py down

bench: setup
	$(BIN)/python bench/zoo_vmap.py
	$(BIN)/python bench/zoo_units.py

# MNIST-60k (../shared/datasets/mnist) with LeNet-5, DiHyFo generating its last block + head, as one DVC
# experiment run in a temporary copy (params.yaml and artifacts/ here stay on digits); `dvc exp show` lists it
# and `dvc exp apply mnist-lenet` brings its params, dvc.lock and outputs into the workspace. The recipe is the
# experiment file (configs/README.md), passed to dvc as the -S flags `hyperforget params flags` derives from it;
# the experiment is named after the file. With the gate limits calibrated for LeNet, DiHyFo fails its gates and
# the publish stage ends failed (registered, no alias): `make run-mnist MNIST_EXPERIMENT=configs/mnist-lenet-calibrated.yaml`.
MNIST_EXPERIMENT ?= configs/mnist-lenet.yaml
# The workspace goes back to digits (data/ and data.dvc as committed, `make run` unchanged) also when the
# experiment fails; make then stops with the experiment's exit status. The digits files are imported again:
# a fresh clone has none before `make run`, and `dvc add` of an empty data/ would change data.dvc.
# The flags are read once, when make expands this recipe (after setup); an unreadable experiment stops make.
run-mnist: setup
	$(eval MNIST_FLAGS := $(shell PATH=$(CURDIR)/$(BIN):$$PATH hyperforget params flags $(MNIST_EXPERIMENT)))
	$(if $(MNIST_FLAGS),,$(error $(MNIST_EXPERIMENT) gave no dvc flags (the error is above)))
	PATH=$(CURDIR)/$(BIN):$$PATH hyperforget import-data --params $(MNIST_EXPERIMENT)
	PATH=$(CURDIR)/$(BIN):$$PATH dvc add data
	PATH=$(CURDIR)/$(BIN):$$PATH dvc exp run --temp -n $(basename $(notdir $(MNIST_EXPERIMENT))) $(MNIST_FLAGS); \
		rc=$$?; rm -rf data/raw/mnist && PATH=$(CURDIR)/$(BIN):$$PATH hyperforget import-data && \
		PATH=$(CURDIR)/$(BIN):$$PATH dvc add data && exit $$rc
	PATH=$(CURDIR)/$(BIN):$$PATH dvc exp show --no-pager

# The README's per-class tables on MNIST-60k / LeNet (2 cores: ~15 min a class, mostly its 4 true retrains):
# DiHyFo-1/2 (last block + head), ∇τ, retrieval and the retrain reference for all ten classes, in the project
# folder work/mnist-lenet ($HYPERFORGET_WORK/mnist-lenet when set). --reuse keeps the classes already compared
# there with the same settings, so an interrupted run resumes. Its verification columns were measured with the
# default (digits) relearn lr and probe size, before LeNet's were calibrated: the two --set keep them reproducible.
mnist-table: setup
	$(BIN)/python bench/dihyfo_mnist.py --params $(MNIST_EXPERIMENT) --threads 1 --classes 0 1 2 3 4 5 6 7 8 9 \
		--skip-held-out --reuse --set evaluation.verification.relearn_lr=3e-3 \
		--set evaluation.verification.probe_per_class=14

clean:
	rm -rf artifacts mlruns.db mlartifacts .stack site
