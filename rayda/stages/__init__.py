"""One readable driver per stage: `gen_sft`, `sft`, `rl`, `evaluate`, and `run` for all of them."""
