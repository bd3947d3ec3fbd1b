"""Recipes: packaged loading, overrides, unknown keys with suggestions, types, saving."""

from __future__ import annotations

import pytest
import yaml

from rayda.config import ConfigError, Recipe, RECIPES_DIR, load_recipe


def test_every_packaged_recipe_loads():
    names = sorted(p.stem for p in RECIPES_DIR.glob("*.yaml"))
    assert "tiny" in names and len(names) >= 2
    for name in names:
        assert isinstance(load_recipe(name), Recipe)


def test_overrides_set_nested_values():
    r = load_recipe("tiny", ["prompts.limit=7", "run.dir=/tmp/x", "pools.learner.actors=2", "spec.token_budget=null"])
    assert r.prompts.limit == 7 and r.run.dir == "/tmp/x" and r.pools.learner.actors == 2
    assert r.spec.token_budget is None


@pytest.mark.parametrize(
    "override, message",
    [
        ("promts.limit=3", "unknown key 'promts'; did you mean 'prompts'?"),
        ("prompts.limt=3", "unknown key 'prompts.limt'; did you mean 'prompts.limit'?"),
        ("pools.learner.actor=2", "did you mean 'pools.learner.actors'?"),
        ("prompts.limit=many", "prompts.limit must be int"),
        ("run.seed=1.5", "run.seed must be int"),
        ("noequals", "must look like key.sub=value"),
    ],
)
def test_bad_overrides_name_the_key(override, message):
    with pytest.raises(ConfigError) as e:
        load_recipe("tiny", [override])
    assert message in str(e.value)


def test_unknown_key_in_file_names_the_file(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("run:\n  dri: x\n")
    with pytest.raises(ConfigError, match=rf"{p}: unknown key 'run.dri'; did you mean 'run.dir'"):
        load_recipe(str(p))


def test_unknown_recipe_lists_packaged_ones():
    with pytest.raises(ConfigError, match="packaged recipes: .*tiny"):
        load_recipe("no-such-recipe")


def test_recipes_are_frozen_and_round_trip(tmp_path):
    r = load_recipe("tiny", ["prompts.limit=3"])
    with pytest.raises(Exception):
        r.prompts.limit = 4  # type: ignore[misc]
    out = tmp_path / "resolved.yaml"
    r.save(out)
    again = load_recipe(str(out))
    assert again == r
    assert yaml.safe_load(out.read_text())["prompts"]["limit"] == 3


def test_every_field_has_a_docstring():
    """Each recipe field is documented by a string literal right under it (read by people, not code)."""
    import ast
    import inspect

    import rayda.config as config
    import rayda.config_cai as config_cai
    import rayda.config_pm as config_pm
    import rayda.config_rl as config_rl

    tree = [n for m in (config, config_cai, config_pm, config_rl) for n in ast.parse(inspect.getsource(m)).body]
    for cls in [n for n in tree if isinstance(n, ast.ClassDef) and n.name.endswith("Config") or getattr(n, "name", "") == "Recipe"]:
        body = cls.body
        for i, node in enumerate(body):
            if isinstance(node, ast.AnnAssign):
                nxt = body[i + 1] if i + 1 < len(body) else None
                assert isinstance(nxt, ast.Expr) and isinstance(nxt.value, ast.Constant), f"{cls.name}.{node.target.id}"
