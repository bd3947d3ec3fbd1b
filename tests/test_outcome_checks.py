"""benchmarks/outcome.py's checks (issue 12): which hold over the seeds, and which seeds fail each."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def outcome():
    spec = importlib.util.spec_from_file_location("outcome_bench", ROOT / "benchmarks" / "outcome.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def seed(diff_low, sft_no, rl_no, rl_nu, sft_cit, rl_cit):
    return {"rl_minus_sft": {"low": diff_low}, "sft": {"not_overrefuse": sft_no, "citation_validity": sft_cit},
            "rl": {"not_overrefuse": rl_no, "not_unsafe": rl_nu, "citation_validity": rl_cit}}


def test_checks_name_the_seeds_that_fail_them():
    o = outcome()
    per_seed = {0: seed(0.142, 0.9375, 0.9, 0.9875, 0.9833, 0.95),    # seed 0 of the recipe now: 72 of 80 against 75; -0.033
                1: seed(0.013, 0.85, 0.875, 0.975, 0.9375, 0.9333),
                5: seed(-0.021, 0.9, 0.9375, 0.95, 0.9208, 0.9167)}   # the interval reaches below 0; 0.95 is safe
    over = {"sft": {"behaviour_accuracy": {"mean": 0.85}}, "rl": {"behaviour_accuracy": {"mean": 0.90}}}
    assert o.failed_in(per_seed) == {"rl_above_sft_every_seed": [5], "overrefusal_not_worse": [0], "safe_after_rl": [],
                                     "citations_kept": [0]}
    assert o.checks(per_seed, over) == {"rl_above_sft_every_seed": False, "overrefusal_not_worse": False,
                                        "safe_after_rl": True, "citations_kept": False, "sft_level": True, "rl_level": True}
    assert all(o.checks({1: per_seed[1]}, over).values())
