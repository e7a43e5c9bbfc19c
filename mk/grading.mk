# Graded assignments with otter-grader (docs/instructors.md): the student edition, the autograders,
# offline grading into a grade sheet, and the CI check of both editions.
#
#   make student                      build/student/*.ipynb (to hand out) and build/autograder/*.zip
#   make grade SUBMISSIONS=folder     grade folder/<student>/<notebook>.ipynb -> build/grades.csv
#              [JOBS=N]               N notebooks at a time, threads per job = cores // N (default 1)
#              [GRADE_TIMEOUT=S]      seconds one notebook may take, then it is stopped and noted (default 900)
#   make test-grading                 masters score full marks, the blank student edition zero (minutes)

SUBMISSIONS ?=
JOBS ?= 1
GRADE_TIMEOUT ?= 900
GRADE_STAMP := $(VENV)/.pruning-course-grade-installed
GRADING := $(PY) scripts/grading/grading.py
AUTOGRADER_INDEX := build/autograder/questions.json

.PHONY: student grade test-grading

help::
	@echo "make student set up (with otter-grader), then write the student edition to build/student/ and the autograders to build/autograder/"
	@echo "make grade SUBMISSIONS=folder   grade folder/<student>/<notebook>.ipynb offline (otter run) into build/grades.csv"
	@echo "           [JOBS=N]               N at a time (one process, folder and cores//N threads each; default 1)"
	@echo "           [GRADE_TIMEOUT=S]      stop a notebook after S seconds and note it in the sheet (default 900)"
	@echo "make test-grading   check the graded notebooks: masters score full marks, the blank student edition zero (minutes; NOTEBOOKS=... for some)"

$(GRADE_STAMP): $(STAMP)
	$(PIP_INSTALL) $(PIP_FROM_WHEELHOUSE) -e ".[test,grade]" -c constraints.txt
	@touch $@

# Rebuilt whenever a master notebook or the script changes; the index is written last, so a failed
# run is redone.
$(AUTOGRADER_INDEX): $(NOTEBOOKS) scripts/grading/grading.py | $(GRADE_STAMP)
	$(GRADING) assign $(NOTEBOOKS)

student: setup $(GRADE_STAMP) $(AUTOGRADER_INDEX)
	@echo "student edition: build/student/ (hand these out); autograders: build/autograder/"

grade: setup $(GRADE_STAMP) $(AUTOGRADER_INDEX)
	@test -n "$(SUBMISSIONS)" || { echo "usage: make grade SUBMISSIONS=folder, with folder/<student>/<notebook>.ipynb (docs/instructors.md)"; exit 2; }
	$(GRADING) grade "$(SUBMISSIONS)" --jobs "$(JOBS)" --timeout "$(GRADE_TIMEOUT)"

# One notebook only: make test-grading NOTEBOOKS=notebooks/01_coupled_channels.ipynb
test-grading: setup $(GRADE_STAMP)
	GRADING_NOTEBOOKS="$(NOTEBOOKS)" $(PY) -m pytest tests_grading $(PYTEST_ARGS)
