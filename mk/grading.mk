# Graded assignments with otter-grader (docs/instructors.md): the student edition, the autograders,
# offline grading into a grade sheet, and the CI check of both editions.
#
#   make student                      build/student/*.ipynb (to hand out) and build/autograder/*.zip
#   make grade SUBMISSIONS=folder     grade folder/<student>/<notebook>.ipynb -> build/grades.csv
#              [JOBS=N]               N notebooks at a time, threads per job = cores // N (default 1)
#              [GRADE_TIMEOUT=S]      seconds one notebook may take, then it is stopped and noted (default 900)
#   make test-grading                 masters score full marks, the blank student edition zero (minutes)
#   make test-autograder              each autograder zip grades as Gradescope runs it, in a fresh venv made
#                                     only from the zip, with make grade's scores (NOTEBOOKS=... for some)

SUBMISSIONS ?=
JOBS ?= 1
GRADE_TIMEOUT ?= 900
GRADE_STAMP := $(VENV)/.pruning-course-grade-installed
GRADING := $(PY) scripts/grading/grading.py
AUTOGRADER_INDEX := build/autograder/questions.json

# What goes into an autograder zip besides the master (scripts/grading/autograder/<notebook>.yml): the pins,
# pruning_lib, and the checkpoints, results and CIFAR-10 cache the configs name.
AUTOGRADER_INPUTS := $(wildcard scripts/grading/autograder/*.yml) constraints.txt pyproject.toml \
	$(shell find pruning_lib -name '*.py' -o -name '*.json' 2>/dev/null) \
	$(wildcard data/checkpoints/*.pt data/results/*.json data/cache/cifar10-*.pt)

.PHONY: student grade test-grading test-autograder

help::
	@echo "make student set up (with otter-grader), then write the student edition to build/student/ and the autograders to build/autograder/"
	@echo "make grade SUBMISSIONS=folder   grade folder/<student>/<notebook>.ipynb offline (otter run) into build/grades.csv"
	@echo "           [JOBS=N]               N at a time (one process, folder and cores//N threads each; default 1)"
	@echo "           [GRADE_TIMEOUT=S]      stop a notebook after S seconds and note it in the sheet (default 900)"
	@echo "make test-grading   check the graded notebooks: masters score full marks, the blank student edition zero (minutes; NOTEBOOKS=... for some)"
	@echo "make test-autograder   grade a solved and a blank submission with each autograder zip as Gradescope does, in a fresh venv"
	@echo "                       made only from the zip (cached in build/autograder-venv/); same scores as make grade (NOTEBOOKS=... for some)"

$(GRADE_STAMP): $(STAMP)
	$(PIP_INSTALL) $(PIP_FROM_WHEELHOUSE) -e ".[test,grade]" -c constraints.txt
	@touch $@

# Rebuilt whenever a master notebook, the script or something a zip carries changes; the index is written
# last, so a failed run is redone.
$(AUTOGRADER_INDEX): $(NOTEBOOKS) scripts/grading/grading.py $(AUTOGRADER_INPUTS) | $(GRADE_STAMP)
	$(GRADING) assign $(NOTEBOOKS)

student: setup $(GRADE_STAMP) $(AUTOGRADER_INDEX)
	@echo "student edition: build/student/ (hand these out); autograders: build/autograder/"

grade: setup $(GRADE_STAMP) $(AUTOGRADER_INDEX)
	@test -n "$(SUBMISSIONS)" || { echo "usage: make grade SUBMISSIONS=folder, with folder/<student>/<notebook>.ipynb (docs/instructors.md)"; exit 2; }
	$(GRADING) grade "$(SUBMISSIONS)" --jobs "$(JOBS)" --timeout "$(GRADE_TIMEOUT)"

# One notebook only: make test-grading NOTEBOOKS=notebooks/01_coupled_channels.ipynb
test-grading: setup $(GRADE_STAMP)
	GRADING_NOTEBOOKS="$(NOTEBOOKS)" $(PY) -m pytest tests_grading --ignore=tests_grading/test_autograder_zip.py $(PYTEST_ARGS)

# The zips as uploaded (docs/instructors.md, "Uploading to Gradescope"): the first run installs the zips' pinned
# environment into build/autograder-venv/<hash>/ (minutes, from pip's cache or PyPI; AUTOGRADER_VENVS=dir keeps
# it elsewhere, e.g. between CI clones), later runs reuse it. Times and peak memory of each grading:
# build/autograder-check.json.
test-autograder: setup $(GRADE_STAMP)
	GRADING_NOTEBOOKS="$(NOTEBOOKS)" $(PY) -m pytest tests_grading/test_autograder_zip.py $(PYTEST_ARGS)
