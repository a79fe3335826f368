# Two commands on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ggr-kv-installed
# The CPU engine of vLLM: 128-token blocks, a small KV cache, no usage reporting, offline.
export VLLM_CPU_KVCACHE_SPACE ?= 2
export VLLM_NO_USAGE_STATS := 1
export DO_NOT_TRACK := 1
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install test test-fast demo bench lab clean-venv

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[cpu,test]"
	# PyPI builds of these break `import vllm` beside torch 2.13.0+cpu; vLLM does not need them
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec || true
	$(PY) -c "import vllm, ggr_kv; print('vllm', vllm.__version__)"
	touch $(STAMP)

install: $(STAMP)

test: install
	$(PY) -m pytest -q tests notebooks --nbval-lax -p no:cacheprovider

test-fast: install
	$(PY) -m pytest -q tests -m "not vllm" -p no:cacheprovider

demo: install
	$(PY) -m ggr_kv demo

bench: install
	$(PY) benchmarks/bench_reorder.py

lab: install
	$(VENV)/bin/jupyter lab notebooks/

clean-venv:
	rm -rf $(VENV)
