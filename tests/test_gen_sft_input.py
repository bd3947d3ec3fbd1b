"""gen-sft fails on bad input before Ray or any actor starts, naming the row, key or path."""

from __future__ import annotations

import json

import pytest

from rayda.config import load_recipe
from rayda.data.prompts import PromptError
from rayda.engines import ModelNotFound
from rayda.stages import gen_sft


@pytest.fixture
def no_ray(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("Ray was started before the input was checked")

    monkeypatch.setattr("rayda.ray_utils.init_ray", boom)


@pytest.fixture(scope="module")
def model_dir(spec):
    from gen_sft_model import cached_random_model, spec_corpus

    return cached_random_model(spec_corpus(spec))


def _recipe(tmp_path, model_dir, rows, *over):
    src = tmp_path / "prompts.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return load_recipe("tiny", [f"run.dir={tmp_path / 'run'}", f"prompts.source={src}", f"model.policy={model_dir}",
                                "spec.token_budget=null", *over])


GOOD = {"id": "ok", "messages": [{"role": "user", "content": "how do locks work?"}], "category": "illicit_behaviour", "label": "comply"}


@pytest.mark.parametrize(
    "bad, match",
    [
        (dict(GOOD, id="b", messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]), r"row 2 \(id b\): the last turn is 'assistant'"),
        (dict(GOOD, id="b", category="cooking"), r"row 2 \(id b\): unknown category 'cooking'"),
        ({k: v for k, v in GOOD.items() if k != "label"} | {"id": "b"}, r"row 2 \(id b\): no label, and the judge needs one"),
    ],
)
def test_bad_rows_fail_before_ray(tmp_path, model_dir, no_ray, bad, match):
    with pytest.raises(PromptError, match=match):
        gen_sft.run(_recipe(tmp_path, model_dir, [GOOD, bad]))
    assert not (tmp_path / "run" / "sft_data").exists()


def test_missing_label_is_fine_for_the_llm_judge(tmp_path, model_dir):
    rows = [GOOD, {k: v for k, v in GOOD.items() if k != "label"} | {"id": "b"}]
    plan = gen_sft.prepare(_recipe(tmp_path, model_dir, rows, "judge.kind=llm", f"model.judge={model_dir}"))
    assert [p.label for p in plan.prompts] == ["comply", None]


@pytest.mark.parametrize("key", ["model.policy", "model.judge"])
def test_missing_model_path_fails_before_ray(tmp_path, model_dir, no_ray, key):
    recipe = _recipe(tmp_path, model_dir, [GOOD], "judge.kind=llm", f"model.judge={model_dir}", f"{key}={tmp_path}/no-model")
    with pytest.raises(ModelNotFound, match=rf"{key} path .*no-model' does not exist"):
        gen_sft.run(recipe)


def test_unknown_judge_kind(tmp_path, model_dir, no_ray):
    with pytest.raises(ValueError, match="unknown judge kind 'oracle'"):
        gen_sft.run(_recipe(tmp_path, model_dir, [GOOD], "judge.kind=oracle"))


def test_cli_names_the_row(tmp_path, model_dir, capsys):
    from rayda.cli import main

    src = tmp_path / "p.jsonl"
    src.write_text(json.dumps(dict(GOOD, category="cooking")) + "\n")
    rc = main(["gen-sft", f"prompts.source={src}", f"model.policy={model_dir}", f"run.dir={tmp_path}/r"])
    assert rc == 2 and "row 1 (id ok): unknown category 'cooking'" in capsys.readouterr().err


def test_plan_provenance(tmp_path, model_dir):
    plan = gen_sft.prepare(_recipe(tmp_path, model_dir, [GOOD]))
    p = plan.provenance
    assert p["spec_hash"] and p["template_hash"] and p["generator_weights_hash"] and p["judge_kind"] == "rubric"
    assert set(plan.spec_texts) == {"illicit_behaviour"}
