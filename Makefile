# Two commands matter: `make report` (full notebook report on the demo data)
# and `make test`. Both set up .venv first; set-up is idempotent.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch first, so pip does not pull another build (see OFFLINE_MODELS.md)
TORCH  := torch==2.14.1 torchvision==0.29.1
PROFILE ?= demo
PYTEST_ARGS ?=

.PHONY: setup report test test-fast bench lint clean-reports

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

report: setup
	$(BIN)/shopee-match report --profile $(PROFILE)

test: setup
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m "not notebooks" $(PYTEST_ARGS)

bench: setup
	$(BIN)/python benchmarks/run_all.py

lint: setup
	$(BIN)/ruff check src tests benchmarks
