"""Pure parts of cluster operation: job runtime_env and entrypoint, secrets, token auth, dashboard figures."""

from __future__ import annotations

import shlex

import pytest
import yaml

from rayda.cluster import RUNTIME_ENV, entrypoint, job_runtime_env, redact, use_token_auth
from rayda.config import ConfigError, load_recipe
from rayda.metrics import step_figures


def test_runtime_env_gets_the_working_dir_and_refuses_secrets():
    base = yaml.safe_load(RUNTIME_ENV.read_text())
    env = job_runtime_env(base, "/repo", {"RAYDA_JUDGE_API_KEY"})
    assert env["working_dir"] == "/repo" and ".venv" in env["excludes"]
    assert "TOKENIZERS_PARALLELISM" in env["env_vars"]  # a TOKEN inside a word is no secret
    for name in ("RAYDA_JUDGE_API_KEY", "HF_TOKEN", "AWS_SECRET_ACCESS_KEY", "MY_JUDGE"):
        with pytest.raises(ConfigError, match=f"{name}.*look like secrets"):
            job_runtime_env({"env_vars": {name: "sk-123"}}, ".", {"MY_JUDGE"})


def test_redact_hides_secret_values_at_any_depth():
    shown = redact({"env_vars": {"OPENAI_API_KEY": "sk-123", "A": "1"}, "pip": [{"RAY_AUTH_TOKEN": "t"}]})
    assert "sk-123" not in str(shown) and "'t'" not in str(shown) and shown["env_vars"]["A"] == "1"


def test_entrypoint_runs_rayda_with_the_overrides(tmp_path):
    (tmp_path / "r.yaml").write_text("run: {}\n")
    cmd = entrypoint("tiny", ["run.dir=/x y", "pools.judge.resources={judge_node: 1}"], str(tmp_path))
    assert shlex.split(cmd) == ["rayda", "run", "tiny", "run.dir=/x y", "pools.judge.resources={judge_node: 1}"]
    assert shlex.split(entrypoint(str(tmp_path / "r.yaml"), [], str(tmp_path)))[2] == "r.yaml"
    with pytest.raises(ConfigError, match="outside the working dir"):
        entrypoint("/elsewhere/r.yaml", [], str(tmp_path))


def test_token_auth_turns_on_when_a_token_exists(tmp_path):
    token = tmp_path / "token"
    env = {"RAY_AUTH_TOKEN_PATH": str(token)}
    assert not use_token_auth(env) and "RAY_AUTH_MODE" not in env
    token.write_text("x")
    assert use_token_auth(env) and env["RAY_AUTH_MODE"] == "token"
    assert not use_token_auth({"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": "x"})  # the user's choice stands


def test_recipe_path_works_everywhere(tmp_path):
    p = tmp_path / "mine.yaml"
    p.write_text("pools:\n  learner: {actors: 2, gpus_per_actor: 1, strategy: SPREAD}\n")
    r = load_recipe(str(p))
    assert r.pools.learner.actors == 2 and r.pools.learner.strategy == "SPREAD" and r.pools.reference is None


def test_step_figures_are_tagged_by_stage_pool_and_actor():
    record = {"stage": "rl", "reward_mean": 0.5, "kl": 0.01, "judge_pass_rate": 0.25, "judge_error_rate": 0.0,
              "seconds": {"generate": 1.0, "judge": 0.1, "train": 2.0, "sync": 0.2, "step": 3.3}}
    figs = step_figures(record)
    assert figs["rayda_reward_mean"] == (0.5, {"stage": "rl", "pool": "learner", "actor": "driver"})
    assert figs["rayda_judge_pass_rate"][1]["pool"] == "judge"
    assert figs["rayda_step_seconds/generate"] == (1.0, {"stage": "rl", "pool": "rollout", "actor": "driver", "phase": "generate"})
    assert len([k for k in figs if k.startswith("rayda_step_seconds/")]) == 5


def test_other_rl_figures_are_tagged_by_stage_so_members_keep_their_own():
    """The RL figures DESIGN.md does not list get a gauge each, tagged by stage: rl.members' runs
    (`rl_m1`) and the watch (`rl_eval`) do not overwrite the first run's."""
    from rayda.rl.report import other_figures

    record = {"stage": "rl_m1", "step": 3, "reward_mean": 0.5, "clip_frac": 0.01, "by_label": {"comply": {"reward": 0.7}},
              "prompts": ["a"], "seconds": {"step": 3.3}}
    figs = other_figures(record)
    assert figs["rayda_rl_clip_frac"] == (0.01, {"stage": "rl_m1"})
    assert figs["rayda_rl_by_label_comply_reward"] == (0.7, {"stage": "rl_m1"})
    assert "rayda_rl_reward_mean" not in figs and not any("seconds" in k or "prompts" in k for k in figs)  # published elsewhere / not numbers
    assert other_figures({"stage": "rl_eval", "heldout": {"accuracy": 0.9}})["rayda_rl_heldout_accuracy"] == (0.9, {"stage": "rl_eval"})
