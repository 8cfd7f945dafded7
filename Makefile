# Two commands do everything on a fresh Debian machine with Python 3:
#   make demo   - install what is missing, compile, run the demo
#   make test   - install what is missing, run every gate and test suite
# Both are idempotent and quick once set up. `make setup` does only the setup.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

# Debian's own python3 when there is one: statically linked and built with
# PGO/LTO, it starts ~3 ms sooner than a shared-library build such as
# pyenv's (no relocation of libpython at every start), and resin starts
# with every port (docs/performance.md, "Start-up").
# It must be >= 3.11 and have venv (ensurepip); else `python3` on the PATH.
ifndef PYTHON
PYTHON := $(shell for p in /usr/bin/python3 python3; do \
  if $$p -c 'import sys, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then \
    echo $$p; exit; fi; done; echo python3)
endif
VENV   := .venv
VPY    := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# The fast launcher (`resin launcher`: python -IS, byte-compiled), which lacca
# finds by itself in a checkout; the tests name it explicitly.
RESIND := $(VENV)/bin/resind
export LACCA_RESIN ?= $(CURDIR)/$(RESIND)

.PHONY: help setup elixir python compile demo test test-python test-elixir lint dialyzer bench fuzz stress clean

help:
	@echo "make demo   - set up (Erlang/Elixir via apt, Python venv) and run the demo"
	@echo "make test   - set up and run all gates and tests (pytest, then ExUnit)"
	@echo "make setup  - only the setup"
	@echo "make bench  - benchmarks (not part of the tests)"
	@echo "make stress - long stress run under CPU hogs (not part of the tests)"
	@echo "make fuzz   - 1,000,000-frame fuzzing of both protocols (not part of the tests)"

setup: elixir python compile

# Erlang/Elixir from Debian's packages, only when mix is missing.
elixir:
	@if ! command -v mix >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo ">> installing Erlang/Elixir from Debian packages"; \
	    apt-get update -qq; \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq elixir erlang-dev >/dev/null; \
	  else \
	    echo "Elixir is missing. Install it as root:  apt-get install elixir erlang-dev"; \
	    echo "(or run 'sudo make setup'), then run this command again."; \
	    exit 1; \
	  fi; \
	fi

# The venv holds resin (editable) and the Python test tools.
python: $(STAMP) $(RESIND)

$(RESIND): $(STAMP) resin_py/launcher.py
	$(VENV)/bin/resin launcher $@

$(STAMP): pyproject.toml setup.py resin_py/_spawn.c
	@if ! $(PYTHON) -m venv --help >/dev/null 2>&1 || ! $(PYTHON) -c 'import ensurepip' >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; \
	  else \
	    echo "Python's venv module is missing: apt-get install python3-venv"; exit 1; \
	  fi; \
	fi
	@if ! $(PYTHON) -c 'import os, sysconfig, sys; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))'; then \
	  if [ "$$(id -u)" = 0 ] && [ "$(PYTHON)" = /usr/bin/python3 ]; then \
	    apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-dev >/dev/null; \
	  else \
	    echo "note: no Python headers for $(PYTHON): resin uses its pure-Python spawner"; \
	  fi; \
	fi
	@echo ">> creating $(VENV) with resin_py and the dev tools ($(PYTHON))"
	$(PYTHON) -m venv --clear $(VENV)  # --clear: never mix two interpreters' files
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q -e '.[dev]' --config-settings editable_mode=compat
	@touch $(STAMP)

compile: elixir
	mix compile

demo: setup
	mix run examples/demo.exs

lint: setup
	$(VENV)/bin/ruff check resin_py tests bench
	$(VENV)/bin/mypy --strict resin_py
	mix format --check-formatted
	MIX_ENV=test mix compile --force --warnings-as-errors
	$(MAKE) --no-print-directory dialyzer

# Dialyzer over lacca (tools/dialyzer.exs); Debian's erlang-dialyzer is
# installed like Elixir. The PLT is built once into _build/dialyzer.
dialyzer: elixir
	@if ! command -v dialyzer >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq erlang-dialyzer >/dev/null; \
	  else \
	    echo "Dialyzer is missing. Install it as root:  apt-get install erlang-dialyzer"; exit 1; \
	  fi; \
	fi
	MIX_ENV=dev mix compile
	elixir -pa "$$(erl -noshell -eval 'io:format("~s", [code:lib_dir(dialyzer, ebin)]), halt().')" \
	  tools/dialyzer.exs _build/dev/lib/lacca/ebin

test-python: setup
	$(VENV)/bin/pytest -q

test-elixir: setup
	mix test

test: lint test-python test-elixir

bench: setup
	$(VPY) bench/run.py

# Not part of `make test`: a million hostile frames of both protocols at real
# resins while canaries check the answers, then issue 8's single-message costs
# (a few minutes to half an hour). `make fuzz FUZZ_ARGS="--seed 7 --frames 50000"`.
fuzz: setup
	$(VPY) bench/fuzz.py --hostile $(FUZZ_ARGS)

# Not part of `make test`: resin and lacca under CPU hogs, looking for hangs
# (about 20 minutes on 2 cores). `make stress STRESS_ARGS=--quick` for a short run.
stress: setup
	$(VPY) bench/stress.py $(STRESS_ARGS)

clean:
	rm -rf _build $(VENV) .pytest_cache .mypy_cache .ruff_cache
