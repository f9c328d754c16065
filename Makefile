# Two commands set everything up on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEMO_DIR ?= demo_lake
DEMO_ROWS ?= 20000
STAMP := $(VENV)/.installed

.PHONY: demo test install bench clean system-deps

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[all,test,demo]'
	touch $(STAMP)

install: $(STAMP)

# poppler-utils (pdfsig, pdftotext, pdftoppm) read signed reports back; Debian's package
# chromium: the dashboard tests drive Debian's browser headless (Playwright's Python package)
system-deps:
	@command -v pdfsig >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq && apt-get install -y -qq poppler-utils) >/dev/null 2>&1; } || \
		echo "note: install poppler-utils (pdfsig, pdftotext) to check reports"
	@command -v chromium >/dev/null 2>&1 || { command -v apt-get >/dev/null 2>&1 && \
		(apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1; } || \
		echo "note: install chromium (Debian's package) for the dashboard tests"

demo: $(STAMP) system-deps
	DEMO_DIR=$(DEMO_DIR) DEMO_ROWS=$(DEMO_ROWS) $(BIN)/python -m sample_lake.demo

test: $(STAMP) system-deps
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[all,test,demo,bench]'
	$(BIN)/python bench/bench_delta_erasure.py
	$(BIN)/python bench/bench_rewrite_history.py
	$(BIN)/python bench/bench_feast_online.py
	$(BIN)/python bench/bench_mlflow_impact.py
	$(BIN)/python bench/bench_sweep.py
	$(BIN)/python bench/bench_pending.py
	$(BIN)/python bench/bench_cost_curve.py
	$(BIN)/python bench/bench_spark.py
	$(BIN)/python bench/bench_service.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) .pytest_cache
