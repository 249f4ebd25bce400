# fieldlink: `make demo` runs everything on embedded defaults, `make test` runs the whole suite.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# System packages the tests start for real.
APT_PACKAGES := mosquitto mosquitto-clients postgresql openssh-client chromium tinyproxy
# The web console's front-end packages (npm, pinned in package-lock.json), copied into its static files.
WEB_FRONTEND := server/web/frontend
VENDOR := server/web/static/vendor
VENDOR_STAMP := $(VENDOR)/.installed

.PHONY: demo test lint typecheck unit integration bench system-deps clean migration web-assets

$(BIN)/python:
	$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ is required" >&2; exit 1; }
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(BIN)/python $(VENDOR_STAMP)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

web-assets: $(VENDOR_STAMP)

$(VENDOR_STAMP): $(WEB_FRONTEND)/package.json $(WEB_FRONTEND)/package-lock.json
	@command -v npm >/dev/null || { echo "npm is required for the web console's assets (apt-get install npm)" >&2; exit 1; }
	cd $(WEB_FRONTEND) && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	rm -rf $(VENDOR) && mkdir -p $(VENDOR)/licenses
	cd $(WEB_FRONTEND)/node_modules && cp @xterm/xterm/lib/xterm.js @xterm/xterm/css/xterm.css \
	  @xterm/addon-fit/lib/addon-fit.js uplot/dist/uPlot.iife.min.js uplot/dist/uPlot.min.css \
	  asciinema-player/dist/bundle/asciinema-player.min.js asciinema-player/dist/bundle/asciinema-player.css \
	  $(CURDIR)/$(VENDOR)/
	for p in @xterm/xterm @xterm/addon-fit uplot asciinema-player; do \
	  cp $(WEB_FRONTEND)/node_modules/$$p/LICENSE* $(VENDOR)/licenses/$$(basename $$p).txt; done
	touch $@

# Installs through apt whatever the tests need and the machine lacks.
system-deps:
	@missing=""; \
	command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v mosquitto_pub >/dev/null || missing="$$missing mosquitto-clients"; \
	ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	command -v ssh >/dev/null || missing="$$missing openssh-client"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v tinyproxy >/dev/null || [ -x /usr/bin/tinyproxy ] || missing="$$missing tinyproxy"; \
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

test: $(STAMP) system-deps lint
	$(BIN)/pytest -p no:cacheprovider

unit: $(STAMP)
	$(BIN)/pytest -p no:cacheprovider tests/unit

bench: $(STAMP) system-deps
	@command -v sshd >/dev/null || [ -x /usr/sbin/sshd ] || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends openssh-server >/dev/null; }
	$(BIN)/python -m bench.run_all

migration: $(STAMP)
	@test -n "$(MSG)" -a -n "$(REV)" || { echo "usage: make migration MSG=what REV=0002" >&2; exit 1; }
	$(BIN)/python -m server.migrations.autogen "$(MSG)" "$(REV)"

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache tests/artifacts
