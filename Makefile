# make quickstart : set up .venv, generate the synthetic data, train + evaluate BoQ on it
# make test       : the default test suite (fast; `make test-slow` for the rest)
# make gpu-check  : on a CUDA machine, the GPU tests and speed measurements (experiments/gpu_check.sh)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
DATA_DIR ?= data

.PHONY: install quickstart data test test-slow test-all gpu-check clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

data: install
	$(VENV)/bin/vprlab synth --root $(DATA_DIR)/synthetic

quickstart: data
	$(PY) train.py experiment=quickstart paths.data_dir=$(DATA_DIR)

test: install
	$(PY) -m pytest -q

test-slow: install
	$(PY) -m pytest -q -m slow

test-all: install
	$(PY) -m pytest -q -m "not gpu"

# On a CUDA machine: the GPU tests and the GPU speed measurements (results in outputs/gpu_check/).
# Uses .venv when there is one, else python3 (a bare CUDA image: see experiments/gpu_wheels.sh).
gpu-check:
	PY=$$([ -x $(PY) ] && echo $(PY) || echo python3) bash experiments/gpu_check.sh

clean:
	rm -rf $(VENV) outputs .pytest_cache
