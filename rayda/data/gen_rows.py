"""Pure row logic of SFT data generation: from sampled texts and verdicts to accepted/rejected records.

No Ray here; `gen_pipeline.py` calls these from inside the actors, and the unit tests call them directly.

Selection rule (samples_per_prompt > 1): a sample passes when it is well formed, its reasoning does
not point at a spec that will no longer be in context, every one of its k verdicts parsed, and
min-of-k >= threshold. The prompt keeps the passing sample with the highest min-of-k score, the lowest
sample index breaking ties (deterministic, independent of actor timing); its record lists the other
passing samples in the same order (`alternates`), from which `expand` makes `gen_sft.keep_per_prompt`
SFT rows. A prompt with no passing sample is rejected once, with the reason of its most promising
sample, in this order: below_threshold (it was judged), judge_error, spec_leak, malformed;
`sample_reasons` lists all.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass, field

from rayda import reasoning
from rayda.judges.base import MinOfK
from rayda.spec import CITATION
from rayda.types import FilterRequest, Prompt

ACCEPTED, REJECTED = "accepted", "rejected"
MALFORMED, BELOW, JUDGE_ERROR, SPEC_LEAK = "malformed", "below_threshold", "judge_error", "spec_leak"
REASONS = (MALFORMED, BELOW, JUDGE_ERROR, SPEC_LEAK)
_PRECEDENCE = (BELOW, JUDGE_ERROR, SPEC_LEAK, MALFORMED)

# Phrases by which a chain of thought leans on a spec shown in the prompt. After SFT the spec is gone
# from the context, so the model must recall the policy, not point at it.
_LEAK = re.compile(
    r"\b("
    r"(the|this|that) (policy|spec|specification|guidelines?|rules?|system (message|prompt)|instructions?) "
    r"(above|below|provided|given|shown|i was given|in (the|my) (context|prompt))"
    r"|(above|provided|given|following) (policy|spec|specification|guidelines|rules|instructions)"
    r"|(as|like) (the )?(system (message|prompt)|instructions?|policy|spec|specification) (says|said|states|stated|shows|showed)"
    r"|(in|from) the (system (message|prompt)|context window)"
    r"|(as|like) (stated|shown|written|mentioned|given) above"
    r"|(scroll|see|look) (up|above)"
    r")\b",
    re.IGNORECASE,
)


def find_spec_leak(cot: str) -> str | None:
    """The phrase by which `cot` points at a spec in its context (`spec_leak`), or None."""
    m = _LEAK.search(cot or "")
    return m.group(0) if m else None


def stable_seed(*parts) -> int:
    """A 31-bit seed from the parts' text: the same prompt gets the same samples in every run."""
    return int.from_bytes(hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()[:4], "big") & 0x7FFFFFFF


@dataclass
class SampleOutcome:
    index: int
    text: str
    n_tokens: int
    cot: str = ""
    answer: str = ""
    reason: str | None = None
    """None while passing; else one of REASONS."""
    detail: str | None = None
    judged: MinOfK | None = None
    cited: list[str] = field(default_factory=list)

    @property
    def judgeable(self) -> bool:
        return self.reason is None


def prepare(texts: list[str], n_tokens: list[int]) -> list[SampleOutcome]:
    """Split every sample; mark malformed ones and spec leaks (cheap checks, before any judge runs)."""
    out = []
    for i, (text, n) in enumerate(zip(texts, n_tokens)):
        s = reasoning.split(text)
        o = SampleOutcome(i, text, n, s.cot, s.answer)
        if s.malformed:
            o.reason, o.detail = MALFORMED, s.malformed
        elif (leak := find_spec_leak(s.cot)) is not None:
            o.reason, o.detail = SPEC_LEAK, leak
        o.cited = list(dict.fromkeys(CITATION.findall(s.cot)))
        out.append(o)
    return out


def filter_requests(prompt: Prompt, samples: list[SampleOutcome]) -> list[FilterRequest]:
    return [FilterRequest(prompt, s.cot, s.answer) for s in samples if s.judgeable]


def apply_judgements(samples: list[SampleOutcome], judged: list[MinOfK], threshold: float) -> None:
    """Attach min-of-k judgements (in order of the judgeable samples) and mark failures."""
    todo = [s for s in samples if s.judgeable]
    assert len(todo) == len(judged), "one judgement per judgeable sample"
    for s, j in zip(todo, judged):
        s.judged = j
        if not j.ok:
            s.reason, s.detail = JUDGE_ERROR, j.error
        elif j.score < threshold:
            s.reason = BELOW


def ranked(samples: list[SampleOutcome]) -> list[SampleOutcome]:
    """The passing samples, best first (highest min-of-k score, then lowest index)."""
    passing = [s for s in samples if s.reason is None and s.judged is not None]
    return sorted(passing, key=lambda s: (-s.judged.score, s.index))


def _kept(s: SampleOutcome) -> dict:
    return {"cot": s.cot, "answer": s.answer, "cited_clauses": s.cited, "sample_index": s.index,
            "scores": list(s.judged.scores), "score": s.judged.score}


def expand(record: dict, keep: int) -> list[dict]:
    """`keep` SFT rows of an accepted record (`gen_sft.keep_per_prompt`): its passing samples best first
    (`alternates` after the kept one), cycling when it has fewer, so every accepted prompt weighs the
    same in SFT whatever the number of its passing samples. `keep=1`: the record as it is.

    The rows share the prompt's id and turns; they differ in the assistant turn and the sample's fields."""
    if keep <= 1:
        return [record]
    head = {k: record[k] for k in ("cited_clauses", "sample_index", "scores", "score", "judge_seed")}
    turn = record["messages"][-1]
    samples = [{**head, "cot": turn["reasoning_content"], "answer": turn["content"]}] + list(record.get("alternates") or [])
    out = []
    for i in range(keep):
        s = samples[i % len(samples)]
        messages = record["messages"][:-1] + [{**turn, "content": s["answer"], "reasoning_content": s["cot"]}]
        out.append({**record, **{k: s[k] for k in head}, "messages": messages})
    return out


def _most_promising(samples: list[SampleOutcome]) -> SampleOutcome:
    def key(s):
        score = s.judged.score if s.judged is not None and s.judged.ok else -1.0
        return (_PRECEDENCE.index(s.reason), -score, s.index)

    return min(samples, key=key)


def decide(prompt: Prompt, samples: list[SampleOutcome], provenance: dict) -> dict:
    """One record per prompt: the accepted SFT row, or the rejected row with its reason."""
    base = {
        "prompt_id": prompt.id,
        "category": prompt.category,
        "label": prompt.label,
        "samples_total": len(samples),
        "samples_passing": sum(1 for s in samples if s.reason is None and s.judged is not None),
        "sample_reasons": [s.reason or "pass" for s in samples],
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **provenance,
    }
    passing = ranked(samples)
    if passing:
        best = passing[0]
        # The kept prompt is the prompt's own turns: the spec lived only in the generation system message.
        messages = [dict(m, reasoning_content=None) for m in prompt.messages]
        messages.append({"role": "assistant", "content": best.answer, "reasoning_content": best.cot})
        return {
            **base,
            "status": ACCEPTED,
            "messages": messages,
            "cited_clauses": best.cited,
            "sample_index": best.index,
            "scores": list(best.judged.scores),
            "score": best.judged.score,
            "alternates": [_kept(s) for s in passing[1:]],  # the other passing samples, for `expand`
        }
    top = _most_promising(samples) if samples else None
    ok = top is not None and top.judged is not None and top.judged.ok
    return {
        **base,
        "status": REJECTED,
        "reason": top.reason if top else MALFORMED,
        "detail": top.detail if top else "no samples",
        "messages": [dict(m, reasoning_content=None) for m in prompt.messages],
        "completion": top.text if top else "",
        "sample_index": top.index if top else -1,
        "scores": [x for x in top.judged.scores] if top and top.judged else [],
        "score": top.judged.score if ok else None,
    }
