"""SFT on the tiny world measurably teaches the policy: held-out behaviour accuracy (greedy, generated
WITHOUT the spec, graded by the rubric's behaviour classifier) rises well above the base model's."""

from __future__ import annotations

import json

import pytest

from sft_fixtures import perfect_judge_rows, write_parquet

pytestmark = [pytest.mark.slow, pytest.mark.ray]

MARGIN = 0.2
"""SFT must beat the base model's held-out behaviour accuracy by at least this (absolute)."""


def heldout_accuracy(model_dir, spec, prompts) -> dict:
    """Greedy completions of the held-out prompts; a malformed completion counts as wrong."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rayda.behaviour import classify
    from rayda.reasoning import split
    from rayda.tinyworld.model import generate

    model, tok = AutoModelForCausalLM.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir)
    texts = generate(model, tok, [p["messages"] for p in prompts], temperature=0.0)
    parts = [split(t) for t in texts]
    correct = sum(s.ok and classify(s.answer, spec) == p["label"] for s, p in zip(parts, prompts))
    return {"accuracy": correct / len(prompts), "well_formed": sum(s.ok for s in parts) / len(prompts)}


def test_sft_beats_the_base_model_on_heldout_prompts(spec, tiny_world, ray_local, tmp_path):
    from rayda.config import load_recipe
    from rayda.stages.sft import run

    assert all(m["role"] != "system" for p in tiny_world.prompts("heldout") for m in p["messages"])  # no spec
    write_parquet(perfect_judge_rows(spec, tiny_world.prompts("train")), tmp_path / "sft_data" / "accepted.parquet")
    recipe = load_recipe("tiny", [f"run.dir={tmp_path}", "pools.learner.cpus_per_actor=2", "sft.save_every=0"])
    out = run(recipe, progress=False)
    heldout = tiny_world.prompts("heldout")
    base = heldout_accuracy(tiny_world.model_dir, spec, heldout)
    sft = heldout_accuracy(out, spec, heldout)
    report = json.loads((out / "train_report.json").read_text())
    print(f"held-out behaviour accuracy: base {base}, sft {sft}; {report}")
    assert sft["accuracy"] >= base["accuracy"] + MARGIN, (base, sft)
    assert sft["well_formed"] >= 0.9
