# fieldlink: `make demo` runs everything on embedded defaults, `make test` runs the whole suite
# (tests/unit in process, then tests/integration and tests/browser with real services).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# System packages the tests start for real (and the fonts Chromium draws Japanese and Chinese with).
APT_PACKAGES := mosquitto mosquitto-clients postgresql openssh-client chromium tinyproxy python3-venv \
	smartmontools fonts-noto-cjk
# The web console's front-end packages (npm, pinned in package-lock.json), copied into its static files.
WEB_FRONTEND := server/web/frontend
VENDOR := server/web/static/vendor
VENDOR_STAMP := $(VENDOR)/.installed

.PHONY: demo test lint typecheck unit integration bench system-deps clean migration web-assets lock upgrade-deps dist translations screenshots

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is required" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

# Installs exactly the lock (hashes checked), then the project itself without resolving again.
$(STAMP): pyproject.toml requirements-dev.txt | $(BIN)/python $(VENDOR_STAMP)
	$(BIN)/pip install --quiet --disable-pip-version-check --require-hashes --no-deps -r requirements-dev.txt
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps -e .
	$(BIN)/pip check --disable-pip-version-check >/dev/null
	touch $@

# The lock: every dependency pinned with hashes, compiled from the ranges in pyproject.toml.
# requirements-server.txt, -agent.txt and -client.txt are the same versions, for a site's install.
UV_COMPILE = $(BIN)/uv pip compile pyproject.toml --quiet --generate-hashes --universal \
	--python-version 3.11 --custom-compile-command 'make lock'

lock: $(STAMP)
	$(UV_COMPILE) $(UPGRADE) --extra dev -o requirements-dev.txt
	$(UV_COMPILE) --extra server -c requirements-dev.txt -o requirements-server.txt
	$(UV_COMPILE) --extra agent -c requirements-dev.txt -o requirements-agent.txt
	$(UV_COMPILE) --extra client -c requirements-dev.txt -o requirements-client.txt

# Refreshes the lock to the newest releases the ranges allow, reinstalls, and runs the suite.
upgrade-deps: $(STAMP)
	$(MAKE) --no-print-directory lock UPGRADE=--upgrade
	rm -f $(STAMP)
	$(MAKE) --no-print-directory test

web-assets: $(VENDOR_STAMP)

$(VENDOR_STAMP): $(WEB_FRONTEND)/package.json $(WEB_FRONTEND)/package-lock.json
	@command -v npm >/dev/null || { echo "npm is required for the web console's assets (apt-get install npm)" >&2; exit 1; }
	cd $(WEB_FRONTEND) && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	rm -rf $(VENDOR) && mkdir -p $(VENDOR)/licenses
	cd $(WEB_FRONTEND)/node_modules && cp @xterm/xterm/lib/xterm.js @xterm/xterm/css/xterm.css \
	  @xterm/addon-fit/lib/addon-fit.js uplot/dist/uPlot.iife.min.js uplot/dist/uPlot.min.css \
	  asciinema-player/dist/bundle/asciinema-player.min.js asciinema-player/dist/bundle/asciinema-player.css \
	  swagger-ui-dist/swagger-ui-bundle.js swagger-ui-dist/swagger-ui.css swagger-ui-dist/favicon-32x32.png \
	  swagger-ui-dist/oauth2-redirect.html redoc/bundles/redoc.standalone.js \
	  $(CURDIR)/$(VENDOR)/
	for p in @xterm/xterm @xterm/addon-fit uplot asciinema-player swagger-ui-dist redoc; do \
	  cp $(WEB_FRONTEND)/node_modules/$$p/LICENSE* $(VENDOR)/licenses/$$(basename $$p).txt; done
	touch $@

# An sdist and a wheel in dist/ that carry the console's front-end files.
dist: $(STAMP) $(VENDOR_STAMP)
	rm -rf dist build
	$(BIN)/python -m build --outdir dist . >/dev/null
	$(BIN)/python -m zipfile -l dist/*.whl | grep -q 'server/web/static/vendor/xterm.js' \
	  || { echo "the wheel lacks the console's assets" >&2; exit 1; }
	@ls -1 dist

# Installs through apt whatever the tests need and the machine lacks.
system-deps:
	@missing=""; \
	command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v mosquitto_pub >/dev/null || missing="$$missing mosquitto-clients"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v ssh >/dev/null || missing="$$missing openssh-client"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v tinyproxy >/dev/null || [ -x /usr/bin/tinyproxy ] || missing="$$missing tinyproxy"; \
	/usr/bin/python3 -c 'import ensurepip' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	command -v smartctl >/dev/null || [ -x /usr/sbin/smartctl ] || missing="$$missing smartmontools"; \
	dpkg -s fonts-noto-cjk >/dev/null 2>&1 || fc-list 2>/dev/null | grep -qi 'noto.*cjk' || missing="$$missing fonts-noto-cjk"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

demo: $(STAMP)
	@command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || $(MAKE) --no-print-directory system-deps
	$(BIN)/fieldlink demo

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy agent server shared provisioning

# The suite in two runs under pytest-xdist (docs/testing.md): the in-process unit tests on every
# core, then the tests that start real services on two workers (3 or 4 measured slower on 2
# cores), a module per worker (--dist loadfile: a module's fixtures start once), the slow
# modules first (tests/conftest.py orders them; xdist's own reorder by test count is off). Both
# runs always run; `make test` fails if either did. The 25 slowest tests of each run are listed.
PYTEST := $(BIN)/pytest -p no:cacheprovider --durations=25
UNIT_WORKERS ?= auto
INTEGRATION_WORKERS ?= 2
INTEGRATION_DIST := --dist loadfile --no-loadscope-reorder

test: $(STAMP) system-deps lint
	@status=0; \
	$(PYTEST) -n $(UNIT_WORKERS) tests/unit || status=1; \
	$(PYTEST) -n $(INTEGRATION_WORKERS) $(INTEGRATION_DIST) tests/integration tests/browser || status=1; \
	exit $$status

unit: $(STAMP)
	$(PYTEST) -n $(UNIT_WORKERS) tests/unit

integration: $(STAMP) system-deps
	$(PYTEST) -n $(INTEGRATION_WORKERS) $(INTEGRATION_DIST) tests/integration tests/browser

# The README's console screenshots (docs/screenshots/): a seeded demo in English and Japanese.
screenshots: $(STAMP) system-deps
	$(BIN)/python -m tests.browser.screenshots

bench: $(STAMP) system-deps
	@command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends openssh-server >/dev/null; }
	@command -v snmpbulkwalk >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends snmp >/dev/null; }
	$(BIN)/python -m bench.run_all

migration: $(STAMP)
	@test -n "$(MSG)" -a -n "$(REV)" || { echo "usage: make migration MSG=what REV=0002" >&2; exit 1; }
	$(BIN)/python -m server.migrations.autogen "$(MSG)" "$(REV)"

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache tests/artifacts

# The gettext catalogs: the console's (domain "messages", server/web/locale) and the survey
# page's and e-mail's (domain "survey", server/surveys/locale). Extract the texts, merge them
# into each language's .po, compile the .mo files the wheel carries.
WEB_LOCALE := server/web/locale
SURVEY_LOCALE := server/surveys/locale
CLI_LOCALE := shared/locale
translations: $(STAMP)
	$(BIN)/pybabel extract -F server/web/babel.cfg -k N_ --no-location --sort-output -o $(WEB_LOCALE)/messages.pot .
	$(BIN)/pybabel update -i $(WEB_LOCALE)/messages.pot -d $(WEB_LOCALE) --no-fuzzy-matching --width 100
	$(BIN)/pybabel compile -d $(WEB_LOCALE) --statistics
	$(BIN)/pybabel extract -F server/web/babel_js.cfg -k fl.t -k fl.tn:1,2 --no-location --sort-output -o $(WEB_LOCALE)/console_js.pot .
	$(BIN)/pybabel update -D console_js -i $(WEB_LOCALE)/console_js.pot -d $(WEB_LOCALE) --no-fuzzy-matching --width 100
	$(BIN)/pybabel compile -D console_js -d $(WEB_LOCALE) --statistics
	$(BIN)/pybabel extract -F server/surveys/babel.cfg -k gettext:2 --no-location -o $(SURVEY_LOCALE)/survey.pot .
	$(BIN)/pybabel update -D survey -i $(SURVEY_LOCALE)/survey.pot -d $(SURVEY_LOCALE) --no-fuzzy-matching
	$(BIN)/pybabel compile -D survey -d $(SURVEY_LOCALE) --statistics
	$(BIN)/pybabel extract -F shared/babel.cfg -k tr -k tr_n:1,2 --no-location --sort-output -o $(CLI_LOCALE)/cli.pot .
	$(BIN)/pybabel update -D cli -i $(CLI_LOCALE)/cli.pot -d $(CLI_LOCALE) --no-fuzzy-matching --width 100
	$(BIN)/pybabel compile -D cli -d $(CLI_LOCALE) --statistics
