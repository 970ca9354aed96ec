# Every target creates the virtual environment on first use, so a fresh clone needs only `make demo`
# or `make test`. PYTHON picks the interpreter that builds the venv.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install demo smoke test test-fast lint bench bench-eval plot-filters clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install -e ".[dev]"
	touch $(STAMP)

# The main job, offline: expert demos in robosuite -> train the tiny VLA -> closed-loop success rate.
demo: $(STAMP)
	$(BIN)/python train.py experiment=demo $(ARGS)

smoke: $(STAMP)
	$(BIN)/python train.py experiment=smoke $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest

test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

bench: $(STAMP)
	$(BIN)/python scripts/bench_optim.py

# LIBERO evaluator throughput with 1 and 2 env workers (needs LIBERO_ASSETS or ../shared/libero-assets).
bench-eval: $(STAMP)
	$(BIN)/python scripts/bench_eval.py $(ARGS)

plot-filters: $(STAMP)
	$(BIN)/python scripts/plot_filters.py --output outputs/filters.png

clean:
	rm -rf $(VENV) outputs .pytest_cache .ruff_cache
