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

    def compare(self, pairs, principles, seeds):
        """k votes per pair of final answers (`rayda.judges.base.Judge.compare`): `rayda pm`'s pairs."""
        votes = self.judge.compare(pairs, principles, self.k, seeds)
        errors = sum(1 for vs in votes for v in vs if v is None)
        metrics.judge_verdicts(sum(len(vs) for vs in votes) - errors, errors)
        return votes

    def filter(self, requests, seeds):
        return self.judge.filter(requests, self.k, seeds)


class LabelWorker(JudgeWorker):
    """`rayda label`'s Ray Data callable: k votes per prompt row from an llm or http judge."""

    def __init__(self, cfg, spec, spec_texts: dict, model: str | None = None, run_seed: int = 0):
        super().__init__(cfg, spec, spec_texts, model, run_seed=run_seed)
        from rayda import labeling

        self.labeling = labeling
        self.schema = labeling.label_schema(spec)

    def __call__(self, batch: pa.Table) -> pa.Table:
        import json

        from rayda.data.gen_rows import stable_seed

        rows = batch.to_pylist()
        chats = [self.labeling.label_messages(self.judge.spec, json.loads(r["messages"])) for r in rows]
        seeds = [stable_seed(self.run_seed, "label", r["id"]) for r in rows]
        answers = self.judge.label(chats, self.schema, self.k, seeds)
        votes = [[self.labeling.parse_vote(text, err) for text, err in per] for per in answers]
        errors = sum(1 for per in votes for v in per if "error" in v)
        metrics.judge_verdicts(sum(len(per) for per in votes) - errors, errors)
        return pa.table({"id": [r["id"] for r in rows], "votes": [json.dumps(v) for v in votes]})
