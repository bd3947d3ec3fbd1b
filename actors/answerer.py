"""The evaluation generator: one vLLM engine that answers prompts WITHOUT the spec in context.

A Ray Data callable class (`map_batches(Answerer, ...)`, Ray Data makes the actor pool). The trained
model must recall the policy on its own, so the chat is the user's messages and nothing else.

Each row names the model that answers it, so one pipeline can evaluate several models (`rayda run`'s
base, SFT and RL). When the next model is a checkpoint of the same architecture and tokenizer as the
engine's (`rayda.engines.checkpoints.same_family`), its weights are loaded into the running engine
(`VllmEngine.sync_weights`, as RL's rollouts are); otherwise a new engine starts for it.
"""

from __future__ import annotations

import dataclasses
import gc
import json

import pyarrow as pa

from rayda.engines.checkpoints import same_family
from rayda.engines.vllm_engine import EngineConfig, VllmEngine


class Answerer:
    def __init__(self, engine_cfg: EngineConfig, max_tokens: int, temperature: float, seed: int = 0):
        self.cfg = dataclasses.replace(engine_cfg, weight_sync=True)
        self.engine = VllmEngine(self.cfg)
        self.model = self.cfg.model
        self.max_tokens, self.temperature, self.seed = max_tokens, temperature, seed

    def _use(self, model: str) -> None:
        if model == self.model:
            return
        if same_family(self.model, model):
            self.engine.sync_weights(model)
        else:
            self.engine = None
            gc.collect()  # the old engine's memory goes before the new one takes its own
            self.engine = VllmEngine(dataclasses.replace(self.cfg, model=model))
        self.model = model

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        out = []
        for model in dict.fromkeys(r["model"] for r in rows):  # in the order they come
            mine = [r for r in rows if r["model"] == model]
            self._use(model)
            chats = [json.loads(r["messages"]) for r in mine]
            seeds = [self.seed + int(r["sample"]) for r in mine]  # the sample's place in its own model's list
            samples = self.engine.chat(chats, n=1, temperature=self.temperature, max_tokens=self.max_tokens, seeds=seeds)
            out += [{"index": r["index"], "completion": s[0].text, "tokens": len(s[0].token_ids)} for r, s in zip(mine, samples)]
        return pa.Table.from_pylist(out)
