# flan-t5x developer commands. `make test` (no torch needed), `make test-slow` (the end-to-end runs) and
# `make test-hf` (installs the bench extra: torch + transformers, run in a child process) are what CI
# runs; `make demo` trains the tiny demo model on the built-in demo mixture.
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
HF_STAMP := $(VENV)/.installed-hf
DOCS_STAMP := $(VENV)/.installed-docs

.PHONY: test test-slow test-hf docs demo install install-hf bench-data clean

$(VPY):
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --upgrade pip

$(STAMP): $(VPY) setup.py
	$(VPY) -m pip install -e '.[test]'
	touch $(STAMP)

$(HF_STAMP): $(STAMP)
	$(VPY) -m pip install -e '.[test,bench]'
	touch $(HF_STAMP)

$(DOCS_STAMP): $(STAMP)
	$(VPY) -m pip install -e '.[test,docs]'
	touch $(DOCS_STAMP)

install: $(STAMP)

install-hf: $(HF_STAMP)

# Two workers: JAX compiles and TF pipelines are mostly single-threaded, so 2 cores halve the wall time.
TEST_WORKERS ?= 2

# The default suite: everything but the end-to-end runs marked slow (about 15 min on 2 cores).
test: $(STAMP)
	$(VPY) -m pytest -q -n $(TEST_WORKERS) -m "not slow" tests

# The end-to-end runs: README commands as written, kill/resume, multi-host, mesh, notebooks (about 45 min).
test-slow: $(STAMP)
	$(VPY) -m pytest -q -n $(TEST_WORKERS) -m slow tests

# Hugging Face parity (export -> transformers, fixture import, pytorch_model.bin) against the installed
# transformers; FLAN_REQUIRE_HF=1 turns "torch not installed" skips into failures.
test-hf: $(HF_STAMP)
	FLAN_REQUIRE_HF=1 $(VPY) -m pytest -q -m hf -rs tests

# The documentation site (mkdocs.yml) into site/, warnings as errors: the guides in docs/, gin/README.md,
# the notebooks (the inspect one executed, about 45 s) and the API reference from the docstrings.
docs: $(DOCS_STAMP)
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict

demo: $(STAMP)
	$(VPY) -m flan_t5x.train --gin_file=gin/demo.gin
	$(VPY) -m flan_t5x.eval --gin_file=gin/eval_demo.gin

bench-data: $(STAMP)
	$(VPY) bench/data_pipeline.py

clean:
	rm -rf $(VENV) build site *.egg-info
