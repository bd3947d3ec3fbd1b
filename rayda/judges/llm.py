"""The llm judge: a Hugging Face model served by vLLM inside the judge actor, verdicts forced into the
JSON schema of `rayda.templates.verdict_schema` through structured outputs (xgrammar)."""

from __future__ import annotations

from rayda import templates
from rayda.judges.base import Judge
from rayda.types import Verdict


def verdict_from_sample(sample, view: str, label: str | None) -> Verdict:
    if sample.finish_reason == "length":
        return Verdict(None, error="verdict cut off at max_tokens", raw=sample.text[:2000])
    if sample.finish_reason == "prompt_too_long":
        return Verdict(None, error="judge prompt longer than the judge's context")
    return templates.parse_verdict(sample.text, view, label)


class LLMJudge(Judge):
    kind = "llm"
    needs_label = False

    def __init__(self, spec, spec_texts, model, cfg, engine=None):
        super().__init__(spec, spec_texts, model)
        self.cfg = cfg
        if engine is None:
            from rayda.engines.vllm_engine import EngineConfig, VllmEngine

            engine = VllmEngine(
                EngineConfig(
                    model,
                    max_model_len=cfg.max_model_len,
                    gpu_memory_utilization=cfg.gpu_memory_utilization,
                    structured_outputs=cfg.structured,
                )
            )
        self.engine = engine

    def _judge(self, view, requests, k, seeds):
        schema = templates.verdict_schema(view) if self.cfg.structured else None
        chats = [self.messages(view, r) for r in requests]
        common = dict(temperature=self.cfg.temperature, max_tokens=self.cfg.max_tokens, json_schema=schema)
        if self.cfg.batched_k:
            samples = self.engine.chat(chats, n=k, seeds=list(seeds), **common)
        else:
            # k separate requests per judged item, each with its own seed, sent as one engine batch.
            flat = self.engine.chat(
                [c for c in chats for _ in range(k)],
                n=1,
                seeds=[s * 1000 + j for s in seeds for j in range(k)],
                **common,
            )
            samples = [[flat[i * k + j][0] for j in range(k)] for i in range(len(chats))]
        return [
            [verdict_from_sample(s, view, r.prompt.label) for s in per]
            for r, per in zip(requests, samples)
        ]

    def label(self, chats, schema, k, seeds):
        samples = self.engine.chat(chats, n=k, seeds=list(seeds), temperature=self.cfg.temperature,
                                   max_tokens=self.cfg.max_tokens, json_schema=schema if self.cfg.structured else None)
        return [[(None, "answer cut off at max_tokens") if s.finish_reason == "length" else
                 (None, "prompt longer than the judge's context") if s.finish_reason == "prompt_too_long" else
                 (s.text, None) for s in per] for per in samples]
