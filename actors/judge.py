"""The judge actor: one judge (rubric, llm or http) built once, serving batches.

A Ray Data callable class in gen-sft (FILTER view through `gen_pipeline.judge_batch`); RL wraps it
with `ray.remote` and calls `reward` with `RewardRequest`s, which carry no chain of thought.
"""

from __future__ import annotations

import pyarrow as pa

from rayda import metrics
from rayda.data import gen_pipeline
from rayda.judges import make_judge


class JudgeWorker:
    def __init__(self, cfg, spec, spec_texts: dict, model: str | None = None, threshold: float = 0.0,
                 provenance: dict | None = None, run_seed: int = 0):
        self.judge = make_judge(cfg, spec, spec_texts, model)
        self.k, self.threshold, self.provenance, self.run_seed = cfg.k, threshold, provenance or {}, run_seed

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = gen_pipeline.judge_batch(self.judge, batch.to_pylist(), self.k, self.threshold, self.provenance, self.run_seed)
        errors = sum(r["judge_errors"] for r in rows)
        metrics.judge_verdicts(sum(r["judge_verdicts"] for r in rows) - errors, errors)
        return pa.Table.from_pylist(rows)

    def reward(self, requests, seeds):
        verdicts = self.judge.reward(requests, self.k, seeds)
        errors = sum(1 for vs in verdicts for v in vs if not v.ok)
        metrics.judge_verdicts(sum(len(vs) for vs in verdicts) - errors, errors)
        return verdicts

    def filter(self, requests, seeds):
        return self.judge.filter(requests, self.k, seeds)
