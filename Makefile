# The two commands of the README: `make demo` (run the quickstart offline) and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-dev

.PHONY: demo test lint bench bench-peers reliability clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch pinned exactly: the CPU wheel here; another spelling may pull a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,local]'
	touch $@

demo: $(STAMP)
	$(VENV)/bin/trialrun run examples/quickstart.yaml

test: $(STAMP)
	$(VENV)/bin/ruff check src tests bench reliability
	$(VENV)/bin/mypy
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests bench
	$(VENV)/bin/ruff format --check src tests bench
	$(VENV)/bin/mypy

bench: $(STAMP)
	$(PY) bench/throughput.py

# trialrun vs a raw SDK loop vs Inspect AI against a local fake server (installs inspect-ai).
bench-peers: $(STAMP)
	$(PY) -m pip install -q inspect-ai
	$(PY) bench/http_clients.py --n 2000 10000 --latency-ms 0 50 --runs 3
	$(PY) bench/http_clients.py --n 100000 --latency-ms 0 --runs 3 --clients raw-aiohttp,trialrun-aiohttp

# The long reliability suite: kill storms of 10 kills, bigger runs (the quick one is in `make test`).
reliability: $(STAMP)
	TRIALRUN_RELIABILITY=long $(PY) -m pytest reliability -q

clean:
	rm -rf $(VENV) runs bench/out
