# Two commands: `make demo` runs the main job, `make test` passes the tests.
# Both set themselves up: a virtual environment (reused while pyproject.toml is
# unchanged), Kafka jars from Maven Central (cached in ~/.cache/shelfsight), and
# redis-server (apt-get, when missing and root).

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SHELFSIGHT := $(BIN)/shelfsight
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
PYTEST_ARGS ?=

FMNIST_DIR := /usr/share/datasets/fashion-mnist
DATA_DIR ?= $(HOME)/.cache/shelfsight/datasets/fashion-mnist
MODEL_DIR ?= $(HOME)/.cache/shelfsight/checkpoints/fashion-mnist
REPORT_DIR ?= reports/fashion-mnist
# Fine-tunes EfficientNet-Lite0 at 96 px above its first four stages, on their cached activations,
# mirrored, moved by a cell and partly erased as augmentation, then chooses on validation whether pictures are
# served with their mirror images (docs/benchmarks.md). About 1 h 55 min on two CPU cores.
TRAIN_ARGS ?= --mode finetune --input-size 96 --trainable-stages 14 --shift-cells 1 --erase 0.5 --epochs 20 --patience 20 \
  --batch-size 128 --backbone-lr 1e-3

.PHONY: help setup eval-deps fashion-mnist chromium model demo test up down status eval-movielens eval-synthetic eval-rates eval-experiments

help:
	@echo "make demo    the whole system: Kafka + Redis, model, serve + profiles, simulated shoppers, live storefront"
	@echo "make test    set up, start Kafka + Redis, run the tests, stop what it started"
	@echo "make model   train the product model on Fashion-MNIST and write its evaluation report"
	@echo "make eval-movielens | eval-synthetic | eval-rates   recommendation quality against baselines (docs/evaluation.md)"
	@echo "make eval-experiments   live A/A, A/B and interleaving runs: right decisions and the traffic they need"
	@echo "make up|down|status   the local stack on its own"

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "error: $(PYTHON) not found; install Python 3.11+"; exit 1; }
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "error: Python 3.11+ needed"; exit 1; }
	@[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip uv
	@# uv installs what pip would, from the same index, in seconds rather than two minutes: its cache
	@# (~/.cache/uv) keeps the ~3 GB of torch wheels and links them into every later clone's venv.
	@# --native-tls: the machine's certificates, as pip uses them. --compile-bytecode: as pip does; with
	@# PYTHONDONTWRITEBYTECODE set, every process would otherwise compile torch again (8 s, not 3.6 s).
	$(BIN)/uv pip install -q --native-tls --compile-bytecode --python $(BIN)/python -e '.[dev]'
	@rm -f $(VENV)/.installed-* && touch $@

# MovieLens-100k ships inside the recbole wheel. Only its data files are read, so it is installed
# without its dependencies (torch, ray, …); it is never imported, and its data never enters the repo.
eval-deps: setup
	@$(BIN)/python -c 'import importlib.metadata as m; m.distribution("recbole")' 2>/dev/null || \
	  $(BIN)/uv pip install -q --native-tls --python $(BIN)/python --no-deps recbole==1.2.1

# Real product photos from Debian's dataset-fashion-mnist (installed when missing, as root).
fashion-mnist:
	@[ -f $(FMNIST_DIR)/train-images-idx3-ubyte.gz ] || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	  else echo "error: Fashion-MNIST is missing: sudo apt-get install dataset-fashion-mnist"; exit 1; fi; }

# Headless Chromium and its driver from Debian, for the storefront widget test (no browser download).
chromium:
	@{ command -v chromium && command -v chromedriver; } >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; \
	  else echo "error: Chromium is missing: sudo apt-get install chromium chromium-driver"; exit 1; fi; }

# The benchmark model; its figures are in docs/benchmarks.md.
model: setup fashion-mnist
	@[ -f $(DATA_DIR)/train/texts.csv ] || $(SHELFSIGHT) datasets fashion-mnist $(DATA_DIR)
	$(SHELFSIGHT) train $(DATA_DIR)/train --out $(MODEL_DIR) $(TRAIN_ARGS)
	$(SHELFSIGHT) evaluate $(MODEL_DIR) $(DATA_DIR)/test --out $(REPORT_DIR)

up: setup
	$(SHELFSIGHT) stack up

down: setup
	$(SHELFSIGHT) stack down

status: setup
	$(SHELFSIGHT) stack status

# Recommendation quality (docs/evaluation.md, figures in docs/benchmarks.md). EVAL_ARGS: e.g.
# --window validation (tune on it; the default, test, is the window to report).
EVAL_DATA ?= $(HOME)/.cache/shelfsight/datasets
EVAL_ARGS ?=
eval-movielens: eval-deps up
	@[ -f $(EVAL_DATA)/movielens-100k/clicks.jsonl ] || $(SHELFSIGHT) datasets movielens-100k $(EVAL_DATA)/movielens-100k
	$(SHELFSIGHT) evaluate-recs $(EVAL_DATA)/movielens-100k $(EVAL_ARGS)

# The synthetic shop once per way of listing the new products (docs/evaluation.md): half of them
# with neutral titles, all of them, titles in other languages, no category, and as the catalogue.
SYNTHETIC_CASES ?= mixed neutral foreign no-category informative
eval-synthetic: setup fashion-mnist up
	@for case in $(SYNTHETIC_CASES); do \
	  [ -f $(EVAL_DATA)/synthetic-shop-$$case/clicks.jsonl ] || \
	    $(SHELFSIGHT) datasets synthetic-shop $(EVAL_DATA)/synthetic-shop-$$case --new-listings $$case --new-after-days 10 || exit $$?; \
	  $(SHELFSIGHT) evaluate-recs $(EVAL_DATA)/synthetic-shop-$$case --out reports/recs/synthetic-shop-$$case $(EVAL_ARGS) || exit $$?; \
	done

# Live experiments (docs/experiments.md): A/A, A/B and interleaving through `serve` and `profiles`
# on the mixed synthetic shop, with simulated shoppers of known taste. The defaults (5 A/A runs, 3 of
# each other scenario) take 20-30 min on two cores; docs/benchmarks.md's figures: EXPERIMENT_ARGS="--aa-runs 100".
EXPERIMENT_ARGS ?=
eval-experiments: setup fashion-mnist up
	@[ -f $(EVAL_DATA)/synthetic-shop-mixed/clicks.jsonl ] || \
	  $(SHELFSIGHT) datasets synthetic-shop $(EVAL_DATA)/synthetic-shop-mixed --new-listings mixed --new-after-days 10
	$(SHELFSIGHT) evaluate-experiments $(EVAL_DATA)/synthetic-shop-mixed --out reports/experiments $(EXPERIMENT_ARGS)

# Quality against the shop's event rate (docs/evaluation.md): MovieLens' test window in-process at
# each rate of EVAL_RATES (the services' cadence spans rate × seconds events), then the chart.
EVAL_RATES ?= 3 15 200
eval-rates: eval-deps up
	@[ -f $(EVAL_DATA)/movielens-100k/clicks.jsonl ] || $(SHELFSIGHT) datasets movielens-100k $(EVAL_DATA)/movielens-100k
	@for rate in $(EVAL_RATES); do \
	  $(SHELFSIGHT) evaluate-recs $(EVAL_DATA)/movielens-100k --rate $$rate --out reports/recs/movielens-100k-test-rate-$$rate $(EVAL_ARGS) || exit $$?; \
	done
	$(BIN)/python -m services.evaluation.rates $(foreach rate,$(EVAL_RATES),reports/recs/movielens-100k-test-rate-$(rate)) \
	  --out reports/recs/movielens-100k-quality-vs-rate.png

# DEMO_ARGS: e.g. --seconds 120 --products 2000 (see `shelfsight demo --help`).
DEMO_ARGS ?=
demo: setup fashion-mnist
	$(SHELFSIGHT) demo $(DEMO_ARGS)

# Stops the stack afterwards only when this run started it (a running dev stack is left alone).
test: setup eval-deps fashion-mnist chromium
	@was_up=0; $(SHELFSIGHT) stack status >/dev/null 2>&1 && was_up=1; \
	$(SHELFSIGHT) stack up || exit $$?; \
	status=0; $(BIN)/pytest $(PYTEST_ARGS) || status=$$?; \
	if [ $$was_up = 0 ]; then $(SHELFSIGHT) stack down; fi; \
	exit $$status
