"""`rayda compare`: the paired intervals against full DA, the cost per stage, the arms and the steps they
share, RL from the base, the spec in context at evaluation, and (slow) the whole compare on the tiny world."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rayda import critique as cq
from rayda import io
from rayda.compare_report import arm_cost, cell, stage_tokens, write
from rayda.config import ConfigError, load_recipe
from rayda.evaluation.metrics import Graded, bootstrap_ci, summarise
from rayda.evaluation.paired import graded_from_rows, paired_bootstrap, paired_difference, per_prompt
from rayda.spec import Citation
from rayda.stages import compare

ROOT = Path(__file__).resolve().parent.parent


def _graded(correct, label="refuse", start=0) -> list[Graded]:
    """Samples whose behaviour is right (1) or wrong (0) for `label`, ids str(start + i)."""
    wrong = "comply" if label != "comply" else "refuse"
    return [Graded(str(start + i), "illicit_behaviour", label, label if ok else wrong) for i, ok in enumerate(correct)]


# ---- pairing (pure) ------------------------------------------------------------------------------


def test_paired_difference_is_the_bootstrap_of_per_prompt_differences():
    """For a 0/1 metric the paired interval is `bootstrap_ci` of b - a per prompt (what outcome.py computed)."""
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 2, 60), rng.integers(0, 2, 60)
    d = paired_difference(_graded(a), _graded(b), "behaviour_accuracy", n_resamples=500, seed=7)
    order = [int(i) for i in sorted(map(str, range(60)))]  # pairs are taken in sorted prompt-id order
    mean, low, high = bootstrap_ci([b[i] - a[i] for i in order], 500, seed=7)
    assert d["n"] == 60
    assert d["mean"] == pytest.approx(mean, abs=1e-12)
    assert (d["low"], d["high"]) == (pytest.approx(low, abs=1e-12), pytest.approx(high, abs=1e-12))


def test_pairs_by_prompt_id_not_by_position():
    a = _graded([1, 1, 0, 0, 1, 0])
    b = list(reversed(_graded([1, 1, 1, 0, 1, 1]))) + _graded([1, 1], start=100)  # reordered, plus prompts a lacks
    d = paired_difference(a, b, "behaviour_accuracy", n_resamples=300)
    assert d["n"] == 6 and d["mean"] == pytest.approx(2 / 6)
    same = paired_difference(a, list(reversed(a)), "behaviour_accuracy", n_resamples=300)
    assert (same["mean"], same["low"], same["high"]) == (0.0, 0.0, 0.0)


def test_paired_interval_is_tighter_than_either_arms_own():
    """The reason to pair: prompts hard for one arm are hard for the other, and resampling them together
    cancels that shared spread. B fixes 10 of A's 60 wrong answers and breaks none."""
    a = np.array([1] * 40 + [0] * 60)
    b = a.copy()
    b[40:50] = 1
    d = paired_difference(_graded(a), _graded(b), "behaviour_accuracy", n_resamples=1000)
    own = [summarise(_graded(x), n_resamples=1000)["overall"]["behaviour_accuracy"] for x in (a, b)]
    assert d["mean"] == pytest.approx(0.10)
    assert d["low"] > 0  # paired: B is better on these prompts ...
    assert own[1]["low"] < own[0]["high"]  # ... though the two arms' own intervals overlap
    unpaired = np.hypot(*[o["high"] - o["low"] for o in own])  # the width were the arms' samples independent
    assert d["high"] - d["low"] < 0.6 * unpaired


def test_ratio_metric_pairs_prompts_eligible_on_either_side():
    """citation_validity counts only answers that cite: A cites on prompts 0-3 (3 valid), B on 2-5 (4 valid)."""
    good, bad = Citation("IB.1", True, True), Citation("SH.1", True, False)

    def arm(cites):
        return [Graded(str(i), "illicit_behaviour", "refuse", "refuse", citations=c) for i, c in enumerate(cites)]

    a = arm([(good,), (good,), (bad,), (good,), (), ()])
    b = arm([(), (), (good,), (good,), (good,), (good,)])
    d = paired_difference(a, b, "citation_validity", n_resamples=400)
    assert d["n"] == 6 and d["mean"] == pytest.approx(4 / 4 - 3 / 4)
    assert per_prompt(a, "citation_validity")["4"] == (0.0, 0.0)
    none = paired_difference(a, arm([()] * 6), "citation_validity")
    assert none == {"mean": None, "low": None, "high": None, "n": 4}  # B never cites: nothing to compare


def test_samples_of_one_prompt_add_up_and_graded_rows_round_trip():
    g = _graded([1, 0, 1])
    twice = g + [Graded(x.prompt_id, x.category, x.label, x.behaviour) for x in g[:1]]
    assert per_prompt(twice, "behaviour_accuracy")["0"] == (2.0, 2.0)
    rows = [x.as_row() for x in [*g, Graded("9", "self_harm", "safe_complete", "safe_complete",
                                           citations=(Citation("SH.2", True, True),), style_ok=False)]]
    assert graded_from_rows(rows) == [*g, Graded("9", "self_harm", "safe_complete", "safe_complete",
                                                 citations=(Citation("SH.2", True, True),), style_ok=False)]
    with pytest.raises(ValueError, match="unknown metric"):
        per_prompt(g, "accuracy")
    with pytest.raises(ValueError, match="one length"):
        paired_bootstrap([1, 0], [1, 1], [1], [1])


# ---- cost per stage (pure) -----------------------------------------------------------------------


def test_stage_tokens_counts_each_step_once_and_each_invocation():
    lines = [{"stage": "gen_sft", "tokens_generated": 100}, {"stage": "gen_sft", "tokens_generated": 50},  # killed, resumed
             {"stage": "sft", "step": 1, "tokens": 10}, {"stage": "sft", "step": 2, "tokens": 12},
             {"stage": "sft", "step": 2, "tokens": 12},  # step 2 again after a resume from step 1's checkpoint
             {"stage": "rl", "step": 1, "tokens_generated": 300, "learner_tokens": 280},
             {"stage": "rl_eval", "step": 1, "tokens_generated": 999}]
    assert stage_tokens(lines, "gen_sft") == {"generated": 150, "learner": None}
    assert stage_tokens(lines, "sft") == {"generated": None, "learner": 22}
    assert stage_tokens(lines, "rl") == {"generated": 300, "learner": 280}
    members = [{"stage": "rl_m1", "step": 1, "tokens_generated": 30, "learner_tokens": 28},  # rl.members' second run
               {"stage": "rl_eval_m1", "step": 1, "tokens_generated": 999}]
    assert stage_tokens(lines + members, "rl") == {"generated": 330, "learner": 308}
    assert stage_tokens(lines, "cai_sft") == {"generated": None, "learner": None}


def test_arm_cost_reads_each_steps_folder(tmp_path):
    io.write_jsonl(tmp_path / "metrics.jsonl", [{"stage": "gen_sft", "tokens_generated": 1000},
                                                {"stage": "sft", "step": 1, "tokens": 40}])
    io.atomic_write_json(tmp_path / "timings.json", {"gen_sft": 12.5, "sft": 30.0})
    other = tmp_path / "compare" / "rl_only"
    io.write_jsonl(other / "metrics.jsonl", [{"stage": "rl", "step": 1, "tokens_generated": 64, "learner_tokens": 60}])
    cost = arm_cost([("gen_sft", tmp_path), ("sft", tmp_path), ("rl", other)])
    assert cost == {"tokens_generated": {"gen_sft": 1000, "rl": 64}, "learner_tokens": {"sft": 40, "rl": 60},
                    "seconds": {"gen_sft": 12.5, "sft": 30.0}}
    assert arm_cost([]) == {"tokens_generated": {}, "learner_tokens": {}, "seconds": {}}


def _write_eval(out: Path, arm: str, graded: list[Graded], spec_in_context=False):
    pq.write_table(pa.Table.from_pylist([g.as_row() for g in graded]), out / "eval" / f"{arm}.parquet")
    summary = summarise(graded, n_resamples=200)
    summary["meta"] = {"prompts": "tinyworld:heldout", "temperature": 0.0, "spec_in_context": spec_in_context}
    io.atomic_write_json(out / "eval" / f"{arm}.json", summary)


def test_table_has_every_arm_paired_against_da(tmp_path):
    out = tmp_path / "compare"
    (out / "eval").mkdir(parents=True)
    correct = {"da": [1] * 18 + [0] * 2, "sft_only": [1] * 14 + [0] * 6, "rl_only": [0] * 10 + [1] * 10,
               "prompting": [1, 0] * 10}
    for arm, c in correct.items():
        _write_eval(out, arm, _graded(c), spec_in_context=arm == "prompting")
    io.write_jsonl(tmp_path / "metrics.jsonl", [{"stage": "gen_sft", "tokens_generated": 2_500_000},
                                                {"stage": "sft", "step": 1, "tokens": 4000}])
    steps = {"da": [("gen_sft", tmp_path), ("sft", tmp_path)], "sft_only": [("gen_sft", tmp_path), ("sft", tmp_path)],
             "rl_only": [], "prompting": []}
    md = write(out, {a: {"doc": a, "model": a, "steps": s} for a, s in steps.items()}, "da", 300, 0).read_text()
    result = json.loads((out / "compare.json").read_text())
    assert list(result["arms"]) == list(correct)
    acc = {a: result["arms"][a]["metrics"]["behaviour_accuracy"] for a in correct}
    assert acc["da"]["vs_da"] is None and acc["da"]["mean"] == pytest.approx(0.9)
    assert acc["sft_only"]["vs_da"]["mean"] == pytest.approx(-0.2) and acc["sft_only"]["vs_da"]["n"] == 20
    assert acc["rl_only"]["vs_da"]["high"] < 0  # wrong on 8 more of the same 20 prompts than da
    assert result["arms"]["prompting"]["spec_in_context"] is True
    assert result["arms"]["sft_only"]["tokens_generated"] == {"gen_sft": 2_500_000}
    for arm in correct:
        assert f"| {arm} | " in md
    assert "| gen_sft 2.5M | sft 4k |" in md and "Δ -0.20 [" in md
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    assert cell({"mean": None}, "da") == "n/a"
    several = {"mean": 0.8, "low": 0.7, "high": 0.9, "sd": 0.05, "vs_da": {"mean": -0.1, "low": -0.2, "high": 0.0}}
    assert cell(several, "da") == "0.80 ± 0.05 [0.70, 0.90]<br>Δ -0.10 [-0.20, +0.00]"  # samples' sd shown


# ---- arms, steps and their recipes ---------------------------------------------------------------


def test_arms_share_steps_and_name_their_folders():
    assert compare.steps_of(["da", "sft_only"]) == ["gen_sft", "sft", "rl"]
    assert compare.steps_of(["sft_only", "rl_only", "prompting"]) == ["gen_sft", "sft", "rl_from_base"]
    recipe = load_recipe("tiny", ["run.dir=/tmp/cmp"])
    assert compare.step_recipe(recipe, "sft") is recipe  # da's steps run in rayda run's own folder
    rl_only = compare.step_recipe(recipe, "rl_from_base")
    assert (rl_only.run.dir, rl_only.rl.init, recipe.rl.init) == ("/tmp/cmp/compare/rl_only", "base", "sft")
    assert compare.model_of(recipe, "sft_only") == "/tmp/cmp/checkpoints/sft"
    assert compare.model_of(recipe, "prompting") == "base"
    assert compare.parse_arms(None) == compare.parse_arms("all") == ["da", "sft_only", "rl_only", "cai_sft_only", "cai", "prompting"]
    assert compare.parse_arms("da, rl_only") == ["da", "rl_only"]
    with pytest.raises(ConfigError, match="unknown key|did you mean"):
        recipe.with_overrides(["rl.inti=base"])


def test_an_arm_rayda_run_evaluated_is_copied_not_evaluated_again(tmp_path):
    recipe = load_recipe("tiny", [f"run.dir={tmp_path}"])
    recipe.save(tmp_path / "recipe.yaml")  # as rayda run pins it
    (tmp_path / "eval").mkdir()
    rl = str(tmp_path / "checkpoints" / "rl")
    for m, path in (("base", "/world/base"), ("sft", str(tmp_path / "checkpoints" / "sft")), ("rl", rl)):
        _write_eval(tmp_path, f"{m}-heldout", _graded([1, 0, 1], start=len(m)))
        report = json.loads((tmp_path / "eval" / f"{m}-heldout.json").read_text())
        report["meta"].update(model=m, model_path=path)
        io.atomic_write_json(tmp_path / "eval" / f"{m}-heldout.json", report)
    assert compare.run_eval_of(recipe, "da") == tmp_path / "eval" / "rl-heldout.json"
    assert compare.run_eval_of(recipe, "sft_only") == tmp_path / "eval" / "sft-heldout.json"
    assert compare.run_eval_of(recipe, "rl_only") is None  # a model rayda run never evaluated
    assert compare.run_eval_of(recipe, "prompting") is None  # the base, but with the spec in context
    # Another recipe in the same folder (fewer held-out prompts, say) evaluates again.
    assert compare.run_eval_of(recipe.with_overrides(["eval.limit=12"]), "da") is None

    report = compare.evaluate_arm(recipe, "da", progress=False)  # copied: no engine starts
    assert report == tmp_path / "compare" / "eval" / "da.json"
    assert report.read_text() == (tmp_path / "eval" / "rl-heldout.json").read_text()
    assert pq.read_table(report.with_suffix(".parquet")).equals(pq.read_table(tmp_path / "eval" / "rl-heldout.parquet"))
    assert "eval_da" in json.loads((tmp_path / "compare" / "timings.json").read_text())


def test_cai_is_three_steps_in_one_folder_with_one_recipe(monkeypatch):
    recipe = load_recipe("tiny", ["run.dir=/tmp/cmp"])
    assert compare.steps_of(["da", "cai"]) == ["gen_sft", "sft", "rl", "cai_sft", "cai_pm", "cai_rl"]
    cai = [compare.step_recipe(recipe, k) for k in ("cai_sft", "cai_pm", "cai_rl")]
    assert cai[0] == cai[1] == cai[2]  # one folder pins one recipe
    r = cai[0]
    assert (r.run.dir, r.rl.init, r.pm.init) == ("/tmp/cmp/compare/cai", *["/tmp/cmp/compare/cai/checkpoints/cai_sft"] * 2)
    assert (r.reward.kind, r.reward.model, recipe.reward.kind) == ("pm", "/tmp/cmp/compare/cai/checkpoints/pm", "judge")
    assert [compare.STEPS[k].stage for k in ("cai_sft", "cai_pm", "cai_rl")] == ["cai_sft", "pm", "rl"]
    assert compare.model_of(recipe, "cai") == "/tmp/cmp/compare/cai/checkpoints/rl"
    # `rayda check --arms` checks each step's own recipe; a model an earlier step writes is not there yet.
    assert compare.step_problems(recipe, list(compare.ARMS)) == []
    monkeypatch.setitem(compare.STEPS, "cai_rl", compare.Step(
        "rl", "rayda.stages.rl:run", "checkpoints/rl/_SUCCESS", "compare/cai", ("rl.init=/tmp/cmp-nowhere/cai_sft",)))
    [(where, message)] = compare.step_problems(recipe, ["da", "cai"])
    assert where == "compare.cai_rl: rl.init" and "/tmp/cmp-nowhere/cai_sft" in message


def test_unknown_arm_is_a_one_line_error(capsys):
    from rayda.check import check
    from rayda.cli import main

    assert compare.arm_problems(["da", "cia"]) == ["unknown arm 'cia'; known arms: da, sft_only, rl_only, cai_sft_only, cai, prompting"]
    assert compare.arm_problems([]) and compare.arm_problems(["da", "da"])
    report = check(load_recipe("tiny"), arms=["da", "cia"])
    assert report.errors == ["compare.arms: unknown arm 'cia'; known arms: da, sft_only, rl_only, cai_sft_only, cai, prompting"]
    assert main(["compare", "--arms", "da,cia", "run.dir=/tmp/h18-never-made"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown arm 'cia'" in err
    assert not Path("/tmp/h18-never-made").exists()
    assert main(["check", "--arms", "da,cia", "run.dir=/tmp/h18-never-made"]) == 2
    assert "unknown arm 'cia'" in capsys.readouterr().out
    assert main(["check", "--arms", "all", "run.dir=/tmp/h18-never-made"]) == 0
    assert "error" not in capsys.readouterr().out.replace("ok: 0 problem", "")


def test_rl_init_base_starts_from_the_policy_without_sft(tmp_path, tiny_world):
    from rayda.stages import rl

    recipe = load_recipe("tiny", [f"run.dir={tmp_path}", "rl.eval_every=0", "prompts.limit=8"])
    with pytest.raises(FileNotFoundError, match="rayda sft"):
        rl.prepare(recipe)
    plan = rl.prepare(recipe.with_overrides(["rl.init=base"]))
    assert plan.sft_path == str(tiny_world.model_dir)
    assert rl.prepare(recipe.with_overrides([f"rl.init={tiny_world.model_dir}"])).sft_path == str(tiny_world.model_dir)


def test_spec_in_context_puts_spec_category_in_the_system_message(tiny_world):
    from rayda import templates
    from rayda.context import RunContext
    from rayda.evaluation.prompt_sets import EvalPrompt
    from rayda.stages.evaluate import load_eval_prompts, with_spec
    from rayda.types import Prompt

    ctx = RunContext(load_recipe("tiny", ["eval.limit=4"]))
    items = load_eval_prompts(ctx, "tinyworld:heldout") + [EvalPrompt(Prompt("x", ({"role": "user", "content": "hi"},), "other"))]
    spec_texts = ctx.spec_texts({it.category for it in items[:4]})
    seen = with_spec(ctx, items)
    for before, after in zip(items[:4], seen):
        assert after.prompt.messages == tuple(templates.generation_messages(before.prompt.messages, spec_texts[before.category]))
        assert after.prompt.messages[0]["role"] == "system" and spec_texts[before.category] in after.prompt.messages[0]["content"]
        assert (after.id, after.label, after.prompt.user_text) == (before.id, before.label, before.prompt.user_text)
    assert seen[4] == items[4]  # outside the spec's categories: no spec to show


# ---- the whole compare on the tiny world (slow) --------------------------------------------------

ARMS = ["da", "sft_only", "rl_only", "cai_sft_only", "cai", "prompting"]


def check_compare(run_dir: Path, spec, base_model: str, run_lines: list[dict], log: str) -> None:
    """What a finished compare of every arm, after `rayda run` in the same folder, must show."""
    result = json.loads((run_dir / "compare" / "compare.json").read_text())
    assert list(result["arms"]) == ARMS

    # da's and sft_only's steps are rayda run's: skipped, nothing logged again in its folder; their
    # evaluations are rayda run's too, copied.
    for stage in ("gen_sft", "sft", "rl"):
        assert f"run: {stage} finished earlier ({run_dir}/" in log, stage
    assert io.read_jsonl(run_dir / "metrics.jsonl") == run_lines
    for arm, model in (("da", "rl"), ("sft_only", "sft")):
        assert pq.read_table(run_dir / "compare" / "eval" / f"{arm}.parquet").equals(
            pq.read_table(run_dir / "eval" / f"{model}-heldout.parquet")), arm
    # da's RL started from that one SFT checkpoint, which sft_only evaluates; rl_only's from the base.
    sft = str((run_dir / "checkpoints" / "sft").resolve())
    assert json.loads((run_dir / "checkpoints" / "rl" / "train_report.json").read_text())["model"] == sft
    assert result["arms"]["sft_only"]["model"] == sft
    rl_only = json.loads((run_dir / "compare" / "rl_only" / "checkpoints" / "rl" / "train_report.json").read_text())
    assert rl_only["model"] == base_model
    assert not (run_dir / "compare" / "rl_only" / "checkpoints" / "sft").exists()
    cai_sft = check_cai(run_dir / "compare" / "cai", spec)

    # Every arm answered the same prompts, and every interval against da is the paired one.
    graded = {a: pq.read_table(run_dir / "compare" / "eval" / f"{a}.parquet").to_pylist() for a in ARMS}
    ids = {a: sorted(r["prompt_id"] for r in rows) for a, rows in graded.items()}
    assert all(ids[a] == ids["da"] for a in ARMS) and len(ids["da"]) == 80
    for arm in ARMS[1:]:
        for metric, entry in result["arms"][arm]["metrics"].items():
            assert entry["vs_da"] == paired_difference(graded["da"], graded[arm], metric, 200, 0)
        entry = result["arms"][arm]["metrics"]["behaviour_accuracy"]
        d = entry["vs_da"]
        assert d["n"] == 80 and d["low"] <= d["mean"] <= d["high"]
        assert d["mean"] == pytest.approx(entry["mean"] - result["arms"]["da"]["metrics"]["behaviour_accuracy"]["mean"])
    # The prompting arm saw the spec; the others did not. Cost per stage, from the stages' own lines.
    assert [result["arms"][a]["spec_in_context"] for a in ARMS] == [False, False, False, False, False, True]
    cost = {a: (result["arms"][a]["tokens_generated"], result["arms"][a]["learner_tokens"]) for a in ARMS}
    assert set(cost["da"][0]) == {"gen_sft", "rl"} and set(cost["da"][1]) == {"sft", "rl"}
    assert cost["sft_only"] == ({"gen_sft": cost["da"][0]["gen_sft"]}, {"sft": cost["da"][1]["sft"]})
    assert set(cost["rl_only"][0]) == {"rl"} and cost["prompting"] == ({}, {})
    assert set(cost["cai"][0]) == set(cost["cai"][1]) == {"cai_sft", "pm", "rl"}
    assert cost["cai_sft_only"] == ({"cai_sft": cost["cai"][0]["cai_sft"]}, {"cai_sft": cost["cai"][1]["cai_sft"]})
    assert result["arms"]["cai_sft_only"]["model"] == cai_sft
    assert all(v > 0 for a in ARMS for part in cost[a] for v in part.values())
    md = (run_dir / "compare" / "compare.md").read_text()
    assert all(f"| {a} | " in md for a in ARMS) and (run_dir / "compare" / "compare.png").exists()


def _reduced():
    """The reduced tiny recipe of the shared run (`e2e_recipe.REDUCED_TINY`), for the sizes the checks expect."""
    from e2e_recipe import REDUCED_TINY

    return load_recipe("tiny", list(REDUCED_TINY))


def check_cai_sft(cai: Path, spec) -> None:
    """What CAI's supervised stage must leave in the cai arm's folder: every prompt answered and revised
    in `cai.rounds` rounds, a row holding the prompt and its final revision only (no spec, no
    critique), each principle a clause of the prompt's category cited by its critique, a revision
    opening on that clause, the revisions' labelled behaviour above the originals', and one SFT step
    line per step (`sft.max_steps`)."""
    r = _reduced()
    n_prompts, rounds = r.prompts.limit, r.cai.rounds
    data, model = cai / "cai_data", cai / "checkpoints" / "cai_sft"
    for f in (data / "_SUCCESS", data / "accepted.parquet", data / "dropped.parquet", model / "_SUCCESS",
              model / "model.safetensors", model / "config.json", model / "tokenizer.json"):
        assert f.exists(), f
    assert len(list((data / "parts").glob("part-*.parquet"))) == -(-n_prompts // r.cai.shard_size)
    acc, dropped = (pq.read_table(data / f).to_pylist() for f in ("accepted.parquet", "dropped.parquet"))
    assert len(acc) + len(dropped) == n_prompts and 6 * len(acc) >= 5 * n_prompts
    clauses, revised = spec.clauses(), 0
    for row in acc:
        assert [m["role"] for m in row["messages"]] == ["user", "assistant"]  # no system turn: no spec, no critique
        assert row["messages"][-1]["content"] and row["messages"][-1]["reasoning_content"]
        assert row["rounds"] == rounds and len(row["principles"]) == len(row["critiques"]) == len(row["changes"]) == rounds
        assert all(clauses[c][0].id == row["category"] for c in row["principles"])
        assert all(c in text for c, text in zip(row["principles"], row["critiques"]))
        assert row["original"] and row["spec_hash"] == spec.content_hash and row["template_hash"] == cq.CAI_TEMPLATE_HASH
        assert row["generator_model"] == "tinyworld" and row["critic_kind"] == "rubric"
        for principle, change, text in zip(row["principles"], row["changes"], row["revision_texts"]):
            assert text.startswith(f"<think>Clause {principle} applies.") if change else text == ""
            revised += change
    assert revised > 0
    lines = io.read_jsonl(cai / "metrics.jsonl")
    [gen] = [x for x in lines if x["stage"] == "cai_sft" and "step" not in x]
    steps = [x for x in lines if x["stage"] == "cai_sft" and "step" in x]
    assert gen["prompts"] == gen["rows"] == n_prompts and gen["tokens_generated"] > 0 and gen["critic_errors"] == 0
    assert gen["accuracy_after"] > gen["accuracy_before"]
    assert [x["step"] for x in steps] == list(range(1, r.sft.max_steps + 1)) and all(x["learner_tokens"] > 0 for x in steps)
    assert stage_tokens(lines, "cai_sft") == {"generated": gen["tokens_generated"], "learner": sum(x["learner_tokens"] for x in steps)}


def check_cai_sft_resumes(run_dir: Path, main, capsys) -> None:
    """A lost part of CAI's data (its last part: 32 of the reduced recipe's 160 prompts) and no `_SUCCESS`: `rayda cai-sft` in the cai arm's
    folder, with the compare's recipe for that step, redoes only that part's prompts and trains nothing again."""
    from e2e_recipe import reduced_tiny

    cai = run_dir / "compare" / "cai"
    data = cai / "cai_data"
    r = _reduced()
    n, last = r.prompts.limit, -(-r.prompts.limit // r.cai.shard_size) - 1
    lost = n - last * r.cai.shard_size
    sft_lines = len([x for x in io.read_jsonl(cai / "metrics.jsonl") if x["stage"] == "cai_sft" and "step" in x])
    (data / "parts" / f"part-{last:05d}.parquet").unlink()
    (data / "_SUCCESS").unlink()
    step = [o.format(run_dir=run_dir) for o in compare.CAI]
    assert main(["cai-sft", "tiny", *reduced_tiny(cai), *step]) == 0, capsys.readouterr().err[-3000:]
    out = capsys.readouterr().out
    assert f"{n} prompts, {n - lost} already done, {lost} to answer and revise" in out and "is complete (_SUCCESS); skipping" in out
    lines = io.read_jsonl(cai / "metrics.jsonl")
    again = [x for x in lines if x["stage"] == "cai_sft" and "step" not in x][-1]
    assert (again["rows"], again["resumed"], again["prompts"]) == (lost, n - lost, n)
    assert len([x for x in lines if x["stage"] == "cai_sft" and "step" in x]) == sft_lines
    assert len(pq.read_table(data / "accepted.parquet")) + len(pq.read_table(data / "dropped.parquet")) == n


def check_cai(cai: Path, spec) -> str:
    """What the cai arm's folder must hold: the preference model's pairs sampled from the CAI SFT model
    and judged by the rubric, a sequence classifier trained on them with its held-out pair accuracy, RL
    from the CAI SFT model rewarded by it (its logit logged per step, rewards in (0, 1)). Returns the CAI
    SFT model's folder."""
    from rayda.stages import pm

    cai_sft = str((cai / "checkpoints" / "cai_sft").resolve())
    n_prompts = _reduced().prompts.limit
    check_cai_sft(cai, spec)
    out = cai / "checkpoints" / "pm"
    assert (out / "_SUCCESS").exists() and (out / "model.safetensors").exists()
    assert json.loads((out / "config.json").read_text())["architectures"] == ["LlamaForSequenceClassification"]
    assert (cai / "pm_data" / "_SUCCESS").exists() and list((cai / "pm_data" / "parts").glob("part-*.parquet"))
    kept = pm.read_kept(cai / "pm_data")
    assert {r["split"] for r in kept} == {"train", "heldout"}
    assert all(r["principle"] and json.loads(r["provenance"])["judge_kind"] == "rubric" for r in kept)
    lines = [x for x in io.read_jsonl(cai / "metrics.jsonl") if x["stage"] == "pm"]
    pairs = next(x for x in lines if x.get("phase") == "pairs")
    assert pairs["tokens_generated"] > 0 and pairs["prompts"] == n_prompts and sum(pairs["kept"].values()) == len(kept)
    assert all(x["learner_tokens"] > 0 for x in lines if "step" in x) and any("step" in x for x in lines)
    report = next(x for x in lines if x.get("phase") == "report")
    assert 0.0 <= report["heldout_accuracy"] <= 1.0 and report["heldout"]["pairs"] > 0
    assert json.loads((out / "pm_report.json").read_text())["heldout_accuracy"] == report["heldout_accuracy"]
    assert json.loads((out / "pm_report.json").read_text())["model"] == cai_sft  # pairs sampled from the CAI SFT model

    assert json.loads((cai / "checkpoints" / "rl" / "train_report.json").read_text())["model"] == cai_sft
    rl = [x for x in io.read_jsonl(cai / "metrics.jsonl") if x["stage"] == "rl"]
    assert rl and all("reward_pm_logit" in x and x["judge_errors"] == 0 for x in rl)
    assert any(x["reward_std"] > 0 for x in rl) and any(x["groups_with_signal"] > 0 for x in rl)
    judged = [x["reward"] for x in io.read_jsonl(cai / "rl_samples.jsonl") if not x["malformed"]]
    assert judged and all(0.0 < r < 1.0 for r in judged)  # sigmoid of the preference model's logit
    return cai_sft


@pytest.mark.slow
@pytest.mark.timeout(3000)  # RL from the base, CAI's three steps, four evaluations, after the shared reduced run
def test_compare_after_rayda_run_on_the_tiny_world(reduced_run, spec, tiny_world, ray_local, tmp_path, capsys):
    """`rayda compare` in the folder of the session's reduced `rayda run` (tests/e2e_recipe.py), as a user
    runs it after `rayda run`: da and sft_only are that run's models and evaluations, reused; rl_only
    trains from the base in compare/rl_only; cai runs cai-sft, pm and RL against the preference model in
    compare/cai; prompting evaluates the base with the spec in context. The CLI's `main` runs in this
    process on the session's Ray (its own process would start Ray and import the stack again), with
    `rl.eval_every=0`: RL's watch only measures (`rl.select: last`), so the run's folder still takes the
    recipe, and its two RL arms skip the watch's 2 x 640 answers (the run's own watch is test_run_e2e's).
    Last, the cai arm's data loses a part and `rayda cai-sft` resumes it there (`check_cai_sft_resumes`).
    (CAI's supervised stage is checked here rather than in a run of its own: 50 s less.)"""
    from e2e_recipe import reduced_tiny

    from rayda.cli import main

    run_dir = reduced_run["run_dir"]
    assert reduced_run["rc"] == 0, reduced_run["log"][-4000:]
    run_lines = io.read_jsonl(run_dir / "metrics.jsonl")
    rc = main(["compare", "tiny", *reduced_tiny(run_dir), "rl.eval_every=0"])
    out = capsys.readouterr()
    assert rc == 0, f"exit {rc}:\n{out.err[-4000:]}\n{out.out[-4000:]}"
    check_compare(run_dir, spec, str(tiny_world.model_dir), run_lines, out.out)
    check_cai_sft_resumes(run_dir, main, capsys)
