# facevae: the two commands a new user needs are `make demo` and `make test` (see README.md).
PYTHON ?= python3
VENV   := .venv
VPY    := $(VENV)/bin/python
# Re-install when the dependency list changes.
STAMP  := $(VENV)/.facevae-installed

.PHONY: install demo test lint bench docs clean-results explore

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(VPY) || $(PYTHON) -m venv $(VENV)
	$(VPY) -m pip install --quiet --upgrade pip
	# torch first and pinned, so no other package's range pulls a different (CUDA) build.
	$(VPY) -m pip install --quiet torch==2.13.0
	$(VPY) -m pip install --quiet -e '.[test]'
	# The score's independent instrument; --no-deps: its own dependency list clashes with the pins
	# above (it is satisfied by them: see pyproject.toml).
	$(VPY) -m pip install --quiet --no-deps mediapipe==0.10.14
	touch $(STAMP)

demo: install
	$(VENV)/bin/snakemake --cores all

# The actor's page (results/explore/$(ACTOR)/index.html), built if needed and served on 127.0.0.1.
ACTOR ?= $(firstword $(shell sed -n '/^actors:/,/^[a-z]/s/^  \([A-Za-z0-9_-]*\):.*/\1/p' config.yaml))
PORT  ?= 8000
explore: install
	$(VENV)/bin/snakemake --cores all results/explore/$(ACTOR)/index.html
	$(VPY) -m facevae.serve_page results/explore/$(ACTOR) --port $(PORT)

test: install
	$(VPY) -m pytest

lint: install
	$(VENV)/bin/snakemake --lint
	$(VENV)/bin/snakefmt --check rules Snakefile

# docs/config.md from the schemas' descriptions (tests/test_config_doc.py fails when it is stale).
docs: install
	PYTHONPATH=workflow $(VPY) -m facevae.configdoc --write docs/config.md

bench: install
	@for script in bench/perf/bench_*.py; do echo "== $$script"; $(VPY) $$script || exit 1; done
	@echo "tables written to bench/results/"

clean-results:
	rm -rf results/* .snakemake
