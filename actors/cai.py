"""The actors of `rayda cai-sft`: the base that answers and revises, and the critic.

`Reviser` is a Ray Data callable class (`map_batches(Reviser, ...)`, the rollout pool): a `Generator`
whose batches run `cai_pipeline.revise_batch`, asking the critic actors for critiques between rounds.
`Critic` is a plain actor in the judge pool (`rayda.rl.pools.JudgePool` places it): the rubric judge's
rule-based critic, or an llm/http judge writing critiques. All logic lives in `rayda.data.cai_pipeline`.
"""

from __future__ import annotations

import dataclasses

import pyarrow as pa

from rayda import metrics
from rayda.actors.rollout import Generator
from rayda.data import cai_pipeline


class Reviser(Generator):
    def __init__(self, engine_cfg, cai, spec, critics: list, provenance: dict, run_seed: int = 0):
        super().__init__(engine_cfg, run_seed=run_seed)
        self.cai, self.spec, self.critics, self.provenance, self.calls = cai, spec, critics, provenance, 0

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = cai_pipeline.revise_batch(self.engine, batch.to_pylist(), self.cai, self.spec, self._critique,
                                         self.run_seed, self.provenance)
        metrics.tokens_generated(sum(r["gen_tokens"] for r in rows))
        return pa.Table.from_pylist([dict(r, gen_ready_at=self.ready_at) for r in rows])

    def _critique(self, items: list[dict], seeds: list[int]) -> list[dict]:
        import ray

        critic = self.critics[self.calls % len(self.critics)]  # each round's batch to the next critic
        self.calls += 1
        return ray.get(critic.critique.remote(items, seeds))


class Critic:
    def __init__(self, cfg, spec, spec_texts: dict, model: str | None = None, cai=None):
        from rayda.judges import make_judge

        self.spec = spec
        self.judge = None
        if cfg.kind != "rubric":  # the rubric judge's critic is rule-based: no judge object needed
            cfg = dataclasses.replace(cfg, temperature=cai.critic_temperature, max_tokens=cai.critic_max_tokens)
            self.judge = make_judge(cfg, spec, spec_texts, model)

    def critique(self, items: list[dict], seeds: list[int]) -> list[dict]:
        out = cai_pipeline.critique_batch(self.judge, self.spec, items, seeds)
        errors = sum(1 for c in out if c["error"])
        metrics.judge_verdicts(len(out) - errors, errors, pool="judge")
        return out
