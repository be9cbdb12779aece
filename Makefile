# drape: train -> export -> model repository -> Triton. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON    ?= python3
VENV      ?= .venv
PY        := $(VENV)/bin/python
EXTRAS    ?= training,export,serve,client,load,monitoring,dev
STAMP     := $(VENV)/.installed-$(shell cat pyproject.toml | md5sum | cut -c1-12)

HEIGHT    ?= 256
WIDTH     ?= 192
DATA      ?= data/synth
QUICK_DATA?= build/quick/data
CKPT      ?= build/checkpoints
ONNX      ?= build/onnx
TARGET    ?= cpu
REPO      ?= build/model_repository/$(TARGET)
CONFIGS   := $(foreach n,garment_seg human_parsing gmm tom recolor,training/configs/$(n).yaml)
DEEPSPEED := $(VENV)/bin/deepspeed --num_gpus 1

.PHONY: help venv data quick train export repo trt serve test clean

help: ## list the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-z-]+:.*## /{printf "  make %-8s %s\n", $$1, $$2}' $(MAKEFILE_LIST)
	@echo "  variables: HTTP_PORT GRPC_PORT METRICS_PORT (serve), TARGET=cpu|gpu (repo), HEIGHT WIDTH"

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -qq --upgrade pip
	$(PY) -m pip install -qq -e ".[$(EXTRAS)]"
	@rm -f $(VENV)/.installed-* && touch $@

venv: $(STAMP) ## create .venv and install the project with every extra

data: $(STAMP) ## generate the default synthetic train/val/test sets into data/synth
	$(PY) -m drape_train.data generate --out $(DATA) --train 1024 --val 64 --test 64 --height $(HEIGHT) --width $(WIDTH)

train: $(STAMP) ## train the five networks with DeepSpeed, default schedule on the default data
	$(DEEPSPEED) training/drape_train/train.py --config $(CONFIGS) --data $(DATA) --out $(CKPT)

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
	$(DEEPSPEED) training/drape_train/train.py --quick --config $(CONFIGS) --data $(QUICK_DATA) --out $(CKPT)
	$(PY) -m drape_export onnx --checkpoints $(CKPT) --out $(ONNX)
	$(PY) -m drape_export repo --target cpu --onnx-dir $(ONNX) --out build/model_repository/cpu

build/samples/person.jpg: | $(STAMP)
	$(PY) -m drape_train.data samples --out build/samples

quick: build/model_repository/cpu/tryon/config.pbtxt build/samples/person.jpg ## run the quick pipeline if no CPU repository exists yet

serve: quick ## start Triton on the CPU repository (HTTP 8000, gRPC 8001, metrics 8002); Ctrl-C stops
	$(PY) -m drape_serving.server --model-repository build/model_repository/cpu

test: quick ## the full test suite (starts real Triton servers on free ports)
	$(PY) -m pytest -q -p no:cacheprovider tests

clean: ## remove build outputs (keeps .venv and data)
	rm -rf build
