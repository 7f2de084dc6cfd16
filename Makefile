# TinyTorch: the one entry point. Every target that needs Python builds the local
# virtualenv first (from nothing but python3 >= 3.10) and does not reinstall when
# settings.ini and setup.py are unchanged.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help
.PHONY: help install export test milestone-status docs bench cifar serve serve-bench clean

help: ## list the targets
	@echo "TinyTorch make targets:"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/:.*## /\t/' | awk -F'\t' '{printf "  make %-18s %s\n", $$1, $$2}'

$(STAMP): settings.ini setup.py
	@$(PYTHON) -c 'import sys; v=sys.version_info; sys.exit(0 if v >= (3,10) else "TinyTorch needs Python 3.10 or newer; found %d.%d" % v[:2])'
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing TinyTorch and its pinned toolchain into $(VENV) ..."
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -m pip install -q -e ".[dev,images,serve]"
	@$(BIN)/python -m pip check
	@touch $(STAMP)

install: $(STAMP) ## create .venv and install tinytorch, tito and the nbdev toolchain

export: $(STAMP) ## export the notebooks in nbs/ into the tinytorch/ package
	$(BIN)/nbdev_export

test: $(STAMP) ## check notebooks are clean and exported, run nbdev_test and pytest, print a summary
	@$(BIN)/python -m milestones.testrun

milestone-status: $(STAMP) ## test modules (cached), print milestone status, write progress.md and timeline.svg
	@$(BIN)/tito milestone status --write-docs

docs: $(STAMP) ## build the docs site into _docs/, offline: every notebook run once, then Quarto (nbdev_docs) if installed, else nbconvert
	@$(BIN)/tito docs build

bench: $(STAMP) ## time TinyTorch against PyTorch CPU (installs torch into .venv when it can)
	@$(BIN)/python -c 'import torch' 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0 || echo "torch not installable: printing TinyTorch times only"
	@$(BIN)/python tests/bench.py

cifar: $(STAMP) ## train a ResNet-9-style CNN on CIFAR-10 (50,000 images), report test accuracy, wall time, curve, PyTorch ratio
	@$(BIN)/python tests/cifar.py

serve: $(STAMP) ## serve the model on http://127.0.0.1:8000 (first start trains and registers it; PORT=, WORKERS=)
	@$(BIN)/tito serve --port $(or $(PORT),8000) --workers $(or $(WORKERS),1)

serve-bench: $(STAMP) ## load-test the server on loopback: 1/8/32 clients, batching on/off, TinyTorch vs PyTorch
	@$(BIN)/python -c 'import torch' 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0 || echo "torch not installable: benchmarking TinyTorch only"
	@$(BIN)/python tests/serve_bench.py

clean: ## remove the virtualenv, caches and built docs (keeps nbs/, tinytorch/, and your unlocks and saved notebooks in .tito/)
	rm -rf $(VENV) .tito/cache .tito/system_report.json _docs .pytest_cache .hypothesis *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
