"""RL on the tiny world raises held-out behaviour accuracy over the SFT model it starts from, while the
KL to that SFT reference stays bounded.

SFT is deliberately short (a perfect judge's rows, `SFT_STEPS` steps); RL then learns from the rubric
judge's rewards on the training prompts alone. Accuracy is measured on the held-out prompts (frames
never seen in training), generated WITHOUT the spec, graded by the rubric's behaviour classifier;
malformed counts as wrong. The asserted figure is the accuracy of the policy as RL samples it
(temperature 1, two seeds per prompt), which is what RL optimises. Greedy accuracy is printed beside
it and not asserted. Measured on the previous tiny world (`tinyworld-3`, whose base picked behaviour
and clause independently; the run is deterministic on a given machine): with groups of 8 samples,
sampled 0.398 -> 0.448 and greedy 0.708 -> 0.783, KL at most 0.18; with groups of 4 RL did not beat
SFT (sampled 0.398 -> 0.408): too many groups had all-equal rewards. The test passes on the current
world (`tinyworld-4`, 391 s); its figures there were not recorded. On tiny world 5 it is a known gap
(xfail): every RL variant measured from a 0.88 SFT model lowered held-out greedy accuracy.
"""

from __future__ import annotations

import json

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ray]

SFT_STEPS = 40
MARGIN = 0.03
"""RL must beat the SFT model's sampled held-out behaviour accuracy by at least this (absolute; about one
standard error of the difference over 2 x 240 samples each). Measured +0.050 (96-token completions, the
tiny recipe) and +0.062 (160-token completions)."""
GREEDY_SLACK = 0.05
"""RL's greedy held-out accuracy may not fall more than this below the SFT model's: sharpening must not
collapse the policy onto one behaviour (measured +0.075; a learning rate of 3e-4 fell 0.28)."""
KL_BOUND = 0.5
"""Mean per-token KL(policy || SFT reference) on the policy's own samples, at every step, in nats
(measured: at most 0.18 over 30 steps)."""
RL_OVERRIDES = ("sft.lr=3e-4", "rl.steps=30", "rl.save_every=0", "rl.lr=1e-4", "rl.kl_coef=0.05", "rl.samples_per_prompt=8",
                "rl.eval_every=0")


def heldout_accuracy(model_dir, spec, prompts) -> dict:
    """Sampled (temperature 1, seeds 0 and 1) and greedy behaviour accuracy on `prompts`."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rayda.behaviour import classify
    from rayda.reasoning import split
    from rayda.tinyworld.model import generate

    model, tok = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)

    def accuracy(temperature: float, seed: int) -> float:
        parts = [split(t) for t in generate(model, tok, [p["messages"] for p in prompts], temperature=temperature, seed=seed)]
        return sum(s.ok and classify(s.answer, spec) == p["label"] for s, p in zip(parts, prompts)) / len(prompts)

    return {"sampled": (accuracy(1.0, 0) + accuracy(1.0, 1)) / 2, "greedy": accuracy(0.0, 0)}


def sft_then_rl(spec, world, run_dir, overrides=()) -> dict:
    from sft_fixtures import perfect_judge_rows, write_parquet

    from rayda.config import load_recipe
    from rayda.stages import rl, sft

    write_parquet(perfect_judge_rows(spec, world.prompts("train")), run_dir / "sft_data" / "accepted.parquet")
    recipe = load_recipe("tiny", [f"run.dir={run_dir}", f"model.policy={world.model_dir}", f"prompts.source={world.train_path}",
                                  "pools.learner.cpus_per_actor=1", "sft.save_every=0",
                                  f"sft.max_steps={SFT_STEPS}", "sft.eval_every=0", *RL_OVERRIDES, *overrides])
    sft_dir = sft.run(recipe, progress=False)
    rl_dir = rl.run(recipe, progress=False)
    heldout = world.prompts("heldout")
    metrics = [m for m in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if m["stage"] == "rl"]
    return {"sft": heldout_accuracy(sft_dir, spec, heldout), "rl": heldout_accuracy(rl_dir, spec, heldout),
            "reward": [round(m["reward_mean"], 3) for m in metrics],
            "train_accuracy": [round(m["behaviour_accuracy"], 3) for m in metrics],
            "kl": [round(m["kl"], 4) for m in metrics]}


@pytest.mark.xfail(strict=False, reason="issue 12: on tiny world 5 RL raises its training objective while held-out "
                   "greedy accuracy falls (README, 'RL does not yet pay on held-out prompts'); not re-measured here")
def test_rl_beats_sft_on_heldout_prompts(spec, tiny_world, ray_local, tmp_path):
    result = sft_then_rl(spec, tiny_world, tmp_path)
    print(json.dumps(result))
    assert result["rl"]["sampled"] >= result["sft"]["sampled"] + MARGIN
    assert result["rl"]["greedy"] >= result["sft"]["greedy"] - GREEDY_SLACK
    assert max(result["kl"]) <= KL_BOUND
