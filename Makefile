# tickpipe — two commands on a fresh machine: `make demo` and `make test`.
# Both create .venv with Python 3.12 when it is missing and install the project into it.

VENV      := .venv
PY        := $(VENV)/bin/python
STAMP     := $(VENV)/.installed
SHELL     := /bin/bash

# Find a Python 3.12 that actually runs (a pyenv shim can exist without the version selected).
PYTHON312 ?= $(shell \
	for c in python3.12 /usr/bin/python3.12 /usr/local/bin/python3.12; do \
	  if command -v $$c >/dev/null 2>&1 && $$c -c 'import sys; assert sys.version_info[:2]==(3,12)' >/dev/null 2>&1; then command -v $$c; exit 0; fi; \
	done; \
	if command -v pyenv >/dev/null 2>&1; then \
	  v=$$(pyenv versions --bare 2>/dev/null | grep -E '^3\.12(\.|$$)' | tail -n 1); \
	  if [ -n "$$v" ]; then echo "$$(pyenv root)/versions/$$v/bin/python3.12"; exit 0; fi; \
	fi)

.PHONY: all venv demo test bench bench-quick bench-gpu clean

all: test

$(STAMP): pyproject.toml
	@if [ -z "$(PYTHON312)" ]; then \
	  echo "error: Python 3.12 was not found. Install it (Debian: apt-get install python3.12 python3.12-venv;" \
	       "pyenv: pyenv install 3.12) or pass PYTHON312=/path/to/python3.12." >&2; exit 1; fi
	@if [ ! -x $(PY) ]; then echo "creating $(VENV) with $(PYTHON312)"; $(PYTHON312) -m venv $(VENV); fi
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/tickpipe demo

test: $(STAMP)
	$(PY) -m pytest -q tests

bench: $(STAMP)
	$(PY) bench/run.py --size full --json bench/out/full.json
	$(PY) bench/capture.py --size full --json bench/out/capture.json
	$(PY) bench/features.py --events 20000000 --instruments 1000
	$(PY) bench/forecast.py --instruments 10000 --length 2000 --sample 100
	$(PY) bench/store.py --slot 5min --json bench/out/store-5min.json
	$(PY) bench/store.py --slot 1min --json bench/out/store-1min.json
	$(PY) bench/store.py --slot 10min --json bench/out/store-10min.json

bench-quick: $(STAMP)
	$(PY) bench/run.py --size quick --json bench/out/quick.json
	$(PY) bench/capture.py --size quick --json bench/out/capture-quick.json
	$(PY) bench/features.py --events 300000 --instruments 100
	$(PY) bench/forecast.py --instruments 200 --length 1000 --sample 5
	$(PY) bench/store.py --rows 300000 --instruments 100 --repeats 3 --write-repeats 1

bench-gpu: $(STAMP)      # on a machine with an NVIDIA GPU: books and features on the device
	$(PY) bench/gpu.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache bench/out demo-out
