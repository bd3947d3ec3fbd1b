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

# The main job on the default recipe. Until `rayda run` chains every stage, it runs the stages that exist.
demo: install
	$(BIN)/rayda spec check specs
	$(BIN)/rayda tinyworld build
	$(BIN)/rayda spec show self_harm

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

bench: install
	@for b in benchmarks/*.py; do $(BIN)/python $$b; done

clean:
	rm -rf runs .pytest_cache
