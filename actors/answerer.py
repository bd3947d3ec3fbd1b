"""The evaluation generator: one vLLM engine that answers prompts WITHOUT the spec in context.

A Ray Data callable class (`map_batches(Answerer, ...)`, Ray Data makes the actor pool). The trained
model must recall the policy on its own, so the chat is the user's messages and nothing else.
"""

from __future__ import annotations

import json

import pyarrow as pa

from rayda.engines.vllm_engine import EngineConfig, VllmEngine


class Answerer:
    def __init__(self, engine_cfg: EngineConfig, max_tokens: int, temperature: float, seed: int = 0):
        self.engine = VllmEngine(engine_cfg)
        self.max_tokens, self.temperature, self.seed = max_tokens, temperature, seed

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        chats = [json.loads(r["messages"]) for r in rows]
        seeds = [self.seed + int(r["index"]) for r in rows]
        samples = self.engine.chat(chats, n=1, temperature=self.temperature, max_tokens=self.max_tokens, seeds=seeds)
        return pa.Table.from_pylist(
            [{"index": r["index"], "completion": s[0].text, "tokens": len(s[0].token_ids)} for r, s in zip(rows, samples)]
        )
