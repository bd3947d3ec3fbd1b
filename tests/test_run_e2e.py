"""`rayda run` end to end, as a user runs it: the session's shared run of the reduced tiny recipe
(`reduced_run`, `e2e_recipe.py`): a Ray job whose driver is killed (SIGKILL, its whole process group)
while SFT trains, then submitted again.

The second run must skip gen-sft (its `_SUCCESS` and parts untouched), finish every stage, write the
report, and show:
- SFT above the base on held-out greedy behaviour accuracy (measured 0.46 -> 0.59 on the 80 prompts,
  less than two standard errors: the reduced recipe's SFT is short);
- RL not breaking what it optimises: the sampled behaviour accuracy on its fixed training sample (the
  `rl_eval` lines: 64 prompts x 8 samples before the first step and after the last) may not fall by
  two standard errors of the difference (measured 0.455 -> 0.436 with `rl.kl_kind=full`, 0.455 -> 0.430
  with k3: in 12 steps RL does not raise it, issue 12), and the sampler's log-probs match the learner's
  at every step. Held-out, the last measurement: base 0.46, SFT 0.59, RL 0.64.
Held-out RL figures are printed, not asserted here: whether RL pays on held-out prompts is a claim
over seeds, made by `benchmarks/outcome.py`.
"""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]  # the shared run, if no test started it before


def test_rayda_run_survives_a_kill_during_sft_and_orders_the_models(reduced_run):
    run_dir, killed, log = reduced_run["run_dir"], reduced_run["killed"], reduced_run["log"]
    assert killed["alive_at_kill"], "the run ended before it could be killed during sft"
    assert not killed["sft_done"] and killed["gen_done"] is not None
    assert reduced_run["rc"] == 0, log[-4000:]
    assert "gen_sft finished earlier" in log
    assert (run_dir / "sft_data" / "_SUCCESS").stat().st_mtime_ns == killed["gen_done"]
    assert {p.name: p.stat().st_mtime_ns for p in (run_dir / "sft_data" / "parts").glob("*.parquet")} == killed["parts"]
    assert json.loads((run_dir / "checkpoints" / "sft" / "_SUCCESS").read_text())["resumed_from"] > 0

    for done in ("sft_data", "checkpoints/sft", "checkpoints/rl", "eval"):
        assert (run_dir / done / "_SUCCESS").exists(), done
    assert (run_dir / "report.md").exists()
    acc = {m: json.loads((run_dir / "eval" / f"{m}-heldout.json").read_text())["overall"]["behaviour_accuracy"]
           for m in ("base", "sft", "rl")}
    watch = [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())
             if r.get("stage") == "rl_eval" and "train_sampled" in r]
    before, after = watch[0]["train_sampled"], watch[-1]["train_sampled"]
    print(json.dumps({"heldout": {m: a["mean"] for m, a in acc.items()}, "rl_train_sampled": [before, after]}))
    assert acc["sft"]["mean"] > acc["base"]["mean"], acc
    assert watch[0]["step"] == 0 and watch[-1]["step"] > 0 and before["n"] == after["n"] == 512
    assert after["accuracy"] > before["accuracy"] - 2 * _se(after["accuracy"], after["n"], before["accuracy"], before["n"]), (before, after)
    steps = [r for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if r.get("stage") == "rl"]
    assert steps and all(r["logprob_mismatch_max"] < 1e-3 for r in steps)


def _se(p1: float, n1: int, p2: float, n2: int) -> float:
    """Standard error of the difference of two proportions (as if independent: conservative when the
    two are measured on the same prompts)."""
    return (p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2) ** 0.5
