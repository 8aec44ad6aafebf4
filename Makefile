# Two entry points (see README): `make demo` runs metro, `make test` runs the tests.
# Both create .venv on first use; the demo installs only what metro needs, the tests
# add their tools.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# setuptools explains editable installs at length on every install; the lines say nothing new.
PIP := PYTHONWARNINGS=ignore::UserWarning $(BIN)/pip --quiet --disable-pip-version-check

.PHONY: demo test lint bench clean chromium

$(VENV)/.metro: pyproject.toml
	@echo "installing metro into $(VENV) ..."
	@$(PYTHON) -m venv $(VENV)
	@$(PIP) install -e .
	@touch $@

$(VENV)/.metro-test: $(VENV)/.metro
	@echo "installing the test tools into $(VENV) ..."
	@$(PIP) install -e '.[test]'
	@touch $@

demo: $(VENV)/.metro
	$(BIN)/metro demo

# The dashboard's browser test drives Debian's Chromium, never a downloaded browser.
chromium:
	@command -v chromium >/dev/null 2>&1 || \
	{ if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing Debian's chromium for the dashboard's browser test ..."; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "make test: Debian's chromium is missing and cannot be installed here (needs root and apt-get); install it with: apt-get install chromium" >&2; exit 1; fi; }

test: $(VENV)/.metro-test chromium
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest -n 2 --dist loadfile

lint: $(VENV)/.metro-test
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(VENV)/.metro
	$(BIN)/python -m metro.bench

clean:
	-$(BIN)/metro kafka stop
	-$(BIN)/metro db stop
	rm -rf $(VENV) .metro .metro-test
