# Two commands matter: `make report` (full notebook report on the demo data)
# and `make test`. Both set up .venv first; set-up is idempotent.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch first, so that pip does not pull another torch build for torchvision and timm
# (this pair installs from the local wheel store; see README.md)
TORCH  := torch==2.14.1 torchvision==0.29.1
PROFILE ?= demo
# two workers: one mostly runs notebooks while the other runs the unit tests (a test file
# stays on one worker, so its module fixtures, e.g. the Ray cluster, start once)
PYTEST_ARGS ?= -n 2 --dist loadfile

.PHONY: setup browser report test test-fast bench lint lab kernel clean-reports

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

report: setup
	$(BIN)/shopee-match report --profile $(PROFILE)

# Debian's Chromium + ChromeDriver for the browser test (skipped, with a note, where apt cannot)
browser:
	@bash .ci/install-browser

test: setup browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: setup
	$(BIN)/python -m pytest -m "not notebooks" $(PYTEST_ARGS)

bench: setup
	$(BIN)/python benchmarks/run_all.py

# JupyterLab in the project's environment, opened on notebooks/, with the kit's kernel
kernel: setup
	$(BIN)/python -m ipykernel install --sys-prefix --name shopee-match \
		--display-name "Python (shopee-match)"

lab: kernel
	$(BIN)/jupyter lab --notebook-dir=notebooks $(if $(filter 0,$(shell id -u)),--allow-root) \
		$(LAB_ARGS)

lint: setup
	$(BIN)/ruff check src tests benchmarks
