# ragline: `make run` (embedded default) and `make test`. Both create .venv and install first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
QUESTION ?= How do I report a security vulnerability?

.PHONY: install run ask test lint format bench clean phoenix promtool chromium
PHOENIX := .venv-phoenix/.installed-stamp

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first and pinned: 2.13.0 is the CPU build; a looser range pulls a multi-GB CUDA build
	$(BIN)/python -m pip install --quiet torch==2.13.0
	# llama-cpp-python compiles from source on first install (about 10 min on 2 cores), then pip caches the wheel
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# Arize Phoenix, a real OTLP LLM-observability backend, in its own venv (the tracing integration test)
# (no pip inside it: the main venv's pip installs into it, which also sidesteps ensurepip)
$(PHOENIX): $(STAMP)
	rm -rf .venv-phoenix
	$(PYTHON) -m venv --without-pip .venv-phoenix
	$(BIN)/python -m pip --python .venv-phoenix/bin/python install --quiet 'arize-phoenix==20.26.1'
	touch $(PHOENIX)

phoenix: $(PHOENIX)

# promtool (tests/deploy checks and unit-tests deploy/prometheus). Only the binary is extracted
# from Debian's `prometheus` package: installing the package would pull its dependencies and try
# to start the Prometheus daemon. Needs root and apt; skipped when promtool is already on PATH.
promtool:
	@command -v promtool >/dev/null 2>&1 || { \
		tmp=$$(mktemp -d) && \
		apt-get update -qq && \
		(cd $$tmp && apt-get download -qq -o APT::Sandbox::User=root prometheus) && \
		dpkg-deb -x $$tmp/prometheus_*.deb $$tmp/x && \
		install -m 0755 $$tmp/x/usr/bin/promtool /usr/local/bin/promtool && \
		rm -rf $$tmp; }
	@promtool --version | head -1

# Debian's Chromium for the web UI's end-to-end tests (Playwright drives it; no browser download).
# Needs root and apt; skipped when /usr/bin/chromium is there.
chromium:
	@test -x /usr/bin/chromium || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }
	@/usr/bin/chromium --version

run: install
	$(BIN)/ragline ingest samples
	$(BIN)/ragline ask "$(QUESTION)"
	$(BIN)/ragline serve

ask: install
	$(BIN)/ragline ask "$(QUESTION)"

test: install phoenix promtool chromium
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

format: install
	$(BIN)/ruff format src tests bench
	$(BIN)/ruff check --fix src tests bench

bench: install
	$(BIN)/python bench/retrieval_quality.py --data $(DATA) --split train

clean:
	rm -rf $(VENV) .venv-phoenix .ragline .pytest_cache .mypy_cache .ruff_cache
