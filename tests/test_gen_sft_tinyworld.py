"""The tiny recipe produces accepted SFT rows, with the rubric judge (the rows of the session's shared
reduced run) and with the tiny model as llm judge."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from e2e_recipe import reduced_tiny
from rayda.config import load_recipe
from rayda.judges.rubric import restates
from rayda.stages import gen_sft
from rayda.tinyworld.prompts import split_rows

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def _run(tmp_path, *over):
    recipe = load_recipe("tiny", [f"run.dir={tmp_path / 'run'}", *over])
    return recipe, gen_sft.run(recipe, progress=False)


def _metrics(tmp_path):
    return json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])


@pytest.mark.timeout(2400)  # the shared run, if no test started it before
def test_rubric_judge_accepts_rows_with_provenance(reduced_run, spec):
    """The rows of the session's shared run of the reduced tiny recipe (rubric judge, k = 3, 160 prompts)."""
    recipe = load_recipe("tiny", reduced_tiny(reduced_run["run_dir"]))
    out = reduced_run["run_dir"] / "sft_data"
    acc = pq.read_table(out / "accepted.parquet").to_pylist()
    rej = pq.read_table(out / "rejected.parquet").to_pylist()  # may be empty: pyarrow reads that, datasets does not
    assert acc and len(acc) + len(rej) == 160
    spec_texts = {c: spec.compile(c) for c in spec.category_ids}
    clause_texts = [cl.text.strip() for c in spec.categories for cl in c.clauses]
    subject = {r["id"]: r["subject"] for r in split_rows(spec, "train")}
    for row in acc:
        assert restates(row["messages"][-1]["reasoning_content"], subject[row["prompt_id"]])  # the judge read the request
        assert row["score"] == min(row["scores"]) >= row["threshold"] and len(row["scores"]) == recipe.judge.k
        assert row["messages"][-1]["role"] == "assistant" and row["messages"][-1]["reasoning_content"]
        for m in row["messages"]:
            if m["role"] == "user":  # the spec was stripped from the kept prompt
                assert not any(t in m["content"] for t in spec_texts.values())
                assert not any(t[:60] in m["content"] for t in clause_texts)
        assert row["spec_hash"] == spec.content_hash and row["template_hash"] and row["generator_weights_hash"]
        assert row["judge_kind"] == "rubric" and row["label"] and row["cited_clauses"]
    assert {r["reason"] for r in rej} <= {"malformed", "below_threshold", "judge_error", "spec_leak"}
    m = [x for x in map(json.loads, (reduced_run["run_dir"] / "metrics.jsonl").read_text().splitlines()) if x["stage"] == "gen_sft"][-1]
    assert m["accepted"] == len(acc) and m["judge_error_rate"] == 0.0 and m["tokens_generated"] > 0


def test_llm_judge_every_verdict_parses(ray_local, tiny_world, tmp_path):
    # The engines' KV caches capped at 4% of the machine's memory (about 1 GB here): at the recipe's 20%
    # each is sized for 256 full-length sequences (the judge's 4.3 GB at 2,048 tokens, the generator's 2.1 GB),
    # which this test's 32 samples and 64 verdicts never fill but the engines' processes held (5.0 and 2.9 GB
    # resident), beside the other pytest-xdist worker's tests.
    recipe, result = _run(
        tmp_path, "prompts.limit=8", "gen_sft.samples_per_prompt=4", "judge.kind=llm", "judge.k=2", "judge.max_model_len=2048",
        "judge.gpu_memory_utilization=0.04",
        "gen_sft.gpu_memory_utilization=0.04", "gen_sft.threshold=0.3",
    )
    m = _metrics(tmp_path)
    assert m["judge_verdicts"] > 0 and m["judge_errors"] == 0, m  # structured output: every verdict parses
    assert result.accepted > 0, m
    acc = pq.read_table(result.out_dir / "accepted.parquet").to_pylist()
    assert all(r["judge_kind"] == "llm" and r["judge_model"] and r["score"] == min(r["scores"]) for r in acc)
