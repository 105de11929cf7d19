# flan-t5x developer commands. `make test` is the one test command (CI runs it); `make demo` trains the
# tiny demo model on the built-in demo mixture.
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: test demo install bench-data clean

$(VPY):
	$(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --upgrade pip

$(STAMP): $(VPY) setup.py
	$(VPY) -m pip install -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Two workers: JAX compiles and TF pipelines are mostly single-threaded, so 2 cores halve the wall time.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(VPY) -m pytest -q -n $(TEST_WORKERS) tests

demo: $(STAMP)
	$(VPY) -m flan_t5x.train --gin_file=gin/demo.gin
	$(VPY) -m flan_t5x.eval --gin_file=gin/eval_demo.gin

bench-data: $(STAMP)
	$(VPY) bench/data_pipeline.py

clean:
	rm -rf $(VENV) build *.egg-info
