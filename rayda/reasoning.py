"""The one place a completion is split into chain of thought and final answer.

The format is `<think>COT</think>ANSWER`: the reasoning comes first, inside one pair of tags, then the
answer. Anything else is malformed and says why, so that data generation can reject it with a reason
and RL can give it a format penalty.
"""

from __future__ import annotations

from dataclasses import dataclass

THINK_OPEN, THINK_CLOSE = "<think>", "</think>"


@dataclass(frozen=True)
class Split:
    cot: str
    answer: str
    malformed: str | None = None
    """None for a well-formed completion; otherwise a short reason (`no_think`, `unclosed_think`, ...)."""

    @property
    def ok(self) -> bool:
        return self.malformed is None


def split(text: str) -> Split:
    """Split `text` into (chain of thought, answer); flag malformed completions with a reason."""
    body = text.strip()
    if body.startswith(THINK_OPEN):
        body = body[len(THINK_OPEN):]
    elif THINK_OPEN in body:
        return Split("", body, "text_before_think")
    elif THINK_CLOSE not in body:
        # Chat templates often put the opening tag in the prompt, so a completion may begin with the
        # reasoning itself; without any closing tag there is no reasoning at all.
        return Split("", body, "no_think")
    cot, sep, answer = body.partition(THINK_CLOSE)
    cot, answer = cot.strip(), answer.strip()
    if not sep:
        return Split(cot, "", "unclosed_think")
    if THINK_OPEN in cot or THINK_OPEN in answer or THINK_CLOSE in answer:
        return Split(cot, answer, "nested_think")
    if not cot:
        return Split(cot, answer, "empty_think")
    if not answer:
        return Split(cot, answer, "empty_answer")
    return Split(cot, answer)


def join(cot: str, answer: str) -> str:
    """The inverse of `split` for a well-formed pair."""
    return f"{THINK_OPEN}{cot}{THINK_CLOSE}{answer}"
