# The two commands of the README: `make demo` (the main job) and `make test` (every check CI runs).
# Both create the virtual environment .venv when there is none: `make demo` installs the library, `make test` adds the dev extra.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
LIB_STAMP := $(VENV)/.installed-lib
DEV_STAMP := $(VENV)/.installed-dev
ARTIFACTS ?= artifacts

.PHONY: help venv lib torch browser export readme nbtest docs pytest lint test demo clean
help:
	@echo "make demo  - set up .venv with the library and run the demo of the shipped models: outputs/index.html"
	@echo "make test  - set up .venv with the dev tools, check line lengths, run every notebook, the export check, pytest tests/ and the docs browser check"
	@echo "make docs  - build the docs site in _docs/ (Quarto when on PATH, else the offline builder)"

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 10), "Python 3.10 or newer is needed, this is " + sys.version'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# torch goes in first: with a GPU the default (CUDA) build; without one a CPU build, taken from a
# local wheel when pip's find-links has one, else from the PyTorch CPU index (no multi-GB CUDA download).
torch: | $(BIN)/python
	@if $(BIN)/python -c 'import torch' 2>/dev/null; then echo "torch $$($(BIN)/python -c 'import torch; print(torch.__version__)') already installed"; \
	elif command -v nvidia-smi >/dev/null 2>&1; then $(BIN)/pip install -q 'torch>=2.4'; \
	elif $(BIN)/pip install -q --no-index --no-deps 'torch>=2.4' 2>/dev/null; then \
	  $(BIN)/pip install -q "torch==$$($(BIN)/pip show torch | sed -n 's/^Version: //p')"; \
	else $(BIN)/pip install -q 'torch>=2.4' --index-url https://download.pytorch.org/whl/cpu --extra-index-url https://pypi.org/simple; fi

# The library alone (what `make demo` needs), or with the dev extra (Triton, JupyterLab, nbdev, the docs and test tools).
$(LIB_STAMP): settings.ini setup.py | $(BIN)/python
	$(MAKE) --no-print-directory torch
	$(BIN)/pip install -q -e .
	touch $@

$(DEV_STAMP): settings.ini setup.py | $(BIN)/python
	$(MAKE) --no-print-directory torch
	$(BIN)/pip install -q -e '.[dev]'
	touch $@ $(LIB_STAMP)

lib: $(LIB_STAMP)
venv: $(DEV_STAMP)

# The docs check drives the distribution's Chromium (no browser download).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  echo "installing chromium from the distribution's packages"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

export: venv
	$(BIN)/nbdev_export

nbtest: venv
	OMP_NUM_THREADS=1 $(BIN)/nbdev_test --n_workers 2 --timing

docs: venv
	$(BIN)/python tools/build_docs.py

# nbs/index.ipynb is the docs site's home page (links relative to nbs/) and the README (links relative to the
# repository root): the README's page links get the nbs/ prefix. setup.py makes them absolute for the package index.
readme: venv
	$(BIN)/jupyter nbconvert --log-level WARN --to markdown nbs/index.ipynb --output-dir . --output README
	$(BIN)/python -c "import re, pathlib; p = pathlib.Path('README.md'); p.write_text(re.sub(r'(?<!!)\[([^]]*)\]\((?![a-z][a-z0-9+.-]*:|[#/])', r'[\1](nbs/', p.read_text(encoding='utf-8')), encoding='utf-8')"

pytest: venv
	$(BIN)/python -m pytest tests -q -rs --durations=10

# No library line over 140 characters (ruff.toml); the modules come from the notebooks, so fix a long line there.
lint: venv
	$(BIN)/ruff check renderdiffusion_nb

test: venv browser
	@start=$$(date +%s); status=0; \
	$(MAKE) --no-print-directory lint && $(MAKE) --no-print-directory nbtest && $(MAKE) --no-print-directory docs && $(MAKE) --no-print-directory pytest || status=$$?; \
	echo "make test took $$(( $$(date +%s) - start )) s"; exit $$status

demo: lib
	@start=$$(date +%s); \
	$(BIN)/rd-demo --out outputs; \
	echo "make demo took $$(( $$(date +%s) - start )) s: open outputs/index.html (the docs site: make docs)"

clean:
	rm -rf _proc _docs $(ARTIFACTS) .pytest_cache
