# drape: train -> export -> model repository -> Triton. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON    ?= python3
VENV      ?= .venv
PY        := $(VENV)/bin/python
EXTRAS    ?= training,export,serve,client,load,monitoring,dev
STAMP     := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-12)

# The model resolution: one default, drape_core.contract.DEFAULT_RESOLUTION (read here without Python)
HEIGHT    ?= $(shell sed -n 's/^DEFAULT_RESOLUTION = (\([0-9]*\), [0-9]*)$$/\1/p' core/drape_core/contract.py)
WIDTH     ?= $(shell sed -n 's/^DEFAULT_RESOLUTION = ([0-9]*, \([0-9]*\))$$/\1/p' core/drape_core/contract.py)
DATA      ?= data/synth
QUICK_DATA?= build/quick/data
CKPT      ?= build/checkpoints
ONNX      ?= build/onnx
TARGET    ?= cpu
REPO      ?= build/model_repository/$(TARGET)
CONFIGS   := $(foreach n,garment_seg human_parsing gmm tom recolor,training/configs/$(n).yaml)
# DeepSpeed's rendezvous port: a free one per run (its default, 29500, is taken by any other training on the machine)
MASTER_PORT ?= $(shell $(PYTHON) -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
RANKS      ?= 1
TRAIN_ARGS ?=
DEEPSPEED  = $(VENV)/bin/deepspeed --num_gpus $(RANKS) --master_port $(MASTER_PORT)

# make load: a bounded headless locust run against a running server (never binds a port itself)
USERS          ?= 4
SPAWN_RATE     ?= 2
DURATION       ?= 60s
P95_MS         ?= 3000
TRITON_GRPC_URL?= localhost:8001
TRITON_HTTP_URL?= localhost:8000
LOAD_DIR       ?= build/load
BENCH_ARGS     ?=

.PHONY: help venv data quick train export repo trt serve test load bench clean

help: ## list the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-z-]+:.*## /{printf "  make %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: HTTP_PORT GRPC_PORT METRICS_PORT (serve), TARGET=cpu|gpu (repo), HEIGHT WIDTH, MASTER_PORT (train)"
	@echo "             RANKS (data-parallel ranks: GPUs, or CPU processes), TRAIN_ARGS (train: e.g. --resume, --until N)"
	@echo "             USERS SPAWN_RATE DURATION P95_MS TRITON_GRPC_URL TRITON_HTTP_URL (load), BENCH_ARGS (bench)"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --upgrade pip
	$(PY) -m pip install -qq -e ".[$(EXTRAS)]"
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP) ## create .venv and install the project with every extra

data: $(STAMP) ## generate the default synthetic train/val/test sets into data/synth
	$(PY) -m drape_train.data generate --out $(DATA) --train 1024 --val 64 --test 64 --height $(HEIGHT) --width $(WIDTH)

train: $(STAMP) ## train the five networks with DeepSpeed, default schedule on the default data
	$(DEEPSPEED) training/drape_train/train.py --config $(CONFIGS) --data $(DATA) --height $(HEIGHT) --width $(WIDTH) --out $(CKPT) $(TRAIN_ARGS)

export: $(STAMP) ## checkpoints -> ONNX with PyTorch parity check
	$(PY) -m drape_export onnx --checkpoints $(CKPT) --out $(ONNX)

repo: $(STAMP) ## assemble the Triton model repository for TARGET=cpu|gpu from build/onnx
	$(PY) -m drape_export repo --target $(TARGET) --onnx-dir $(ONNX) --out $(REPO)

trt: $(STAMP) ## GPU machines: TensorRT FP16 plans from build/onnx (needs pip install -e '.[tensorrt]')
	$(PY) -m drape_export trt --onnx-dir $(ONNX)

# The quick pipeline: small data, short fixed-seed schedule, export, CPU repository. Runs only when no CPU
# repository exists yet (the file below is written last, by an atomic rename of the whole repository).
build/model_repository/cpu/tryon/config.pbtxt: | $(STAMP)
	$(PY) -m drape_train.data generate --out $(QUICK_DATA) --train 160 --val 16 --test 16 --height $(HEIGHT) --width $(WIDTH)
	$(DEEPSPEED) training/drape_train/train.py --quick --config $(CONFIGS) --data $(QUICK_DATA) --height $(HEIGHT) --width $(WIDTH) --out $(CKPT)
	$(PY) -m drape_export onnx --checkpoints $(CKPT) --out $(ONNX)
	$(PY) -m drape_export repo --target cpu --onnx-dir $(ONNX) --out build/model_repository/cpu

# Re-assemble (no retraining) when the config templates or python models changed since: a stale repository
# fails to load with a new serving layout. The stamp sits inside the repository, so a full assembly removes it.
build/model_repository/cpu/.templates: model_repository/configs/*.pbtxt model_repository/python_models/*.py | build/model_repository/cpu/tryon/config.pbtxt
	$(PY) -m drape_export repo --target cpu --onnx-dir $(ONNX) --out build/model_repository/cpu
	touch $@

build/samples/person.jpg: | $(STAMP)
	$(PY) -m drape_train.data samples --out build/samples

quick: build/model_repository/cpu/tryon/config.pbtxt build/model_repository/cpu/.templates build/samples/person.jpg ## run the quick pipeline if no CPU repository exists yet

serve: quick ## start Triton on the CPU repository (HTTP 8000, gRPC 8001, metrics 8002); Ctrl-C stops
	$(PY) -m drape_serving.server --model-repository build/model_repository/cpu

test: quick ## the full test suite (starts real Triton servers on free ports)
	$(PY) -m pytest -q -rs -p no:cacheprovider tests

# locust's exit code is ignored ('-'): load_check reads the CSV and fails on any error, too few requests or p95.
load: $(STAMP) build/samples/person.jpg ## locust against a running server: CSV + HTML in build/load, fails on any error or p95 > P95_MS
	@mkdir -p $(LOAD_DIR) && rm -f $(LOAD_DIR)/drape_*.csv $(LOAD_DIR)/report.html
	-TRITON_GRPC_URL=$(TRITON_GRPC_URL) TRITON_HTTP_URL=$(TRITON_HTTP_URL) $(VENV)/bin/locust -f client/locustfile.py \
		--headless -u $(USERS) -r $(SPAWN_RATE) -t $(DURATION) --stop-timeout 60 \
		--csv $(LOAD_DIR)/drape --html $(LOAD_DIR)/report.html --only-summary
	$(PY) client/load_check.py $(LOAD_DIR)/drape_stats.csv --p95-ms $(P95_MS)

bench: quick ## eager PyTorch vs in-process ONNX Runtime vs Triton, side by side -> build/bench (see BENCHMARKS.md)
	$(PY) benchmarks/pipelines.py --out build/bench $(BENCH_ARGS)

clean: ## remove build outputs (keeps .venv and data)
	rm -rf build
