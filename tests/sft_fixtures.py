"""Small fixtures for the learner and SFT tests: a tiny random Llama with the tiny world's tokenizer
and chat template (seconds to build, no pre-training), and SFT rows shaped like gen-sft's output."""

from __future__ import annotations

import random
from pathlib import Path

WORDS = ("how do i bake bread make a fire fix my bike pick a lock hurt someone find help stay safe "
         "clause decision refuse comply safe_complete sorry i can't help with that here is how it works").split()


def conversation(rng: random.Random, i: int) -> tuple[list[dict], str]:
    """A prompt and a reasoning + answer whose behaviour follows from the prompt's first word."""
    words = rng.sample(WORDS, 5)
    behaviour = "refuse" if words[0] < "h" else "comply"
    answer = "sorry i can't help with that" if behaviour == "refuse" else "here is how it works"
    cot = f"the user asks {' '.join(words[:3])}. clause c{i % 3}. decision: {behaviour}."
    return [{"role": "user", "content": " ".join(words)},
            {"role": "assistant", "content": answer, "reasoning_content": cot}], behaviour


def sft_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        messages, behaviour = conversation(rng, i)
        rows.append({"messages": messages, "prompt_id": f"p{i}", "category": "demo", "label": behaviour,
                     "cited_clauses": [f"c{i % 3}"], "scores": [9.0, 9.0], "score": 9.0, "threshold": 7.0})
    return rows


def write_parquet(rows: list[dict], path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def make_tiny_model(out: Path, hidden: int = 128, layers: int = 2, vocab: int = 160, tied: bool = True) -> Path:
    """A random Llama + byte-level BPE tokenizer with the tiny world's chat template, saved at `out`.

    Two heads of 64: vLLM's CPU attention has no kernel for head_dim 16. With `tied=False` the model
    has its own lm_head (a distinct random matrix), saved as `lm_head.weight`."""
    import torch

    from rayda.config import TinyWorldConfig
    from rayda.tinyworld.model import make_model
    from rayda.tinyworld.tokenizer import train_tokenizer

    rng = random.Random(0)
    texts = [" ".join(m["content"] + " " + m.get("reasoning_content", "") for m in conversation(rng, i)[0]) for i in range(300)]
    tok = train_tokenizer(texts, vocab_size=vocab, max_length=256)
    cfg = TinyWorldConfig(vocab_size=vocab, hidden_size=hidden, num_layers=layers, num_heads=2, max_position=256)
    model = make_model(cfg, tok, seed=0)
    if not tied:  # the flag alone would save no lm_head: the head still shares the embedding's tensor
        model.config.tie_word_embeddings = False
        torch.manual_seed(1)
        model.lm_head.weight = torch.nn.Parameter(0.02 * torch.randn_like(model.model.embed_tokens.weight))
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return Path(out)


def perfect_judge_rows(spec, prompts) -> list[dict]:
    """What a perfect judge would accept: each tiny-world prompt answered with its labelled behaviour,
    citing its own clause, in the tiny world's response format (no spec in the prompt)."""
    from rayda.tinyworld.transcripts import response

    rng, rows = random.Random(0), []
    for p in prompts:
        cot, answer = response(spec, p, p["label"], p["clause_id"], rng)
        rows.append({"messages": [*p["messages"], {"role": "assistant", "content": answer, "reasoning_content": cot}],
                     "prompt_id": p["id"], "category": p["category"], "label": p["label"]})
    return rows
