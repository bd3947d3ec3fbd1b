"""`rayda run` pins its recipe: a resume may move the run, never change what it computes."""

from __future__ import annotations

import pytest

from rayda.config import ConfigError, load_recipe
from rayda.stages.run import _pin_recipe


def test_resume_may_change_placement_but_not_the_computation(tmp_path):
    _pin_recipe(load_recipe("tiny", [f"run.dir={tmp_path}"]), tmp_path)
    assert (tmp_path / "recipe.yaml").exists()
    # where it runs may change
    _pin_recipe(load_recipe("tiny", [f"run.dir={tmp_path}", "run.num_cpus=4", "pools.learner.actors=2"]), tmp_path)
    # what it computes may not
    with pytest.raises(ConfigError, match="holds a different recipe"):
        _pin_recipe(load_recipe("tiny", [f"run.dir={tmp_path}", "sft.lr=5e-4"]), tmp_path)


def test_rl_watch_may_change_unless_it_chooses_the_export(tmp_path):
    """`rl.eval_every` and `rl.eval_prompts` only measure with `rl.select=last`; with `best` they decide
    which checkpoint RL exports, so they pin."""
    last, best = tmp_path / "last", tmp_path / "best"
    _pin_recipe(load_recipe("tiny", [f"run.dir={last}"]), last)
    _pin_recipe(load_recipe("tiny", [f"run.dir={last}", "rl.eval_every=0", "rl.eval_prompts=8"]), last)
    with pytest.raises(ConfigError, match="holds a different recipe"):
        _pin_recipe(load_recipe("tiny", [f"run.dir={last}", "rl.eval_every=0", "rl.samples_per_prompt=4"]), last)
    chooses = ["rl.select=best", "rl.select_prompts=tinyworld:valid"]
    _pin_recipe(load_recipe("tiny", [f"run.dir={best}", *chooses]), best)
    with pytest.raises(ConfigError, match="holds a different recipe"):
        _pin_recipe(load_recipe("tiny", [f"run.dir={best}", *chooses, "rl.eval_every=2"]), best)


def test_a_run_pinned_by_an_older_rayda_resumes(tmp_path):
    """A key added after the run was pinned takes its default; a value that changed still stops it."""
    import yaml

    _pin_recipe(load_recipe("tiny", [f"run.dir={tmp_path}"]), tmp_path)
    path = tmp_path / "recipe.yaml"
    older = yaml.safe_load(path.read_text())
    del older["rl"]["init"], older["eval"]["spec_in_context"]  # what a rayda before them pinned
    path.write_text(yaml.safe_dump(older, sort_keys=False))
    _pin_recipe(load_recipe("tiny", [f"run.dir={tmp_path}"]), tmp_path)
    # Whole sections added since (CAI's), which the tiny recipe sets away from their defaults.
    path.write_text(yaml.safe_dump({k: v for k, v in older.items() if k not in ("cai", "pm", "reward")}, sort_keys=False))
    _pin_recipe(load_recipe("tiny", [f"run.dir={tmp_path}"]), tmp_path)
    assert yaml.safe_load(path.read_text())["cai"]["rounds"] == 4  # pinned now
    path.write_text(yaml.safe_dump({**older, "cai": {**older["cai"], "rounds": 1}}, sort_keys=False))
    with pytest.raises(ConfigError, match="holds a different recipe"):
        _pin_recipe(load_recipe("tiny", [f"run.dir={tmp_path}"]), tmp_path)
    path.write_text(yaml.safe_dump({**older, "rl": {**older["rl"], "init": "base"}}, sort_keys=False))
    with pytest.raises(ConfigError, match="holds a different recipe"):
        _pin_recipe(load_recipe("tiny", [f"run.dir={tmp_path}"]), tmp_path)
    path.write_text(yaml.safe_dump({**older, "rl": {**older["rl"], "retired_key": 1}}, sort_keys=False))
    with pytest.raises(ConfigError, match="holds a different recipe"):
        _pin_recipe(load_recipe("tiny", [f"run.dir={tmp_path}"]), tmp_path)


def test_a_resumed_run_evaluates_only_the_models_left_in_one_pipeline(tmp_path, monkeypatch, capsys, tiny_world):
    """Killed after base's evaluation: the restart skips the stages and base, and evaluates SFT and RL
    together (`evaluate.run_many`, one engine), timed as one entry."""
    import json

    from rayda import io
    from rayda.stages import evaluate, run

    recipe = load_recipe("tiny", [f"run.dir={tmp_path}"])
    for done in ("sft_data", "checkpoints/sft", "checkpoints/rl"):
        io.mark_success(tmp_path / done)
    (tmp_path / "eval").mkdir()
    (tmp_path / "eval" / "base-heldout.json").write_text("{}")
    calls = []

    def run_many(jobs, progress=True):
        calls.append([(j.model, j.name) for j in jobs])
        for j in jobs:
            (tmp_path / "eval" / f"{j.name}.json").write_text("{}")

    monkeypatch.setattr(evaluate, "run_many", run_many)
    monkeypatch.setattr("rayda.report.write_report", lambda d: d / "report.md")
    run.run(recipe, progress=False)
    assert calls == [[("sft", "sft-heldout"), ("rl", "rl-heldout")]]
    out = capsys.readouterr().out
    assert f"run: eval_base finished earlier ({tmp_path / 'eval' / 'base-heldout.json'}); skipping" in out
    assert "eval_sft finished earlier" not in out
    assert list(json.loads((tmp_path / "timings.json").read_text())) == ["eval_sft+rl"]
    assert io.is_done(tmp_path / "eval")
