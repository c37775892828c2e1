# The two commands a new user needs: `make quickstart` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
OUT    ?= runs/quickstart
export HF_HUB_OFFLINE := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: quickstart test test-fast benchmarks clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# One stamp per extras set, so `make test` after `make quickstart` only adds the test extras.
$(VENV)/.installed-core: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -q -c constraints.txt -e .
	touch $@

$(VENV)/.installed-test: $(BIN)/python pyproject.toml constraints.txt
	$(BIN)/pip install -q -c constraints.txt -e ".[test]"
	touch $@ $(VENV)/.installed-core

quickstart: $(VENV)/.installed-core
	$(BIN)/splitbench quickstart --out $(OUT)

test: $(VENV)/.installed-test
	$(BIN)/ruff check splitbench tests benchmarks
	$(BIN)/python -m pytest -q

# The quick pass while developing: everything but the tests that train a model (marked slow).
test-fast: $(VENV)/.installed-test
	$(BIN)/ruff check splitbench tests benchmarks
	$(BIN)/python -m pytest -q -m "not slow"

benchmarks: $(VENV)/.installed-test
	for f in benchmarks/*.py; do echo "== $$f"; $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) runs .pytest_cache
