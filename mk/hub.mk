# A workshop server: JupyterHub serving the course from this checkout's environment, one folder of working
# copies per participant, a shared password (scripts/hub/jupyterhub_config.py, docs/workshop.md).
#
#   make hub HUB_PASSWORD=...   start it on http://127.0.0.1:8000 (Ctrl-C stops it and every user's server)
#   make test-hub               two users in headless Chromium: separate copies, notebooks/ untouched
#
# Variables (passed to the config as environment variables; docs/workshop.md):
#   HUB_PASSWORD   the shared password (8+ characters; required by make hub)
#   HUB_ADMIN, HUB_ADMIN_PASSWORD   an optional admin (the instructor) and its password (32+ characters)
#   HUB_DIR        state and users' working copies (default hub/, ignored by git; make clean keeps it)
#   HUB_SOURCE     the notebooks copied to each user (default notebooks/; build/student after make student)
#   HUB_IP, HUB_PORT  where participants connect (default 127.0.0.1 and 8000; HUB_IP=0.0.0.0 for a network)
#   HUB_THREADS    CPU threads per user's kernel (default 1)
#   HUB_MAX_USERS  servers running at once (default 0: no limit; docs/workshop.md gives the measured sizes)

HUB_DIR ?= hub
HUB_SOURCE ?= notebooks
HUB_IP ?= 127.0.0.1
HUB_PORT ?= 8000
HUB_THREADS ?= 1
HUB_MAX_USERS ?= 0
HUB_PASSWORD ?=
HUB_ADMIN ?=
HUB_ADMIN_PASSWORD ?=
HUB_STAMP := $(VENV)/.pruning-course-hub-installed
# configurable-http-proxy, pinned by scripts/hub/package-lock.json, installed with npm ci into build/hub/node/.
HUB_NODE := build/hub/node
HUB_PROXY := $(HUB_NODE)/node_modules/.bin/configurable-http-proxy

.PHONY: hub test-hub

help::
	@echo "make hub HUB_PASSWORD=...   a JupyterHub for a workshop on http://$(HUB_IP):$(HUB_PORT) (docs/workshop.md)"
	@echo "make test-hub     the hub in headless Chromium: two users, separate working copies (a few minutes)"

$(HUB_STAMP): $(STAMP)
	$(PIP_INSTALL) $(PIP_FROM_WHEELHOUSE) -e ".[test,hub]" -c constraints.txt
	@touch $@

$(HUB_PROXY): scripts/hub/package.json scripts/hub/package-lock.json
	@command -v npm >/dev/null || { echo "make hub needs npm (Node.js 20 or newer) for configurable-http-proxy: apt-get install npm"; exit 1; }
	@mkdir -p $(HUB_NODE)
	cp scripts/hub/package.json scripts/hub/package-lock.json $(HUB_NODE)/
	cd $(HUB_NODE) && npm ci --omit=dev --no-audit --no-fund --loglevel=error
	@touch $@

hub: setup $(HUB_STAMP) $(HUB_PROXY)
	@test -n "$(HUB_PASSWORD)" || { echo "usage: make hub HUB_PASSWORD=<the shared password, 8+ characters> (docs/workshop.md)"; exit 2; }
	@echo "JupyterHub on http://$(HUB_IP):$(HUB_PORT)/ : any user name (lower-case letters, digits, - _) and the shared password; Ctrl-C stops it"
	HUB_DIR="$(HUB_DIR)" HUB_SOURCE="$(HUB_SOURCE)" HUB_IP="$(HUB_IP)" HUB_PORT="$(HUB_PORT)" \
	  HUB_THREADS="$(HUB_THREADS)" HUB_MAX_USERS="$(HUB_MAX_USERS)" HUB_PASSWORD="$(HUB_PASSWORD)" \
	  HUB_ADMIN="$(HUB_ADMIN)" HUB_ADMIN_PASSWORD="$(HUB_ADMIN_PASSWORD)" HUB_PROXY="$(HUB_PROXY)" \
	  $(PY) -m jupyterhub -f scripts/hub/jupyterhub_config.py

# Chromium as for make test-browser (site.mk installs it as root when missing).
test-hub: data $(BROWSER_STAMP) $(HUB_STAMP) $(HUB_PROXY)
	@$(call ensure-chromium,test-hub)
	CHROMIUM="$(or $(CHROMIUM),$$(command -v chromium))" OMP_NUM_THREADS=1 HUB_PROXY="$(CURDIR)/$(HUB_PROXY)" \
	  $(PY) -m pytest -p no:cacheprovider tests_browser/test_hub.py $(PYTEST_ARGS)
