# tadsweep: `make demo` runs the embedded demo study end to end; `make test` runs the suite.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
DEMO := --configfile configs/demo.yaml

.PHONY: setup demo test bench plan status lint format container

setup: $(VENV)/.installed

# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

demo: setup
	@start=$$(date +%s); \
	snakemake $(DEMO) --cores 2 --rerun-incomplete && \
	snakemake $(DEMO) --report results/demo/report.html && \
	echo "demo finished in $$(( $$(date +%s) - start )) s; report: results/demo/report.html"

test: setup
	$(PY) -m pytest -q

bench: setup
	$(PY) benchmarks/bench_postprocess.py
	$(PY) benchmarks/bench_dryrun.py

# The plan of the real study; an apptainer test double stands in where Apptainer is not installed.
plan: setup
	$(PY) -m tadsweep.grid config.yaml
	PATH="$$PATH:$(CURDIR)/tests/doubles/bin" snakemake -n --profile slurm --quiet rules

# Progress of a running study: make status STUDY=results/thumos14_adatad_lora
STUDY ?= results/demo
status: setup
	$(PY) -m tadsweep.status $(STUDY)

lint: setup
	snakemake --lint
	snakefmt --check Snakefile rules
	ruff check .
	ruff format --check .

format: setup
	snakefmt Snakefile rules
	ruff format .

container:
	apptainer build containers/opentad.sif containers/opentad.def
