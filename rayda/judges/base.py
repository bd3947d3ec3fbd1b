"""The one judge interface: requests in, k verdicts per request out.

A judge is built once per actor (it may hold an engine or an HTTP client) and then called with
batches. `view` is `filter` (SFT data generation: `FilterRequest`, with the chain of thought) or
`reward` (RL: `RewardRequest`, the final answer only). A verdict that failed for any reason carries
`error` and no score (DESIGN.md, contract 2): callers must never read a failed verdict as a 0.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rayda import templates
from rayda.types import FilterRequest, RewardRequest, Verdict


@dataclass(frozen=True)
class MinOfK:
    """The combined judgement of k verdicts: the minimum score, or an error if any verdict failed."""

    score: float | None
    scores: tuple[float | None, ...]
    error: str | None = None
    parts: dict = field(default_factory=dict)
    """The parts (`Verdict.scores`) of the verdict that gave the minimum; empty on an error."""

    @property
    def ok(self) -> bool:
        return self.error is None


def min_of_k(verdicts: list[Verdict]) -> MinOfK:
    """Contract 2: the kept score is min over k verdicts; one failed verdict fails the whole judgement."""
    scores = tuple(v.score if v.ok else None for v in verdicts)
    if not verdicts:
        return MinOfK(None, (), "no verdicts")
    errors = [v.error or "verdict without a score" for v in verdicts if not v.ok]
    if errors:
        return MinOfK(None, scores, f"{len(errors)}/{len(verdicts)} verdicts failed: {errors[0]}")
    low = min(verdicts, key=lambda v: v.score)  # the first verdict with the minimum score
    return MinOfK(low.score, scores, parts=dict(low.scores))


class Judge:
    """Base class: subclasses implement `_judge(view, requests, k, seeds)`."""

    kind: str = "?"
    needs_label: bool = False
    """True when the judge cannot work without each prompt's label (the rubric judge)."""

    def __init__(self, spec, spec_texts: dict[str, str], model: str | None = None):
        self.spec = spec
        self.spec_texts = spec_texts
        """`spec(category)` per category, compiled once by the driver (the generator saw the same)."""
        self.model = model

    def judge(self, view: str, requests: list, k: int, seeds: list[int]) -> list[list[Verdict]]:
        """k verdicts for each request; `seeds[i]` seeds request i's verdicts."""
        want = FilterRequest if view == templates.FILTER else RewardRequest
        for r in requests:
            if not isinstance(r, want):
                raise TypeError(f"the {view} view takes {want.__name__}, got {type(r).__name__}")
        if not requests:
            return []
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}")
        out = self._judge(view, requests, k, seeds)
        assert len(out) == len(requests) and all(len(v) == k for v in out), "judge returned the wrong shape"
        return out

    def filter(self, requests: list[FilterRequest], k: int, seeds: list[int]) -> list[list[Verdict]]:
        return self.judge(templates.FILTER, requests, k, seeds)

    def reward(self, requests: list[RewardRequest], k: int, seeds: list[int]) -> list[list[Verdict]]:
        return self.judge(templates.REWARD, requests, k, seeds)

    def label(self, chats: list[list[dict]], schema: dict, k: int, seeds: list[int]) -> list[list[tuple[str | None, str | None]]]:
        """k raw answers per chat, each (text, None) or (None, error), under the JSON `schema`: how
        `rayda label` asks a model judge to label prompts (`rayda.labeling`)."""
        raise ValueError(f"the {self.kind} judge cannot label prompts; use judge.kind=llm or judge.kind=http")

    def compare(self, pairs: list[tuple], principles: list[str], k: int, seeds: list[int]) -> list[list[int | None]]:
        """k votes per pair of `RewardRequest`s to one prompt, under a principle (text): +1 the first
        answer is better, -1 the second, 0 neither, None a failed vote (never read as a tie).

        Model judges answer `templates.pairwise_messages` through `label` under PREFERENCE_SCHEMA, the
        two answers swapping places from one vote to the next, so a judge's bias for a position cancels
        over the votes instead of deciding them."""
        for pair in pairs:
            if not all(type(r) is RewardRequest for r in pair):
                raise TypeError("a pairwise comparison takes RewardRequests (final answers only)")
        chats = [templates.pairwise_messages(*((a, b) if j % 2 == 0 else (b, a)), text)
                 for (a, b), text in zip(pairs, principles) for j in range(k)]
        answers = self.label(chats, templates.PREFERENCE_SCHEMA, 1, [s * 1000 + j for s in seeds for j in range(k)])
        votes = [templates.parse_preference(text) if err is None else None for (text, err), *_ in answers]
        return [[None if v is None else v if j % 2 == 0 else -v for j, v in enumerate(votes[i * k:(i + 1) * k])]
                for i in range(len(pairs))]

    def messages(self, view: str, req) -> list[dict]:
        return templates.judge_messages(view, req, self.spec_texts[req.prompt.category])

    def _judge(self, view: str, requests: list, k: int, seeds: list[int]) -> list[list[Verdict]]:
        raise NotImplementedError

    def close(self) -> None:
        """Release engines or connections (optional)."""
