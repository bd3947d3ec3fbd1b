"""The reduced tiny recipe of the slow end-to-end tests (`rayda run`, `rayda submit`): every stage of
`rayda run tiny`, on fewer prompts and steps so one run takes a few minutes on 2 cores."""

from __future__ import annotations

from pathlib import Path

REDUCED_TINY = (
    "prompts.limit=160",
    "gen_sft.samples_per_prompt=8",
    "sft.max_steps=48",
    "sft.save_every=4",
    "rl.steps=12",
    "rl.save_every=4",
    "rl.eval_every=6",
    "eval.limit=80",
    "eval.n_resamples=200",
)
"""Overrides on top of the packaged `tiny` recipe. The first 160 training prompts and the first 80
held-out ones are those of the first two categories (harassment_hate, illicit_behaviour): the held-out
set asks about the subjects the run trains on, in phrasings it never saw. (With 96 and 96, a third of
the held-out prompts were about subjects no stage saw, whose answers any update reshuffles by chance.)
RL takes 12 steps so that its sampled accuracy on the training sample rises by more than two standard
errors (`tests/test_run_e2e.py`)."""


def reduced_tiny(run_dir: Path | str) -> list[str]:
    """The overrides of the reduced tiny recipe, writing into `run_dir`."""
    return [f"run.dir={run_dir}", *REDUCED_TINY]
