# Two commands do everything on a fresh machine:
#   make demo   install into ./.venv, then run `soft2hard demo`
#   make test   install into ./.venv, then run the whole test suite (CI runs exactly this)
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: install demo test test-fast lint bench
install: $(VENV)/.soft2hard-installed

$(VENV)/.soft2hard-installed: pyproject.toml scripts/install.sh
	bash scripts/install.sh

demo: install
	$(VENV)/bin/soft2hard demo

test: install
	$(PY) -m pytest -q

test-fast: install
	$(PY) -m pytest -q -m "not slow"

lint: install
	$(VENV)/bin/ruff check src tests bench

bench: install
	$(PY) bench/tuning.py
