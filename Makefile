# Two entry points (see README): `make demo` runs metro, `make test` runs the tests.
# Both create .venv on first use; the demo installs only what metro needs, the tests
# add their tools.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# setuptools explains editable installs at length on every install; the lines say nothing new.
PIP := PYTHONWARNINGS=ignore::UserWarning $(BIN)/pip --quiet --disable-pip-version-check

.PHONY: demo test lint bench clean

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

test: $(VENV)/.metro-test
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(VENV)/.metro-test
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(VENV)/.metro
	$(BIN)/python -m metro.bench

clean:
	-$(BIN)/metro kafka stop
	-$(BIN)/metro db stop
	rm -rf $(VENV) .metro .metro-test
