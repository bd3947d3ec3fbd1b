"""The reduced tiny recipe of the slow end-to-end tests (`rayda run`, `rayda submit`): every stage of
`rayda run tiny`, on fewer prompts and steps so one run takes a few minutes on 2 cores."""

from __future__ import annotations

from pathlib import Path

REDUCED_TINY = (
    "prompts.limit=96",
    "gen_sft.samples_per_prompt=8",
    "sft.max_steps=24",
    "sft.save_every=4",
    "rl.steps=6",
    "rl.save_every=2",
    "eval.limit=96",
    "eval.n_resamples=200",
)
"""Overrides on top of the packaged `tiny` recipe."""


def reduced_tiny(run_dir: Path | str) -> list[str]:
    """The overrides of the reduced tiny recipe, writing into `run_dir`."""
    return [f"run.dir={run_dir}", *REDUCED_TINY]
