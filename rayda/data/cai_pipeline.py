"""The per-batch work of `rayda cai-sft`'s Ray Data pipeline (built in `rayda/stages/cai_sft.py`):

    prompts (from_items, one block per generator batch)
      -> map_batches(Reviser, actor pool "rollout")     the base answers WITHOUT the spec; then, for each
                                                         of `cai.rounds` rounds: sample a principle, ask a
                                                         critic actor (pool "judge") for critiques, and
                                                         regenerate the answers the critics want changed
      -> the driver iterates the stream and writes finished parts (`rayda.data.parts`)

A prompt's record keeps the SFT row (its own turns -> the final revision's reasoning and answer) and
its provenance: the original answer, each round's principle, critique and revision. A final revision
that is not well formed (`reasoning.split`) is dropped, with its reason. No spec text is ever in the
base's context: it answers the prompt's own turns, and revises with its earlier answer and a critique.
"""

from __future__ import annotations

import json
import time

import pyarrow as pa

from rayda import critique as cq
from rayda import reasoning
from rayda.behaviour import classify
from rayda.data.gen_pipeline import MESSAGE, actor_id, prompt_from_json
from rayda.data.gen_rows import stable_seed

ACCEPTED, DROPPED = "accepted", "dropped"


def answer_seed(run_seed: int, prompt_id: str, round_: int = 0) -> int:
    """Seed of the base's answer (round 0) or of its revision in round `round_`."""
    return stable_seed(run_seed, "cai_answer", prompt_id, round_)


def principle_seed(run_seed: int, prompt_id: str, round_: int) -> int:
    return stable_seed(run_seed, "cai_principle", prompt_id, round_)


def critique_seed(run_seed: int, prompt_id: str, round_: int) -> int:
    return stable_seed(run_seed, "cai_critique", prompt_id, round_)


# ---- the critic's side (called in a critic actor) --------------------------------------------------


def critique_batch(judge, spec, items: list[dict], seeds: list[int]) -> list[dict]:
    """Critiques (`Critique.to_dict`) of items {"prompt" (JSON), "text", "principle"}: rule-based when
    `judge` is None (the rubric judge's critic), else written by the llm/http judge under
    `critique.CRITIQUE_SCHEMA` (`Judge.label` is the judges' call for a JSON answer to a chat)."""
    prompts = [prompt_from_json(it["prompt"]) for it in items]
    if judge is None:
        return [cq.rule_critique(spec, p, it["text"], it["principle"]).to_dict() for p, it in zip(prompts, items)]
    chats = [cq.critique_messages(spec, p, it["text"], it["principle"]) for p, it in zip(prompts, items)]
    answers = judge.label(chats, cq.CRITIQUE_SCHEMA, 1, seeds)
    out = []
    for it, per in zip(items, answers):
        raw, error = per[0]
        c = cq.Critique(it["principle"], False, "", error=f"critic: {error}") if error else cq.parse_critique(raw, it["principle"])
        out.append(c.to_dict())
    return out


# ---- the generator's side (called in a Reviser actor) ----------------------------------------------


def revise_batch(engine, rows: list[dict], cai, spec, critique_fn, run_seed: int, provenance: dict) -> list[dict]:
    """Answer, then `cai.rounds` rounds of critique and revision, for each prompt row; one part row each.

    `critique_fn(items, seeds)` returns `critique_batch`'s dicts (a critic actor, or the function itself
    in tests)."""
    t0 = time.perf_counter()
    prompts = [prompt_from_json(r["prompt"]) for r in rows]
    sampling = dict(n=1, temperature=cai.temperature, max_tokens=cai.max_tokens)
    first = engine.chat([list(p.messages) for p in prompts], seeds=[answer_seed(run_seed, p.id) for p in prompts], **sampling)
    texts = [s[0].text for s in first]
    tokens = [len(s[0].token_ids) for s in first]
    original = list(texts)
    history: list[list[dict]] = [[] for _ in prompts]
    for rnd in range(1, cai.rounds + 1):
        items = [{"prompt": r["prompt"], "text": t, "principle": cq.sample_principle(spec, p.category, principle_seed(run_seed, p.id, rnd))}
                 for r, p, t in zip(rows, prompts, texts)]
        critiques = [cq.Critique(**c) for c in critique_fn(items, [critique_seed(run_seed, p.id, rnd) for p in prompts])]
        todo = [i for i, c in enumerate(critiques) if c.change]
        prefixes = {i: cq.revision_prefix(cai.revision_prefix, critiques[i]) for i in todo}
        ids = [engine.render(cq.revision_messages(prompts[i], texts[i], critiques[i]))
               + (engine.tokenizer.encode(prefixes[i], add_special_tokens=False) if prefixes[i] else []) for i in todo]
        revised = engine.generate(ids, seeds=[answer_seed(run_seed, prompts[i].id, rnd) for i in todo], **sampling) if todo else []
        for i, s in zip(todo, revised):
            texts[i], tokens[i] = prefixes[i] + s[0].text, tokens[i] + len(s[0].token_ids)
        for i, c in enumerate(critiques):
            history[i].append({**c.to_dict(), "revision": texts[i] if c.change else None})
    busy = (time.perf_counter() - t0) / max(1, len(rows))
    actor, out = actor_id(), []
    for p, orig, text, hist, n_tok in zip(prompts, original, texts, history, tokens):
        record = decide(spec, p, orig, text, hist, provenance)
        record["generation_seed"] = answer_seed(run_seed, p.id)
        record["generator_actor"] = actor
        out.append({"prompt_id": p.id, "status": record["status"], "record": json.dumps(record, ensure_ascii=False),
                    "gen_actor": actor, "gen_tokens": n_tok, "gen_busy_s": busy,
                    "critic_errors": sum(1 for h in hist if h["error"])})
    return out


def behaviour_of(text: str, spec) -> str | None:
    """The behaviour a completion's final answer shows, or None when it is not well formed."""
    s = reasoning.split(text)
    return classify(s.answer, spec) if s.ok else None


def decide(spec, prompt, original: str, final: str, history: list[dict], provenance: dict) -> dict:
    """One record per prompt: the SFT row (prompt's own turns -> final revision) with its provenance,
    or, when the final revision is not well formed, the dropped row with its reason."""
    s = reasoning.split(final)
    messages = [dict(m, reasoning_content=None) for m in prompt.messages]
    record = {
        "prompt_id": prompt.id, "category": prompt.category, "label": prompt.label,
        "status": ACCEPTED if s.ok else DROPPED, "reason": s.malformed,
        "original": original, "completion": final,
        "rounds": len(history), "revisions": sum(1 for h in history if h["change"]),
        "principles": [h["principle"] for h in history], "critiques": [h["text"] for h in history],
        "changes": [h["change"] for h in history], "critic_errors": [h["error"] or "" for h in history],
        "revision_texts": [h["revision"] or "" for h in history],
        "behaviour_before": behaviour_of(original, spec), "behaviour_after": behaviour_of(final, spec),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **provenance,
    }
    if s.ok:
        messages.append({"role": "assistant", "content": s.answer, "reasoning_content": s.cot})
    record["messages"] = messages
    return record


def accuracy(records: list[dict]) -> dict:
    """Share of labelled prompts whose answer shows the labelled behaviour, before (the base's answer)
    and after revision (a malformed answer counts as wrong), and the shares well formed."""
    labelled = [r for r in records if r.get("label")]
    n = len(labelled)

    def share(pred) -> float | None:
        return round(sum(1 for r in labelled if pred(r)) / n, 4) if n else None

    return {"labelled": n,
            "accuracy_before": share(lambda r: r["behaviour_before"] == r["label"]),
            "accuracy_after": share(lambda r: r["behaviour_after"] == r["label"]),
            "well_formed_before": share(lambda r: r["behaviour_before"] is not None),
            "well_formed_after": share(lambda r: r["behaviour_after"] is not None)}


# ---- final schema --------------------------------------------------------------------------------

PROVENANCE = [
    ("spec_id", pa.string()), ("spec_version", pa.string()), ("spec_hash", pa.string()),
    ("generator_model", pa.string()), ("generator_weights_hash", pa.string()), ("template_hash", pa.string()),
    ("critic_kind", pa.string()), ("critic_model", pa.string()), ("run_seed", pa.int64()), ("generation_seed", pa.int64()),
    ("label_source", pa.string()), ("generator_actor", pa.string()), ("created_at", pa.string()),
]
SCHEMA = pa.schema([
    ("prompt_id", pa.string()), ("messages", pa.list_(MESSAGE)), ("category", pa.string()), ("label", pa.string()),
    ("status", pa.string()), ("reason", pa.string()), ("original", pa.string()), ("completion", pa.string()),
    ("rounds", pa.int64()), ("revisions", pa.int64()), ("principles", pa.list_(pa.string())),
    ("critiques", pa.list_(pa.string())), ("changes", pa.list_(pa.bool_())), ("critic_errors", pa.list_(pa.string())),
    ("revision_texts", pa.list_(pa.string())), ("behaviour_before", pa.string()), ("behaviour_after", pa.string()),
] + PROVENANCE)
"""accepted.parquet and dropped.parquet: the SFT row (`messages`) and how it came to be."""
