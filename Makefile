# Two entry points on a fresh machine with Python >= 3.11 and pip:
#   make demo   installs, then runs the whole pipeline on the embedded demo catalog
#   make test   installs, then runs the test suite
# and `make docs` builds the documentation site into build/site (warnings are errors).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: install demo test docs clean

$(BIN)/eocube: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[test]"
	touch $(BIN)/eocube

install: $(BIN)/eocube

# Released Presto weights: ../shared/models (this workplace) or the cache (~/.cache/eocube/weights/presto/).
SHARED_MODELS := $(wildcard ../shared/models)

demo: install
	$(if $(and $(SHARED_MODELS),$(if $(EOCUBE_WEIGHTS_DIR),,1)),EOCUBE_WEIGHTS_DIR=$(abspath $(SHARED_MODELS)) ,)$(BIN)/eocube demo --out eocube-demo

test: install
	$(BIN)/python -m pytest -q

docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir build/site

clean:
	rm -rf $(VENV) eocube-demo .pytest_cache build/site
