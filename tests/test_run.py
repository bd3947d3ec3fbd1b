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
