# Two entry points (see README): `make demo` runs metro, `make test` runs the tests.
# Both create .venv and install the project into it on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: demo test lint bench clean

$(BIN)/metro: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

demo: $(BIN)/metro
	$(BIN)/metro demo

test: $(BIN)/metro
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/pytest

lint: $(BIN)/metro
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(BIN)/metro
	$(BIN)/python -m bench

clean:
	-$(BIN)/metro kafka stop
	-$(BIN)/metro db stop
	rm -rf $(VENV) .metro .metro-test
