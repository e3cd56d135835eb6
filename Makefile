# sresolve: `make demo` and `make test` do all set-up on a fresh machine.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export UV_SYSTEM_CERTS := 1
export UV_COMPILE_BYTECODE := 1
export UV_LINK_MODE := hardlink
export WANDB_MODE ?= offline
export HF_HUB_OFFLINE := 1
export OMP_WAIT_POLICY ?= PASSIVE
export PYTHONDONTWRITEBYTECODE :=

.PHONY: help install demo test lint bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/'

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check uv==0.13.9
	$(VENV)/bin/uv pip install --python $(PY) -c constraints.txt -e ".[dev]"
	touch $@

install: $(VENV)/.installed  ## create .venv and install sresolve with its dev extras

demo: install  ## train SAFMN x4 on the embedded images, evaluate vs bicubic, write a comparison PNG
	$(PY) -m sresolve.cli.demo

TEST_PROCS ?= 2

test: install  ## the whole test suite, in TEST_PROCS pytest-xdist processes (0: in this process)
	$(PY) -m pytest -q -n $(TEST_PROCS) --dist loadfile

lint: install  ## ruff
	$(VENV)/bin/ruff check src tests benchmarks

bench: install  ## benchmark scripts (print ratios against in-run references)
	$(PY) benchmarks/bench_resize.py
	$(PY) benchmarks/bench_data.py
	$(PY) benchmarks/bench_safmn.py
	$(PY) benchmarks/bench_hat.py
	$(PY) benchmarks/bench_hma.py
	$(PY) benchmarks/bench_eqsr.py
	$(PY) benchmarks/bench_amrsr.py
	$(PY) benchmarks/bench_lam.py
	$(PY) benchmarks/bench_train.py

clean:  ## remove outputs
	rm -rf outputs multirun demo_out .pytest_cache
