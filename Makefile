# tadsweep: `make demo` runs the embedded demo study end to end; `make test` runs the suite.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
HOST_PATH := $(PATH)
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
DEMO := --configfile configs/demo.yaml

# Upstream OpenTAD at the pinned commit: $$OPENTAD_ROOT, else ../shared/third_party/OpenTAD, else
# build/OpenTAD (`make opentad` clones it).
OPENTAD_COMMIT := 3dd7b032d7a074bec9665001e4e7f9d1b71405b5
OPENTAD_ROOT ?= $(firstword $(wildcard $(CURDIR)/../shared/third_party/OpenTAD) $(CURDIR)/build/OpenTAD)
export OPENTAD_ROOT := $(abspath $(OPENTAD_ROOT))

.PHONY: setup setup-opentad opentad opentad-root demo test check test-opentad bench plan status doctor \
	lint format schema container container-check container-lock gpu-check

setup: $(VENV)/.installed

# torch first and pinned: an unpinned torch pulls a multi-GB CUDA build. The install compiles
# the C++ kernels into tadsweep/detections (setup.py): an edited source rebuilds them.
$(VENV)/.installed: pyproject.toml setup.py $(wildcard tadsweep/detections/_*.cpp tadsweep/detections/_*.h)
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	touch $@

# Upstream OpenTAD's stack on CPU, for the tests that run its code (envs/opentad-cpu*.txt).
setup-opentad: $(VENV)/.opentad-cpu

$(VENV)/.opentad-cpu: $(VENV)/.installed envs/opentad-cpu.txt envs/opentad-cpu-nodeps.txt
	$(PY) -m pip install -q -r envs/opentad-cpu.txt
	$(PY) -m pip install -q --no-deps -r envs/opentad-cpu-nodeps.txt
	touch $@

# Clone the pinned OpenTAD into build/OpenTAD (needs GitHub).
opentad:
	test -f build/OpenTAD/tools/train.py || { \
	  git clone -q https://github.com/sming256/OpenTAD.git build/OpenTAD && \
	  git -C build/OpenTAD checkout -q $(OPENTAD_COMMIT); }

opentad-root:
	@test -f "$(OPENTAD_ROOT)/tools/train.py" || { echo "no OpenTAD checkout at \
	'$(OPENTAD_ROOT)': set OPENTAD_ROOT=/path/to/OpenTAD (commit 3dd7b03), or run 'make opentad'"; \
	exit 2; }

# Snakemake reads a --configfile itself before the workflow runs (a binary file, a directory or
# deep YAML: a traceback; a FIFO or /dev/zero: no end): tadsweep.plan.check_config reads it first,
# one line for any problem (docs/refusals.md).
# A Snakemake killed outright (SIGKILL, the OOM killer) leaves its lock in .snakemake/locks/, on
# which the next run would stop: tadsweep.site.unlock clears it first when no Snakemake of this
# checkout is alive, and says so. The rerun continues where the killed one stopped
# (tests/test_crash_resume.py kills it at random points, with DEMO and DEMO_REPORT set to a
# small study in a temporary folder; docs/operations.md).
DEMO_REPORT := results/demo/report.html
demo: setup
	@start=$$(date +%s); \
	$(PY) -m tadsweep.plan.check_config -- $(DEMO) && \
	$(PY) -m tadsweep.site.unlock -- $(DEMO) && \
	snakemake $(DEMO) --cores 2 --rerun-incomplete && \
	snakemake $(DEMO) --report $(DEMO_REPORT) && \
	echo "demo finished in $$(( $$(date +%s) - start )) s; report: $(DEMO_REPORT)"

# Two workers (tests/conftest.py keeps a module, and all SLURM tests, on one worker): much of
# the suite waits on subprocesses and the scheduler. The slowest tests are listed at the end.
PYTEST := $(PY) -m pytest -q -n 2 --dist loadscope --no-loadscope-reorder --durations=25

test: setup setup-opentad opentad-root container-check
	$(PYTEST)

# The inner loop: lint and the fast tests (no SLURM, upstream OpenTAD, whole workflows or browser).
# lint-imports: folders import downward only (pyproject.toml's layers).
check: setup
	$(PY) -m tadsweep.plan.schema --check
	lint-imports --no-logo
	$(PYTEST) -m "not (slurm or opentad or e2e or browser)"

# Only the tests that run upstream OpenTAD code (real tools/train.py and tools/test.py on CPU).
test-opentad: setup setup-opentad opentad-root
	$(PYTEST) -m "opentad and not slurm"

bench: setup
	$(PY) benchmarks/bench_doctor.py
	$(PY) benchmarks/bench_postprocess.py
	$(PY) benchmarks/bench_commands.py
	$(PY) benchmarks/bench_dryrun.py
	$(PY) benchmarks/bench_plan.py

# The plan of the real study; an apptainer test double stands in where Apptainer is not installed.
plan: setup
	$(PY) -m tadsweep.plan config.yaml
	PATH="$$PATH:$(CURDIR)/tests/doubles/bin" snakemake -n --profile slurm --quiet rules

# The baseline doctor on a study's files, before any GPU job (docs/doctor.md): make doctor
# [CONFIG=configs/demo.yaml]. On the host, upstream's stack from setup-opentad reads the checkpoint.
CONFIG ?= config.yaml
doctor: setup setup-opentad
	$(PY) -m tadsweep.plan.check_config $(CONFIG)
	snakemake --configfile $(CONFIG) --cores 2 --until doctor

# Progress of a running study: make status STUDY=results/thumos14_adatad_lora
STUDY ?= results/demo
status: setup
	$(PY) -m tadsweep.report.status $(STUDY)

lint: setup
	lint-imports --no-logo
	snakemake --lint
	snakefmt --check Snakefile rules
	ruff check .
	ruff format --check .

format: setup
	snakefmt Snakefile rules
	ruff format .

# After adding or changing an axis (tadsweep/plan/axes): regenerate its config schema sections.
schema: setup
	$(PY) -m tadsweep.plan.schema --write

container:
	apptainer build containers/opentad.sif containers/opentad.def

# uv locks the image's whole Python stack again (PyPI, CPython 3.10, manylinux_2_35 x86_64): a
# conflict, or a result that differs from containers/opentad.lock.txt, fails with one line; so
# does a .def rule or an OpenTAD requirement the lock misses (containers/README.md).
container-check: setup opentad-root
	$(PY) -m tadsweep.site.container check --opentad-root "$(OPENTAD_ROOT)"

# After editing containers/opentad.in or the .def's torch/mmcv pins: relock, keeping the locked
# versions uv still accepts (ARGS=--upgrade: today's versions of everything unpinned).
container-lock: setup
	$(PY) -m tadsweep.site.container lock $(ARGS)

# On a GPU node, inside the image (its python, not the host's venv):
#   apptainer exec --nv containers/opentad.sif make gpu-check
gpu-check:
	PATH="$(HOST_PATH)" python3 scripts/gpu_check.py $(ARGS)
