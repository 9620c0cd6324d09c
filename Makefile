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

.PHONY: setup run run-mnist test lint stack-up stack-down bench clean

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
test: lint
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
# and `dvc exp apply mnist-lenet` brings its params, dvc.lock and outputs into the workspace.
MNIST_EXP := -S data.name=mnist -S data.source=../shared/datasets/mnist -S model.arch=lenet \
	-S train.epochs=12 -S train.batch_size=128 -S train.lr=0.001 -S train.schedule=cosine \
	-S hypernet.generate=block_head -S hypernet.chunk_size=1000 -S unlearn.method=dihyfo2 \
	-S 'evaluation.methods=[retrain,gradtau,dihyfo1,dihyfo2]'
run-mnist: setup
	PATH=$(CURDIR)/$(BIN):$$PATH hyperforget import-data --set data.name=mnist --set data.source=../shared/datasets/mnist
	PATH=$(CURDIR)/$(BIN):$$PATH dvc add data
	PATH=$(CURDIR)/$(BIN):$$PATH dvc exp run --temp -n mnist-lenet $(MNIST_EXP)
	PATH=$(CURDIR)/$(BIN):$$PATH dvc exp show --no-pager

clean:
	rm -rf artifacts mlruns.db mlartifacts .stack
