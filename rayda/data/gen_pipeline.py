"""The per-batch work of SFT data generation's Ray Data pipeline (built in `rayda/stages/gen_sft.py`):

    prompts (from_items, one block per generator batch)
      -> map_batches(Generator, actor pool "rollout")   n samples per prompt, spec in the system turn
      -> map_batches(JudgeWorker, actor pool "judge")     split, spec-leak check, k FILTER verdicts,
                                                          min-of-k, choose, one record per prompt
      -> the driver iterates the stream and writes finished parts (see stages/gen_sft.py)

Rows between the stages carry JSON strings (`prompt`, `samples`, `record`) so Arrow never has to
reconcile nested schemas across blocks; the typed schemas apply only to the final Parquet files.
Ray Data restarts a killed pool actor and retries its tasks (`max_restarts=-1`,
`max_task_retries=-1` are its defaults for actor pools), so losing a generator costs time, not rows.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict

import pyarrow as pa

from rayda.data import gen_rows
from rayda.judges.base import min_of_k
from rayda.types import Prompt


def prompt_to_json(p: Prompt) -> str:
    return json.dumps(asdict(p), ensure_ascii=False)


def prompt_from_json(s: str) -> Prompt:
    d = json.loads(s)
    return Prompt(d["id"], tuple(d["messages"]), d["category"], d.get("label"), d.get("subject"))


def actor_id() -> str:
    ray = sys.modules.get("ray")  # inside an actor Ray is loaded; elsewhere do not import it for this
    actor = ray.get_runtime_context().get_actor_id() if ray is not None and ray.is_initialized() else None
    return actor or f"pid-{os.getpid()}"


# ---- per-batch work (called by the thin actors in actors/) ---------------------------------------


def generate_batch(engine, rows: list[dict], gen, spec_texts: dict[str, str], run_seed: int) -> list[dict]:
    """Sample `gen.samples_per_prompt` completions for each prompt row; adds `samples` and timings."""
    from rayda import templates

    t0 = time.perf_counter()
    prompts = [prompt_from_json(r["prompt"]) for r in rows]
    chats = [templates.generation_messages(p.messages, spec_texts[p.category]) for p in prompts]
    results = engine.chat(
        chats,
        n=gen.samples_per_prompt,
        temperature=gen.temperature,
        top_p=gen.top_p,
        max_tokens=gen.max_tokens,
        seeds=[gen_rows.stable_seed(run_seed, "gen", p.id) for p in prompts],
    )
    busy = (time.perf_counter() - t0) / max(1, len(rows))
    actor = actor_id()
    out = []
    for r, samples in zip(rows, results):
        payload = [{"text": s.text, "n_tokens": len(s.token_ids), "finish": s.finish_reason} for s in samples]
        out.append({
            "prompt": r["prompt"],
            "samples": json.dumps(payload, ensure_ascii=False),
            "gen_actor": actor,
            "gen_tokens": sum(x["n_tokens"] for x in payload),
            "gen_busy_s": busy,
        })
    return out


def judge_batch(judge, rows: list[dict], k: int, threshold: float, provenance: dict, run_seed: int) -> list[dict]:
    """Split, check, judge (k FILTER verdicts per sample, one call for the whole batch) and decide."""
    t0 = time.perf_counter()
    prompts = [prompt_from_json(r["prompt"]) for r in rows]
    outcomes = []
    for r in rows:
        samples = json.loads(r["samples"])
        outcomes.append(gen_rows.prepare([s["text"] for s in samples], [s["n_tokens"] for s in samples]))
    requests, seeds, owners = [], [], []
    for i, (p, outs) in enumerate(zip(prompts, outcomes)):
        for s, req in zip([o for o in outs if o.judgeable], gen_rows.filter_requests(p, outs)):
            requests.append(req)
            seeds.append(gen_rows.stable_seed(run_seed, "judge", p.id, s.index))
            owners.append(i)
    verdicts = judge.filter(requests, k, seeds) if requests else []
    per_prompt: list[list] = [[] for _ in prompts]
    for i, vs in zip(owners, verdicts):
        per_prompt[i].append(min_of_k(vs))
    errors_by_prompt = [0] * len(prompts)
    for i, vs in zip(owners, verdicts):
        errors_by_prompt[i] += sum(1 for v in vs if not v.ok)
    busy = (time.perf_counter() - t0) / max(1, len(rows))
    out = []
    for i, (r, p, outs) in enumerate(zip(rows, prompts, outcomes)):
        gen_rows.apply_judgements(outs, per_prompt[i], threshold)
        record = gen_rows.decide(p, outs, provenance)
        record["generation_seed"] = gen_rows.stable_seed(run_seed, "gen", p.id)
        for kept in [record] + record.get("alternates", []):
            kept["judge_seed"] = gen_rows.stable_seed(run_seed, "judge", p.id, kept["sample_index"])
        record["generator_actor"] = r["gen_actor"]
        out.append({
            "prompt_id": p.id,
            "status": record["status"],
            "record": json.dumps(record, ensure_ascii=False),
            **{key: v for key, v in r.items() if key.startswith("gen_")},  # generator stats, passed through
            "judge_verdicts": k * len(per_prompt[i]),
            "judge_errors": errors_by_prompt[i],
            "judge_busy_s": busy,
        })
    return out


# ---- final schemas -------------------------------------------------------------------------------

MESSAGE = pa.struct([("role", pa.string()), ("content", pa.string()), ("reasoning_content", pa.string())])
PROVENANCE = [
    ("spec_id", pa.string()), ("spec_version", pa.string()), ("spec_hash", pa.string()),
    ("generator_model", pa.string()), ("generator_weights_hash", pa.string()), ("template_hash", pa.string()),
    ("judge_kind", pa.string()), ("judge_model", pa.string()), ("k", pa.int64()), ("threshold", pa.float64()),
    ("run_seed", pa.int64()), ("generation_seed", pa.int64()), ("judge_seed", pa.int64()),
    ("label_source", pa.string()), ("generator_actor", pa.string()), ("created_at", pa.string()),
]
COMMON = [
    ("prompt_id", pa.string()), ("messages", pa.list_(MESSAGE)), ("category", pa.string()), ("label", pa.string()),
    ("scores", pa.list_(pa.float64())), ("score", pa.float64()), ("sample_index", pa.int64()),
    ("samples_total", pa.int64()), ("samples_passing", pa.int64()), ("sample_reasons", pa.list_(pa.string())),
]
ACCEPTED_SCHEMA = pa.schema(COMMON + [("cited_clauses", pa.list_(pa.string()))] + PROVENANCE)
REJECTED_SCHEMA = pa.schema(COMMON + [("reason", pa.string()), ("detail", pa.string()), ("completion", pa.string())] + PROVENANCE)


def final_table(records: list[dict], schema: pa.Schema) -> pa.Table:
    cols = schema.names
    return pa.Table.from_pylist([{c: r.get(c) for c in cols} for r in records], schema=schema)
