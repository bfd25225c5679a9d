# The two set-up commands of the README: `make demo` (main job end to end) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: install demo lint test test-cluster bench down

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# The dashboard starts last, bound to 127.0.0.1 with anonymous admin access (local use only); `make down` stops it.
demo: install
	$(BIN)/gpuledger demo
	-@[ -f .gpuledger/ui.pid ] && kill $$(cat .gpuledger/ui.pid) 2>/dev/null; true
	@GPULEDGER_UI__ANONYMOUS=admin nohup $(BIN)/gpuledger ui >.gpuledger/ui.log 2>&1 & echo $$! >.gpuledger/ui.pid
	@echo "Dashboard: http://127.0.0.1:8088/ (log: .gpuledger/ui.log)"
	@echo "The stack and the dashboard keep running for your queries; stop them with: make down"

# deploy/test-tools.sh installs, once, what the tests use besides Python packages (Java, Maven, promtool, node,
# chromium, helm, focus-validator) and prints helm's folder.
# ruff (lint + format) and mypy, configured in pyproject.toml; CI runs them through `make test`.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: install lint
	@mkdir -p .gpuledger && deploy/test-tools.sh >.gpuledger/test-tools.path  # its own line: a failed install stops here
	PATH="$$(cat .gpuledger/test-tools.path):$$PATH" $(BIN)/pytest -q -p no:cacheprovider

# Only the scale-out tests on a 3-broker Kafka and a 2-shard ClickHouse (README "Scale-out"); make test runs them too.
test-cluster: install
	$(BIN)/pytest -q -p no:cacheprovider -m cluster

bench: install
	$(BIN)/python tests/bench/pipeline_bench.py

down:
	-@[ -f .gpuledger/ui.pid ] && kill $$(cat .gpuledger/ui.pid) 2>/dev/null; rm -f .gpuledger/ui.pid
	$(BIN)/gpuledger stack down
