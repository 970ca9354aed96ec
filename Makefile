# Every target creates the virtual environment on first use, so a fresh clone needs only `make demo`
# or `make test`. PYTHON picks the interpreter that builds the venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo test test-fast lint bench plot-filters clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python scripts/bench_optim.py
	$(BIN)/python scripts/plot_filters.py --output outputs/filters.png

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: demo

plot-filters: $(STAMP)
	$(BIN)/python scripts/plot_filters.py --output outputs/filters.png

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
