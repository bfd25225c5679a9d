# The two set-up commands of the README: `make demo` (main job end to end) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: install demo test bench down

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/.installed

demo: install
	$(BIN)/gpuledger demo
	@echo "The stack keeps running for your queries; stop it with: $(BIN)/gpuledger stack down"

# tests/deploy need helm and promtool: install-tools.sh builds/installs them once and prints helm's folder.
test: install
	PATH="$$(deploy/helm/install-tools.sh):$$PATH" $(BIN)/pytest -q -p no:cacheprovider

bench: install
	$(BIN)/python tests/bench/pipeline_bench.py

down:
	$(BIN)/gpuledger stack down
