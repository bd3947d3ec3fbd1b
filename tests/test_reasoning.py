"""reasoning.split: the one place a completion becomes (chain of thought, answer)."""

from __future__ import annotations

import pytest

from rayda.reasoning import join, split


def test_well_formed():
    s = split("<think>IB.1 applies. Decision: refuse.</think>I'm sorry, but I can't help with that.")
    assert s.ok and s.cot == "IB.1 applies. Decision: refuse." and s.answer.startswith("I'm sorry")


def test_opening_tag_in_prompt():
    # chat templates that open <think> in the generation prompt leave only the closing tag
    s = split("reasoning here</think> answer")
    assert s.ok and s.cot == "reasoning here" and s.answer == "answer"


@pytest.mark.parametrize(
    "text, reason",
    [
        ("just an answer", "no_think"),
        ("<think>never closed", "unclosed_think"),
        ("<think></think>answer", "empty_think"),
        ("<think>why</think>   ", "empty_answer"),
        ("<think>a<think>b</think>c", "nested_think"),
        ("<think>a</think>b</think>c", "nested_think"),
        ("preface <think>a</think>b", "text_before_think"),
    ],
)
def test_malformed(text, reason):
    s = split(text)
    assert not s.ok and s.malformed == reason


def test_join_inverts_split():
    s = split(join("cot text", "answer text"))
    assert (s.cot, s.answer, s.ok) == ("cot text", "answer text", True)
