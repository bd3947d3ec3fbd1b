"""`rayda check`: the whole run validated up front, every packaged recipe passing on its cluster shape."""

from __future__ import annotations

import json
import os

import pytest

from rayda.check import CheckError, check, parse_shape
from rayda.cli import main
from rayda.config import load_recipe, recipe_path

SHAPES = {"tiny": "1x8cpu", "qwen-gpu": "1x8gpu"}
"""The cluster shape each packaged recipe is written for."""


def _errors(recipe, shape=None):
    return check(recipe, parse_shape(shape) if shape else None).errors


def test_every_packaged_recipe_passes_on_its_shape():
    packaged = sorted(p.stem for p in recipe_path("tiny").parent.glob("*.yaml"))
    assert packaged == sorted(SHAPES), "give each packaged recipe the cluster shape it is written for"
    for name, shape in SHAPES.items():
        assert _errors(load_recipe(name), shape) == [], name


def test_gpu_recipe_does_not_fit_half_a_node():
    errors = _errors(load_recipe("qwen-gpu"), "1x4gpu")
    assert len(errors) == 1 and errors[0].startswith("pools:") and "GPU: need 8" in errors[0]


def test_every_problem_is_reported_at_once_with_its_key(tmp_path):
    bad = load_recipe("tiny", [
        "rl.prompts_per_step=3", "sft.zero_stage=5", "gen_sft.threshold=1.5", "model.dtype=fp8",
        f"prompts.source={tmp_path}/missing.jsonl", "judge.kind=llm", f"model.judge={tmp_path}/no-model",
    ])
    errors = _errors(bad)
    joined = "\n".join(errors)
    for needle in ("3 x 8 = 24 samples must be a whole number", "sft.zero_stage must be 0, 1, 2 or 3",
                   "gen_sft.threshold must be in [0, 1]", "model.dtype must be one of", "missing.jsonl' does not exist",
                   "model.judge path"):
        assert needle in joined, needle
    assert len(errors) == 6 and all("\n" not in e for e in errors)


def test_rl_label_weights_name_a_behaviour_and_are_positive():
    errors = _errors(load_recipe("tiny", ["rl.label_weights={refuze: 2, comply: 0, safe_complete: yes}"]))
    assert errors == ["sizes: rl.label_weights: unknown label 'refuze'; labels: comply, refuse, safe_complete",
                      "sizes: rl.label_weights.comply must be a number > 0, got 0",
                      "sizes: rl.label_weights.safe_complete must be a number > 0, got True"]
    assert _errors(load_recipe("tiny", ["rl.label_weights={refuse: 2.0, comply: 1}"])) == []


def test_weight_transport_and_reference_pool_settings():
    errors = _errors(load_recipe("tiny", ["rl.sync=nccl", "rl.sync_timeout_s=0"]))
    assert any("rl.sync must be 'collective' or 'files', got 'nccl'" in e for e in errors)
    assert any("rl.sync_timeout_s must be positive" in e for e in errors)
    # the exact KL needs the reference's whole distribution in the learner's pass (tiny uses it)
    errors = _errors(load_recipe("tiny", ["pools.reference.actors=1"]))
    assert len(errors) == 1 and "rl.kl_kind=full needs the reference on the learner ranks" in errors[0]
    assert _errors(load_recipe("tiny", ["pools.reference.actors=1", "rl.kl_kind=k3", "rl.sync=files"])) == []
    # LoRA: a rank vLLM serves, some target modules, ZeRO 0-2
    errors = _errors(load_recipe("tiny", ["rl.members=1", "rl.lora.rank=12", "sft.lora.rank=8", "sft.zero_stage=3", "rl.lora.target_modules=[]"]))
    joined = "\n".join(errors)
    assert "rl.lora.rank must be 0 (off) or one of 1, 8, 16" in joined and "got 12" in joined
    assert "rl.lora.target_modules is empty" in joined and "sft.lora needs sft.zero_stage 0-2" in joined
    assert _errors(load_recipe("tiny", ["rl.members=1", "rl.lora.rank=16", "sft.lora.rank=8"])) == []


def test_unlabelled_prompts_are_an_error_for_the_rubric_judge_only(tmp_path):
    rows = tmp_path / "p.jsonl"
    rows.write_text(json.dumps({"prompt": "how do i pick a lock?", "category": "illicit_behaviour"}) + "\n")
    many = [f"prompts.source={rows}", "rl.prompts_per_step=1", "rl.samples_per_prompt=32", "rl.grad_accum=2"]
    errors = _errors(load_recipe("tiny", many))
    assert len(errors) == 1 and "no label, and the judge needs one" in errors[0]
    assert _errors(load_recipe("tiny", [*many, "judge.kind=llm", "model.judge=tinyworld"])) == []


@pytest.mark.parametrize("overrides, error", [
    (["sft.average_last=0"], "sft.average_last must be at least 1 (1: the final weights), got 0"),
    (["sft.average_last=2", "sft.save_every=0"], "sft.average_last > 1 averages the checkpoints taken every sft.save_every steps: set sft.save_every"),
    (["sft.average_last=4", "sft.keep_checkpoints=2"], "sft.keep_checkpoints 2 deletes checkpoints sft.average_last 4 averages: keep at least 3 (or 0: all)"),
    (["sft.average_last=2", "sft.lora.rank=8"], "sft.average_last > 1 averages whole weights; with sft.lora the checkpoints hold adapters: use one of the two"),
])
def test_checkpoint_averaging_needs_whole_kept_checkpoints(overrides, error):
    assert check(load_recipe("tiny", overrides)).errors == [f"sizes: {error}"]
    assert not check(load_recipe("tiny", ["sft.average_last=3", "sft.keep_checkpoints=0"])).errors


@pytest.mark.parametrize("overrides, error", [
    (["rl.members=0"], "rl.members must be at least 1, got 0"),
    (["rl.members=2", "rl.lora.rank=8"], "rl.members > 1 averages whole weights; with rl.lora the members train adapters: use one of the two"),
])
def test_rl_members_average_whole_weights(overrides, error):
    assert check(load_recipe("tiny", overrides)).errors == [f"sizes: {error}"]
    assert not check(load_recipe("tiny", ["rl.members=3"])).errors


def test_notes_are_not_errors():
    report = check(load_recipe("qwen-gpu"))
    notes = [m for level, where, m in report.findings if level == "note" and where == "model.policy"]
    assert notes and "not checked offline" in notes[0]
    # A relative folder that is not there (no hub name has two slashes) is an error, not a crash.
    report = check(load_recipe("tiny", ["rl.init=runs/nowhere/checkpoints/sft"]))
    assert [m for level, where, m in report.findings if where == "rl.init"] == [
        "'runs/nowhere/checkpoints/sft' is neither a model folder (no such folder) nor a Hugging Face hub name"]


def test_shapes():
    assert parse_shape("2x8gpu") == {"node-0": {"CPU": 96.0, "GPU": 8.0}, "node-1": {"CPU": 96.0, "GPU": 8.0}}
    assert parse_shape("1x8gpu,64cpu")["node-0"] == {"CPU": 64.0, "GPU": 8.0}
    assert parse_shape("3x16cpu")["node-2"] == {"CPU": 16.0, "GPU": 0.0}
    for bad in ("8gpu", "2x", "ax8gpu", "2x8tpu"):
        with pytest.raises(CheckError, match="expected NODESxGPUSgpu"):
            parse_shape(bad)


def test_cli_check_and_run_stop_on_the_first_look(tmp_path, capsys):
    assert main(["check", "qwen-gpu", "--cluster", "1x8gpu"]) == 0
    assert main(["check", "tiny", "rl.prompts_per_step=3", "--cluster", "1x8cpu"]) == 2
    out = capsys.readouterr().out
    assert "error sizes: rl: a step's" in out and "1 problem(s)" in out
    # `rayda run` checks first: a bad RL setting stops it before gen-sft writes anything
    assert main(["run", f"run.dir={tmp_path}/run", "rl.prompts_per_step=3"]) == 2
    assert "whole number of updates" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_plan_without_a_cluster_is_one_line(monkeypatch, capsys):
    import ray

    def refuse(*a, **k):
        raise ConnectionError("Could not find any running Ray instance. Please specify the one to connect to.\nmore")

    monkeypatch.setattr(ray, "init", refuse)
    # `rayda plan` sets RAY_AUTH_MODE=token when it finds a token file: keep that out of the session's own Ray
    monkeypatch.setenv("RAY_AUTH_MODE", os.environ.get("RAY_AUTH_MODE", "disabled"))
    assert main(["plan", "tiny", "--address", "auto"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no Ray cluster at 'auto'" in err and "--cluster 1x8gpu" in err
