# The course as a learner meets it: JupyterLab on working copies, the offline handout, a wheelhouse
# for offline workshops, and the browser test of all of it (scripts/site/, tests_browser/).
#
# Variables:
#   LAB_DIR      the learner's working copies, served by `make lab` (default work/)
#   LAB_SOURCE   the notebooks they are copied from (default notebooks/)
#   WHEELHOUSE   folder of pinned wheels; `make setup` installs from it alone when it holds any
#                (default wheelhouse/)
#   HTML_SOURCE  the executed notebooks `make html` builds the handout from (default notebooks/)
#   CHROMIUM     Chromium for `make test-browser` (default: chromium on PATH; installed with
#                apt-get when missing and run as root)

LAB_DIR ?= work
LAB_SOURCE ?= notebooks
HTML_SOURCE ?= notebooks
WHEELHOUSE ?= wheelhouse
SITE_STAMP := $(VENV)/.pruning-course-site-installed
BROWSER_STAMP := $(VENV)/.pruning-course-browser-installed
CHROMIUM ?= $(firstword $(shell command -v chromium chromium-browser 2>/dev/null))
# pip's arguments to install offline from the wheelhouse, when it holds wheels (used by install).
PIP_FROM_WHEELHOUSE = $(if $(wildcard $(WHEELHOUSE)/*.whl),--no-index --find-links $(WHEELHOUSE))

.PHONY: lab-copies lab-reset html wheelhouse test-browser

help::
	@echo "make lab-reset    fresh working copies in $(LAB_DIR)/ for make lab (yours move to $(LAB_DIR)/.previous/)"
	@echo "make html         the offline handout: build/html/index.html (needs npm the first time)"
	@echo "make wheelhouse   every pinned wheel into $(WHEELHOUSE)/; make setup then installs from it offline"
	@echo "make test-browser JupyterLab and the handout in headless Chromium (installs Chromium, playwright)"

# make lab serves $(LAB_DIR)/, never notebooks/ (the reference make test compares against): each
# notebook is copied there once; an existing copy, edited or not, is kept.
lab-copies: install
	@$(PY) scripts/site/working_copies.py sync $(LAB_SOURCE) $(LAB_DIR)

lab-reset: install
	@$(PY) scripts/site/working_copies.py reset $(LAB_SOURCE) $(LAB_DIR)

$(SITE_STAMP): $(STAMP)
	$(PIP_INSTALL) $(PIP_FROM_WHEELHOUSE) -e ".[test,site]" -c constraints.txt
	@touch $@

$(BROWSER_STAMP): $(STAMP)
	$(PIP_INSTALL) $(PIP_FROM_WHEELHOUSE) -e ".[test,site,browser]" -c constraints.txt
	@touch $@

html: install $(SITE_STAMP)
	$(PY) scripts/site/build_html.py $(HTML_SOURCE) build/html

# The wheels of every extra of pyproject.toml, for this platform and Python only (build it on a machine
# like the laptops), with the build backend that installing the course itself (-e .) needs. About 3 GB
# on Linux x86_64, mostly torch's CUDA libraries.
wheelhouse: install
	@mkdir -p $(WHEELHOUSE)
	extras=$$($(PY) scripts/site/extras.py pyproject.toml) && \
	$(PY) -m pip download --disable-pip-version-check --progress-bar off -d $(WHEELHOUSE) \
	  -c constraints.txt ".[$$extras]" "$$(grep '^setuptools==' constraints.txt)"
	@rm -f $(WHEELHOUSE)/pruning_course-*
	@echo "$(WHEELHOUSE)/: $$(ls $(WHEELHOUSE) | wc -l) files, $$(du -sh $(WHEELHOUSE) | cut -f1)"

# $(call ensure-chromium,TARGET): install Debian's chromium (as root) unless CHROMIUM names one; shared by
# test-browser and test-hub (hub.mk).
ensure-chromium = if [ -z "$(CHROMIUM)" ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing Debian's chromium"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else \
	    echo "make $(1) needs Chromium: apt-get install chromium (as root), or CHROMIUM=/path/to/it"; exit 1; \
	  fi; \
	fi

test-browser: data html $(BROWSER_STAMP)
	@$(call ensure-chromium,test-browser)
	CHROMIUM="$(or $(CHROMIUM),$$(command -v chromium))" OMP_NUM_THREADS=1 \
	  $(PY) -m pytest -p no:cacheprovider tests_browser $(PYTEST_ARGS)
