# The two commands: `make demo` and `make test`. Both share one idempotent install step.
VENV   ?= .venv
EXTRAS ?= cpu,dev
STAMP  := $(VENV)/.rayda-installed
BIN    := $(VENV)/bin

.PHONY: install demo test test-fast bench clean

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh $(VENV) $(EXTRAS)
	@touch $@

# The main job on the default recipe: every stage, then the report (about 15 minutes on 2 cores).
demo: install
	$(BIN)/rayda run tiny

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

bench: install
	@for b in benchmarks/*.py; do $(BIN)/python $$b; done

clean:
	rm -rf runs .pytest_cache
