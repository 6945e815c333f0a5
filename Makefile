# The two set-up commands: `make demo` and `make test`. Each creates .venv and installs what it needs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch/torchvision pinned to the pair this project is tested with (installed first, so that pip
# does not pick another build while resolving the project's ranges).
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO_OUTPUT ?= demo_output

.PHONY: demo demo-fewshot demo-generalization demo-supervised test lint env clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

env: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) -m clip_convpass demo --output $(DEMO_OUTPUT)

demo-fewshot: $(VENV)/.installed
	$(PY) -m clip_convpass demo --fewshot --output $(DEMO_OUTPUT)_fewshot

demo-generalization: $(VENV)/.installed
	$(PY) -m clip_convpass demo --generalization --output $(DEMO_OUTPUT)_generalization

demo-supervised: $(VENV)/.installed
	$(PY) -m clip_convpass demo --supervised --output $(DEMO_OUTPUT)_supervised

test: $(VENV)/.installed
	$(PY) -m pytest -q

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(DEMO_OUTPUT) $(DEMO_OUTPUT)_fewshot $(DEMO_OUTPUT)_generalization $(DEMO_OUTPUT)_supervised
