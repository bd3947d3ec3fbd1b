"""The messages that cross actor boundaries.

`RewardRequest` deliberately has no field that could carry a chain of thought, and the only way to
build one from a `Completion` reads `.answer` (DESIGN.md, contract 1): in RL the judge sees the final
answer and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rayda import reasoning


@dataclass(frozen=True)
class Prompt:
    """One prompt row: chat messages ending on a user turn, a category, an optional ideal behaviour."""

    id: str
    messages: tuple[dict, ...]
    category: str
    label: str | None = None
    subject: str | None = None
    """What the user asks for, in the user's words (optional; the tiny world's rows carry it): the
    rubric judge requires reasoning to restate it (`rayda.judges.rubric`)."""

    @property
    def user_text(self) -> str:
        return self.messages[-1]["content"]


@dataclass(frozen=True)
class Completion:
    """One sampled completion, split once, stamped with the policy version that produced it."""

    prompt: Prompt
    text: str
    cot: str
    answer: str
    malformed: str | None
    policy_version: int = 0
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[float, ...] = ()

    @classmethod
    def from_text(cls, prompt: Prompt, text: str, policy_version: int = 0, **kw) -> "Completion":
        s = reasoning.split(text)
        return cls(prompt, text, s.cot, s.answer, s.malformed, policy_version, **kw)


@dataclass(frozen=True)
class RolloutBatch:
    """What a rollout actor returns for a batch of prompts: samples per prompt (`Sample`s of
    `rayda.engines.vllm_engine`, with token ids and sampling log-probs), and the policy version of the
    weights that drew them, stamped by the actor itself (DESIGN.md, contract 4)."""

    policy_version: int
    samples: tuple[tuple, ...]


@dataclass(frozen=True)
class FilterRequest:
    """What a judge sees when filtering SFT data: prompt, chain of thought, answer, label hint."""

    prompt: Prompt
    cot: str
    answer: str

    @classmethod
    def of(cls, c: Completion) -> "FilterRequest":
        return cls(c.prompt, c.cot, c.answer)


@dataclass(frozen=True)
class RewardRequest:
    """What a judge sees in RL: the prompt and the final answer. There is no chain-of-thought field."""

    prompt: Prompt
    answer: str

    @classmethod
    def of(cls, c: Completion) -> "RewardRequest":
        return cls(c.prompt, c.answer)


@dataclass(frozen=True)
class Verdict:
    """One judgement. `error` set means the judge failed or its output did not parse: never a score."""

    score: float | None
    behaviour: str | None = None
    scores: dict = field(default_factory=dict)
    agrees_with_label: bool | None = None
    error: str | None = None
    raw: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None and self.score is not None
