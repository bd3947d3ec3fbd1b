# The two commands: `make demo` and `make test`. Both share one idempotent install step.
VENV   ?= .venv
EXTRAS ?= cpu,dev
STAMP  := $(VENV)/.rayda-installed
BIN    := $(VENV)/bin

.PHONY: install demo test test-fast rehearse bench clean

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install.sh
	bash scripts/install.sh $(VENV) $(EXTRAS)
	@touch $@

# The main job on the default recipe: every stage, then the report (12.8 minutes timed on a fresh 2-core machine,
# install and tiny-world build included; the commit before 14.8 in the same hour; README).
demo: install
	$(BIN)/rayda run tiny

# WORKERS=N: N pytest-xdist workers, a test module per unit of work and the modules that read one shared
# session fixture (the reduced run, the vLLM server) as one unit (tests/conftest.py); WORKERS=0 runs serially.
# Two by default: on 2 cores the cores idle a third of a serial run (stages wait on actors, engines, clusters
# starting) and a second worker fills most of it (README, "The suite's time"). A fresh clone's two-worker run,
# which also builds the tiny world, peaked at 15.1-15.3 of 23.5 GB used (docs/testing.md).
WORKERS ?= 2
# Tests run on jemalloc as the `rayda` command does (rayda/allocator.py): the tiny world's pre-training inside the
# suite is faster (1.09-1.20x over 25 steps in benchmarks/allocator.py). RAYDA_JEMALLOC=0: the system allocator.
PYTEST = $(BIN)/python -m rayda.allocator $(BIN)/python -m pytest

test: install
	$(PYTEST) -q --durations=20 -m "not rehearsal" -n $(WORKERS) --dist loadscope

# `rayda run qwen-gpu` on CPU with tiny-world models and 8 logical GPUs (tests/test_gpu_rehearsal.py).
rehearse: install
	$(PYTEST) -q --durations=5 -m rehearsal

test-fast: install
	$(PYTEST) -q -m "not slow" -n $(WORKERS) --dist loadscope

# Each benchmark through benchmarks/run.py (its figures, commit, date and cores -> benchmarks/results/),
# then the README's table from those files. The classifier reads XSTest v2 completion files from
# RAYDA_XSTEST_COMPLETIONS=DIR and is skipped without them; a failed benchmark fails the target.
BENCHMARKS ?= install allocator tinyworld learner engine_dtype engine_process gen_sft rl_step weight_sync async_rl classifier prompts_import outcome compare_arms

bench: install
	@failed=""; for b in $(BENCHMARKS); do $(BIN)/python benchmarks/run.py $$b || failed="$$failed $$b"; done; \
	$(BIN)/python benchmarks/render.py --write README.md; \
	if [ -n "$$failed" ]; then echo "bench: failed:$$failed"; exit 1; fi

clean:
	rm -rf runs .pytest_cache
