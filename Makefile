# pruning-course: `make lab` to work through the notebooks, `make test` to check everything.
#
# Variables (override on the command line, e.g. `make test VENV=/somewhere/venv`):
#   VENV          virtual environment to create/use (default .venv)
#   PYTHON        interpreter that creates it (default python3, 3.10 or newer)
#   CIFAR_SOURCE  CIFAR-10 to decode: a train|test/<class>/*.jpg folder or .tar.gz, or a
#                 cifar-10-batches-py folder (default: ../shared/data/cifar10-jpg.tar.gz if present)
#   DATA_DIR      data folder (default $PRUNING_COURSE_DATA, else data/)
#   PYTEST_ARGS   extra pytest arguments, e.g. PYTEST_ARGS="-x -k data"

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
DATA_DIR ?= $(or $(PRUNING_COURSE_DATA),data)
SHARED_CIFAR := ../shared/data/cifar10-jpg.tar.gz
CIFAR_SOURCE ?=
PYTEST_ARGS ?=
PIP_INSTALL := $(PY) -m pip install --quiet --progress-bar off --disable-pip-version-check

# Passive OpenMP waiting for the course's kernels, tests and gradings: OpenMP threads that spin while
# waiting collapse when the CPU is shared (a laptop running other work, two notebooks at once; measured
# here, a ResNet-20 batch took over 10x longer with 2 spinning threads than with 1), and passive waiting
# costs nothing measurable on an idle machine. It must be set before torch is imported, so the course's
# launchers set it (here and in the hub's spawner); the library leaves the process's OpenMP alone.
export OMP_WAIT_POLICY ?= PASSIVE

NOTEBOOKS := $(sort $(wildcard notebooks/*.ipynb))
BENCHMARKS := $(sort $(wildcard benchmarks/*.py))
NBVAL_ARGS := --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg

# The install stamp lives in the venv and records which checkout was installed (editable) into it,
# so a venv shared by several clones (CI) is re-pointed at this one; it is redone when
# pyproject.toml or constraints.txt change.
STAMP := $(VENV)/.pruning-course-installed
BENCH_STAMP := $(VENV)/.pruning-course-bench-installed
ifneq ($(shell cat $(STAMP) 2>/dev/null),$(CURDIR))
.PHONY: $(STAMP)
endif

.PHONY: help setup install data lab test test-slow test-distributed nbval course bench clean test-property
.DEFAULT_GOAL := help

# help is a double-colon rule: each mk/*.mk file adds its own lines to it.
help::
	@echo "make lab     set up (venv, packages, CIFAR-10 cache) and open the notebooks in JupyterLab"
	@echo "make test    set up, then run tests/ and check every notebook's stored outputs (nbval)"
	@echo "make test-slow     the tests marked slow: torchrun training, hifi orders of the stored grids (minutes; a CI phase)"
	@echo "make test-distributed  only the 2-process torchrun training checks"
	@echo "make nbval   set up, then check only the notebooks (NOTEBOOKS=notebooks/xx.ipynb for one)"
	@echo "make course  set up, then execute every notebook in order into build/notebooks/"
	@echo "make bench   set up, then run the scripts in benchmarks/ (installs the bench extra)"
	@echo "make setup   only the set-up: venv ($(VENV)), pinned packages, CIFAR-10 cache"
	@echo "make test-property  the random-graph property test with PROPERTY_CASES=500 cases (nightly-style)"

setup: install data

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || { echo "creating $(VENV) with $(PYTHON)"; $(PYTHON) -m venv $(VENV); }
	@echo "installing pruning-course and its pinned dependencies into $(VENV) (the first time downloads torch, several GB)"
	$(PIP_INSTALL) $(PIP_FROM_WHEELHOUSE) -e ".[test]" -c constraints.txt
	@echo "$(CURDIR)" > $@

# Idempotent: nothing is decoded when a cache exists (unless CIFAR_SOURCE names another copy). With no
# copy anywhere it downloads the pinned JPEG copy the checkpoints were trained on (GitHub, verified file
# for file); the official copy only on request: `$(PY) -m pruning_lib.data prepare --download official`.
data: install
	@if [ -n "$(CIFAR_SOURCE)" ]; then \
	  $(PY) -m pruning_lib.data prepare --data-dir "$(DATA_DIR)" --source "$(CIFAR_SOURCE)"; \
	elif ls "$(DATA_DIR)"/cache/cifar10-*.pt >/dev/null 2>&1; then \
	  echo "CIFAR-10 cache present: $$(ls "$(DATA_DIR)"/cache/cifar10-*.pt | tr '\n' ' ')"; \
	elif $(PY) -c 'import sys; from pathlib import Path; from pruning_lib.course.data import find_source; sys.exit(find_source(Path(sys.argv[1])) is None)' "$(DATA_DIR)"; then \
	  $(PY) -m pruning_lib.data prepare --data-dir "$(DATA_DIR)"; \
	elif [ -f "$(SHARED_CIFAR)" ]; then \
	  $(PY) -m pruning_lib.data prepare --data-dir "$(DATA_DIR)" --source "$(SHARED_CIFAR)"; \
	else \
	  echo "no CIFAR-10 in $(DATA_DIR) and no $(SHARED_CIFAR): downloading the pinned JPEG copy"; \
	  $(PY) -m pruning_lib.data prepare --data-dir "$(DATA_DIR)" --download jpeg; \
	fi

# Serves the learner's git-ignored working copies in $(LAB_DIR)/ (mk/site.mk: lab-copies, lab-reset),
# never notebooks/, which JupyterLab would rewrite on open and save.
# JUPYTER_PREFER_ENV_PATH: the venv's python3 kernel, not a same-named one in the user's folder.
# Jupyter refuses to run as root (containers often do) unless told: --allow-root only in that case.
lab: setup lab-copies
	JUPYTER_PREFER_ENV_PATH=1 $(VENV)/bin/jupyter lab $(LAB_DIR)/ $(if $(filter 0,$(shell id -u)),--allow-root)

# Tests marked `slow` take minutes each (the 2-process torchrun checks, recomputing hifi's order of a
# stored grid on all its calibration images, a stored repaired step re-evaluated): their own target, which CI runs as a phase.
test: setup
ifeq ($(NOTEBOOKS),)
	$(PY) -m pytest tests -m "not slow" $(PYTEST_ARGS)
else
	$(PY) -m pytest tests -m "not slow" $(NOTEBOOKS) $(NBVAL_ARGS) $(PYTEST_ARGS)
endif

test-slow: setup
	$(PY) -m pytest tests -m slow $(PYTEST_ARGS)

test-distributed: setup
	$(PY) -m pytest tests/test_train_distributed.py $(PYTEST_ARGS)

# Only the notebooks' check (all, or e.g. `make nbval NOTEBOOKS=notebooks/02_dfpc.ipynb`); naming
# tests/conftest.py loads its nbval settings (stderr not compared) without running tests/.
nbval: setup
	@test -n "$(NOTEBOOKS)" || { echo "no notebooks in notebooks/ yet"; exit 1; }
	$(PY) -m pytest tests/conftest.py $(NOTEBOOKS) $(NBVAL_ARGS) $(PYTEST_ARGS)

# Headless run of the whole course: each notebook executed in order, in its own folder (so relative
# paths behave as in JupyterLab), the executed copies written to build/notebooks/.
course: setup
	@mkdir -p build/notebooks
	@test -n "$(NOTEBOOKS)" || { echo "no notebooks in notebooks/ yet"; exit 0; }
	@set -e; for nb in $(NOTEBOOKS); do \
	  echo "executing $$nb"; start=$$(date +%s); \
	  JUPYTER_PREFER_ENV_PATH=1 $(VENV)/bin/jupyter nbconvert --to notebook --execute --ExecutePreprocessor.timeout=-1 \
	    --ExecutePreprocessor.kernel_name=python3 --output-dir build/notebooks "$$nb" --log-level WARN; \
	  echo "  done in $$(( $$(date +%s) - start )) s -> build/notebooks/$$(basename $$nb)"; \
	done

$(BENCH_STAMP): $(STAMP)
	$(PIP_INSTALL) $(PIP_FROM_WHEELHOUSE) -e ".[test,bench]" -c constraints.txt
	@touch $@

bench: setup $(BENCH_STAMP)
	@test -n "$(BENCHMARKS)" || { echo "no scripts in benchmarks/ yet"; exit 0; }
	@set -e; for f in $(BENCHMARKS); do echo "running $$f"; $(PY) "$$f"; done

# Nightly-style: the random-graph property test with many more cases than `make test` runs (about a minute).
PROPERTY_CASES ?= 500
test-property: setup
	PRUNING_PROPERTY_CASES=$(PROPERTY_CASES) $(PY) -m pytest tests/test_graph_properties.py -q $(PYTEST_ARGS)

clean:
	rm -rf build .pytest_cache

# Further targets, one file per concern (grading, the site and browser test): mk/*.mk.
include $(wildcard mk/*.mk)
