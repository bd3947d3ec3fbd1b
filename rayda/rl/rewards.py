"""Rewards and the per-step statistics of a rollout batch. Pure: no Ray, no engines.

    completion ─ malformed? ──yes──► reward = -format_penalty (never judged)
                     │ no
                     ▼
          RewardRequest.of(completion)  (prompt + final answer; the type has no field for the cot)
                     ▼
          judge min-of-k ── error? ──yes──► excluded from the loss (valid = False), counted
                     │ no
                     ▼
               reward = score (in [0, 1]);  Scored.parts = the parts of the min verdict
                                              (rubric: behaviour, style, substance)

`step_stats` logs each part's mean over the judged samples as `reward_<part>` (`reward_parts`), so a
reward that rises on one part and not the others shows in metrics.jsonl (DESIGN.md, contract 7).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

from rayda.types import Completion, RewardRequest

PASS_SCORE = 0.5
"""A judged answer `passes` when its min-of-k score is at least this (the rubric gives 0 or 1)."""


@dataclass(frozen=True)
class Scored:
    reward: float
    valid: bool
    """False after a judge error: the sample takes no part in its group's statistics or in the loss."""
    judged: bool
    error: str | None = None
    parts: dict = field(default_factory=dict)
    """The judge's parts of the reward (`MinOfK.parts`), e.g. {"behaviour": 1.0, "style": 1.0, "substance": 1.0}."""


def reward_requests(completions: list[Completion]) -> tuple[list[RewardRequest], list[int]]:
    """The judge's inputs (well-formed completions only) and, for each, the completion's index."""
    owners = [i for i, c in enumerate(completions) if c.malformed is None]
    return [RewardRequest.of(completions[i]) for i in owners], owners


def assemble(completions: list[Completion], judgements: list, owners: list[int], format_penalty: float) -> list[Scored]:
    """One `Scored` per completion from the judgements (`MinOfK`, aligned with `owners`)."""
    out = [Scored(-format_penalty, True, False) for _ in completions]
    for i, j in zip(owners, judgements):
        out[i] = Scored(float(j.score), True, True, parts=dict(j.parts)) if j.ok else Scored(0.0, False, True, j.error)
    return out


def reward_parts(scored: list) -> dict[str, float]:
    """The mean of each reward part over the judged, valid samples, as `reward_<part>`.

    Takes `Scored` (from `assemble`) or `MinOfK` judgements; samples without a judgement (malformed,
    or a judge error) are left out; a part some judgements lack is averaged over those that have it.
    """
    sums: dict[str, list[float]] = defaultdict(list)
    for s in scored:
        if getattr(s, "valid", True) and getattr(s, "judged", True) and getattr(s, "ok", True):
            for k, v in (s.parts or {}).items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    sums[k].append(float(v))
    return {f"reward_{k}": sum(v) / len(v) for k, v in sorted(sums.items())}


def step_stats(completions: list[Completion], scored: list[Scored], spec, classify) -> dict:
    """What a step's rollouts look like: rewards, judge pass/error rates, behaviour accuracy overall
    and by category (a malformed completion is wrong), response length, citations in the cot, and the
    mean of each part of the reward (`reward_parts`: reward_behaviour, reward_style, reward_substance
    with the rubric judge; the llm and http judges' 0-10 parts as they come)."""
    valid = [s.reward for s in scored if s.valid]
    judged = [s for s in scored if s.judged]
    mean = sum(valid) / len(valid) if valid else 0.0
    std = math.sqrt(sum((r - mean) ** 2 for r in valid) / len(valid)) if valid else 0.0
    by_cat: dict[str, list[int]] = defaultdict(list)
    cited, cites, good = 0, 0, 0
    for c in completions:
        right = c.malformed is None and c.prompt.label is not None and classify(c.answer, spec) == c.prompt.label
        by_cat[c.prompt.category].append(int(right))
        if c.malformed is None:
            found = spec.citations(c.cot, c.prompt.category)
            cited += bool(found)
            cites += len(found)
            good += sum(1 for f in found if f.exists and f.in_category)
    well_formed = sum(c.malformed is None for c in completions)
    n = max(len(completions), 1)
    return {
        **reward_parts(scored),  # first, so that a part named "mean" could not replace reward_mean
        "reward_mean": mean,
        "reward_std": std,
        "well_formed": well_formed / n,
        "judge_pass_rate": sum(1 for s in judged if s.valid and s.reward >= PASS_SCORE) / max(len(judged), 1),
        "judge_error_rate": sum(1 for s in judged if not s.valid) / max(len(judged), 1),
        "judge_errors": sum(1 for s in judged if not s.valid),
        "behaviour_accuracy": sum(sum(v) for v in by_cat.values()) / n,
        "behaviour_accuracy_by_category": {k: sum(v) / len(v) for k, v in sorted(by_cat.items())},
        "response_tokens": sum(len(c.token_ids) for c in completions) / n,
        "citation_rate": cited / max(well_formed, 1),
        "citation_validity": good / cites if cites else None,
    }


def label_stats(labels: list, rewards, valid, signal: list[bool]) -> dict:
    """Per label of a step's prompts (one per group): groups drawn, groups with signal (GRPO learns
    only from groups whose rewards differ, and with std-normalised advantages each weighs about the
    same) and the mean valid reward. Shows whether one behaviour carries most of a step's update."""
    out: dict = {}
    for label, r, v, s in zip(labels, rewards.tolist(), valid.tolist(), signal):
        e = out.setdefault(str(label), {"groups": 0, "signal": 0, "rewards": []})
        e["groups"] += 1
        e["signal"] += int(s)
        e["rewards"] += [x for x, ok in zip(r, v) if ok]
    return {k: {"groups": e["groups"], "signal": e["signal"],
                "reward": sum(e["rewards"]) / len(e["rewards"]) if e["rewards"] else None} for k, e in sorted(out.items())}
