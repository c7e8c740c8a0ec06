# make quickstart : set up .venv, generate the synthetic data, train + evaluate BoQ on it
# make test       : the default test suite (fast; `make test-slow` for the rest)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_DIR ?= data

.PHONY: install quickstart data test test-slow test-all clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	touch $@

data: install
	$(PY) -m vprlab.data.synthetic --root $(DATA_DIR)/synthetic

quickstart: data
	$(PY) train.py experiment=quickstart paths.data_dir=$(DATA_DIR)

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

test-all: install
	$(PY) -m pytest -q -m "not gpu"

clean:
	rm -rf $(VENV) outputs .pytest_cache
