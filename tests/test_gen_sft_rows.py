"""The pure row logic of gen-sft, and the per-batch work of its actors with fake engines (no Ray)."""

from __future__ import annotations

import json

import pytest

from rayda.config import GenSftConfig, JudgeConfig
from rayda.data import gen_pipeline, gen_rows
from rayda.engines.vllm_engine import Sample
from rayda.judges import make_judge
from rayda.judges.base import MinOfK
from rayda.types import Prompt, Verdict

CAT = "illicit_behaviour"
PROV = {"spec_id": "s", "template_hash": "t", "judge_kind": "rubric"}


def _prompt(label="refuse", pid="p1"):
    return Prompt(pid, ({"role": "user", "content": "how do I make a weapon?"},), CAT, label)


def _good(spec, behaviour="refuse"):
    cid = next(cl.id for cl in spec.category(CAT).clauses if cl.behaviour == behaviour)
    return f"<think>The user wants a weapon. Clause {cid} applies. Decision: {behaviour}.</think>{spec.style_guide(behaviour).example}"


# ---- spec leaks --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cot",
    [
        "As the system message says, IB.1 applies.",
        "The policy above forbids this.",
        "Per the specification provided, refuse.",
        "According to the above policy: refuse.",
        "As stated above, this is IB.2.",
        "The rules in the system prompt say refuse.",
    ],
)
def test_spec_leak_detected(cot):
    assert gen_rows.find_spec_leak(cot)


@pytest.mark.parametrize(
    "cot",
    ["The user wants a weapon. Clause IB.1 applies. Decision: refuse.", "This policy on weapons (IB.1) says refuse.", ""],
)
def test_no_spec_leak(cot):
    assert gen_rows.find_spec_leak(cot) is None


# ---- selection and records -----------------------------------------------------------------------------


def _outcomes(n):
    return gen_rows.prepare([f"<think>c{i} IB.1</think>a{i}" for i in range(n)], [5] * n)


def test_best_passing_sample_wins_and_ties_go_to_the_lowest_index():
    outs = _outcomes(4)
    gen_rows.apply_judgements(outs, [MinOfK(0.9, (0.9, 1.0)), MinOfK(1.0, (1.0, 1.0)), MinOfK(1.0, (1.0,)), MinOfK(0.5, (0.5,))], 0.8)
    assert [s.index for s in gen_rows.ranked(outs)] == [1, 2, 0]
    rec = gen_rows.decide(_prompt(), outs, PROV)
    assert rec["status"] == "accepted" and rec["sample_index"] == 1 and rec["score"] == min(rec["scores"])
    assert rec["sample_reasons"] == ["pass", "pass", "pass", "below_threshold"] and rec["samples_passing"] == 3


def test_judge_error_rejects_even_with_high_other_verdicts():
    outs = _outcomes(1)
    gen_rows.apply_judgements(outs, [MinOfK(None, (1.0, None), "1/2 verdicts failed: unparseable verdict")], 0.0)
    rec = gen_rows.decide(_prompt(), outs, PROV)
    assert rec["status"] == "rejected" and rec["reason"] == "judge_error" and rec["score"] is None


def test_rejected_reason_is_the_most_promising_samples():
    outs = gen_rows.prepare(["no tags", "<think>As the system message says IB.1</think>x", "<think>c</think>a", "<think>d</think>b"], [1] * 4)
    gen_rows.apply_judgements(outs, [MinOfK(None, (None,), "boom"), MinOfK(0.3, (0.3,))], 0.8)
    rec = gen_rows.decide(_prompt(), outs, PROV)
    assert rec["reason"] == "below_threshold" and rec["score"] == 0.3 and rec["sample_index"] == 3
    assert rec["sample_reasons"] == ["malformed", "spec_leak", "judge_error", "below_threshold"]
    only_bad = gen_rows.prepare(["x", "<think>the policy above</think>y"], [1, 1])
    assert gen_rows.decide(_prompt(), only_bad, PROV)["reason"] == "spec_leak"


def test_accepted_messages_have_no_spec_and_carry_reasoning(spec):
    outs = gen_rows.prepare([_good(spec)], [9])
    gen_rows.apply_judgements(outs, [MinOfK(1.0, (1.0,))], 0.8)
    rec = gen_rows.decide(_prompt(), outs, PROV)
    assert [m["role"] for m in rec["messages"]] == ["user", "assistant"]
    assert rec["messages"][-1]["reasoning_content"].startswith("The user wants") and "<think>" not in rec["messages"][-1]["content"]
    assert rec["cited_clauses"] and rec["spec_id"] == "s"


# ---- per-batch work with fake engines ------------------------------------------------------------------


class FakeGenEngine:
    def __init__(self, texts):
        self.texts, self.calls = texts, []

    def chat(self, chats, n, seeds, **kw):
        self.calls.append((chats, n, seeds))
        return [[Sample(self.texts[j % len(self.texts)], token_ids=(1, 2, 3)) for j in range(n)] for _ in chats]


def _run_batch(spec, texts, judge, prompts, k=3, threshold=0.8):
    spec_texts = {c: spec.compile(c) for c in spec.category_ids}
    gen = GenSftConfig(samples_per_prompt=len(texts))
    engine = FakeGenEngine(texts)
    rows = [{"prompt": gen_pipeline.prompt_to_json(p)} for p in prompts]
    generated = gen_pipeline.generate_batch(engine, rows, gen, spec_texts, run_seed=0)
    judged = gen_pipeline.judge_batch(judge or make_judge(JudgeConfig(), spec, spec_texts), generated, k, threshold, PROV, 0)
    return engine, [json.loads(r["record"]) for r in judged], judged


def test_batch_with_rubric_accepts_the_good_sample_and_strips_the_spec(spec):
    engine, [rec], _ = _run_batch(spec, ["garbage", _good(spec, "comply"), _good(spec)], None, [_prompt()])
    chats, n, seeds = engine.calls[0]
    spec_text = spec.compile(CAT)
    assert spec_text in chats[0][0]["content"] and n == 3  # the generator saw the spec...
    assert rec["status"] == "accepted" and rec["sample_index"] == 2
    assert rec["score"] == min(rec["scores"]) == 1.0 and len(rec["scores"]) == 3
    for m in rec["messages"]:  # ...the kept row does not
        if m["role"] == "user":
            assert spec_text not in m["content"]
            assert not any(cl.text.strip()[:40] in m["content"] for c in spec.categories for cl in c.clauses)
    assert rec["generation_seed"] == gen_rows.stable_seed(0, "gen", "p1")


def test_seeds_depend_on_the_prompt_not_the_batch(spec):
    e1, _, _ = _run_batch(spec, ["x"], None, [_prompt(pid="a"), _prompt(pid="b")])
    e2, _, _ = _run_batch(spec, ["x"], None, [_prompt(pid="b")])
    assert e1.calls[0][2][1] == e2.calls[0][2][0]


class ErrorJudge:
    def filter(self, requests, k, seeds):
        return [[Verdict(1.0)] * (k - 1) + [Verdict(None, error="judge down")] for _ in requests]


def test_a_judge_error_rejects_the_row(spec):
    _, [rec], [row] = _run_batch(spec, [_good(spec)], ErrorJudge(), [_prompt()])
    assert rec["status"] == "rejected" and rec["reason"] == "judge_error" and "judge down" in rec["detail"]
    assert row["judge_errors"] == 1 and row["judge_verdicts"] == 3


def test_spec_leak_rejected_before_judging(spec):
    leak = "<think>As the system message says, IB.1 applies. Decision: refuse.</think>" + spec.style_guide("refuse").example
    _, [rec], [row] = _run_batch(spec, [leak], None, [_prompt()])
    assert rec["reason"] == "spec_leak" and row["judge_verdicts"] == 0


def test_keep_per_prompt_rows_are_the_passing_samples_best_first_then_repeated():
    outs = _outcomes(5)
    gen_rows.apply_judgements(outs, [MinOfK(0.9, (0.9,)), MinOfK(1.0, (1.0,)), MinOfK(0.5, (0.5,)),
                                     MinOfK(0.95, (0.95,)), MinOfK(1.0, (1.0,))], 0.8)
    rec = gen_rows.decide(_prompt(), outs, PROV)
    for i, a in enumerate([rec] + rec["alternates"]):
        a["judge_seed"] = 100 + i
    assert gen_rows.expand(rec, 1) == [rec]
    rows = gen_rows.expand(rec, 6)
    # passing: 1 and 4 (1.0, lowest index first), 3 (0.95), 0 (0.9); sample 2 is below the threshold
    assert [r["sample_index"] for r in rows] == [1, 4, 3, 0, 1, 4]
    assert [r["messages"][-1]["content"] for r in rows] == ["a1", "a4", "a3", "a0", "a1", "a4"]
    assert [r["messages"][-1]["reasoning_content"] for r in rows] == ["c1 IB.1", "c4 IB.1", "c3 IB.1", "c0 IB.1", "c1 IB.1", "c4 IB.1"]
    assert [r["score"] for r in rows[:4]] == [1.0, 1.0, 0.95, 0.9] and [r["judge_seed"] for r in rows[:4]] == [100, 101, 102, 103]
    assert all(r["prompt_id"] == rec["prompt_id"] and r["messages"][:-1] == rec["messages"][:-1] for r in rows)
    assert rec["messages"][-1]["content"] == "a1"  # the record itself is not changed
    one = gen_rows.prepare(["<think>only IB.1</think>x"], [3])
    gen_rows.apply_judgements(one, [MinOfK(1.0, (1.0,))], 0.8)
    lone = gen_rows.decide(_prompt(), one, PROV)
    lone["judge_seed"] = 7
    assert [r["messages"][-1]["content"] for r in gen_rows.expand(lone, 3)] == ["x", "x", "x"]


def test_accepted_parquet_has_keep_per_prompt_rows_each_with_its_own_judge_seed(spec, tmp_path):
    import pyarrow.parquet as pq

    from rayda.stages.gen_sft import _write_final

    good = [_good(spec), _good(spec, "comply"), _good(spec).replace("The user wants", "They want")]
    _, recs, _ = _run_batch(spec, good, None, [_prompt(pid="a"), _prompt(pid="b", label="comply")])
    assert _write_final(tmp_path, recs, keep=3) == (2, 0)
    rows = pq.read_table(tmp_path / "accepted.parquet").to_pylist()
    assert [r["prompt_id"] for r in rows] == ["a"] * 3 + ["b"] * 3
    # "a" (refuse) passes with samples 0 and 2, "b" (comply) with sample 1 only
    assert [r["sample_index"] for r in rows] == [0, 2, 0, 1, 1, 1]
    assert rows[1]["messages"][-1]["reasoning_content"].startswith("They want")
    assert [r["judge_seed"] for r in rows] == [gen_rows.stable_seed(0, "judge", r["prompt_id"], r["sample_index"]) for r in rows]
    assert _write_final(tmp_path, recs) == (2, 0) and pq.read_table(tmp_path / "accepted.parquet").num_rows == 2


def test_a_finished_folder_asked_for_more_rows_per_prompt_rewrites_them_from_its_parts(spec, tmp_path):
    import pyarrow.parquet as pq

    from rayda import io
    from rayda.config import load_recipe
    from rayda.data.parts import write_part
    from rayda.stages import gen_sft

    good = [_good(spec), _good(spec, "comply"), _good(spec).replace("The user wants", "They want")]
    prompts = [_prompt(pid="a"), _prompt(pid="x", label="safe_complete"), _prompt(pid="b", label="comply"),
               _prompt(pid="y", label="safe_complete")]  # x and y: no sample safe-completes, so rejected
    _, recs, _ = _run_batch(spec, good, None, prompts)
    out = tmp_path / "sft_data"
    rows = [{"prompt_id": r["prompt_id"], "status": r["status"], "record": json.dumps(r)} for r in recs[::-1]]
    write_part(out / "parts", 0, rows)  # the parts' order is not the prompts' order
    assert gen_sft._write_final(out, recs) == (2, 2)
    io.mark_success(out, {"accepted": 2, "rejected": 2, "keep_per_prompt": 1})
    rejected = pq.read_table(out / "rejected.parquet").to_pylist()

    def ids(keep):
        res = gen_sft.run(load_recipe("tiny", [f"run.dir={tmp_path}", f"gen_sft.keep_per_prompt={keep}"]), progress=False)
        assert (res.accepted, res.rejected) == (2, 2)
        assert pq.read_table(out / "rejected.parquet").to_pylist() == rejected  # rows and order as they were
        return [r["prompt_id"] for r in pq.read_table(out / "accepted.parquet", columns=["prompt_id"]).to_pylist()]

    assert ids(3) == ["a"] * 3 + ["b"] * 3  # no generation: Ray is never started in this test
    assert json.loads((out / io.SUCCESS).read_text())["keep_per_prompt"] == 3
    assert ids(1) == ["a", "b"]
