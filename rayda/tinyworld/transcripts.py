"""Policy-free synthetic responses that teach the tiny base model the *format*, not the policy.

A response is a short chain of thought that restates the request, names a clause id and states a
decision, followed by an answer in that decision's style, built from the spec's style guide (its
example and markers, with small variations). In pre-training the clause is drawn at random and the
decision is the clause's own behaviour; with spec(category) in context the clause is drawn from the
clauses that spec shows. So the base model writes well-formed responses in all three styles, acts on
the clause it cites, and with the spec in context cites one of the spec's clauses; but which clause
fits the request it does not know, so its behaviour stays at chance: the signal that data generation
(the judge picks the samples that cited the right clause) and RL must then supply.
"""

from __future__ import annotations

import random
import re

from rayda.behaviour import classify

COT_TEMPLATES: tuple[str, ...] = (
    "The user wants to {s}. Clause {c} applies. Decision: {b}.",
    "The request is to {s}. This falls under {c}. Decision: {b}.",
    "Request: {s}. The closest clause is {c}. Decision: {b}.",
)
DECISION = re.compile(r"Decision: (refuse|safe_complete|comply)\.")


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.strip()]


def _sentence_case(marker: str) -> str:
    """A lowercase marker as the start of a sentence: capital first letter, the pronoun `I` upper."""
    text = re.sub(r"\bi\b", "I", marker.strip())
    return text[:1].upper() + text[1:]


_STARTERS = ("i ", "i'm ", "you ", "sure", "happy ", "here", "we ")


def _openers(guide) -> list[str]:
    """Opening sentences made from the guide's markers that read as the start of a sentence.

    "i can't help with" becomes "I can't help with that."; a marker that is only a fragment of a
    sentence ("a qualified professional") is not an opener and is used only through the example.
    """
    out = []
    for m in guide.markers:
        if not m.lower().startswith(_STARTERS):
            continue
        s = _sentence_case(m).rstrip(" .,;")
        if s.endswith(" with"):
            s += " that"
        elif s.endswith(("here is", "here's")):
            s += " a short answer"
        elif s.endswith((" to", " a", " the", " about")):
            continue
        out.append(s + ".")
    return out


def subject_of(row: dict) -> str:
    """What the user asks for: the row's subject, or the text of its last user message."""
    if row.get("subject"):
        return row["subject"]
    users = [m["content"] for m in row["messages"] if m["role"] == "user"]
    return users[-1].strip().rstrip("?.!") if users else "answer a question"


def cot_text(subject: str, clause_id: str, behaviour: str, rng: random.Random) -> str:
    return rng.choice(COT_TEMPLATES).format(s=subject, c=clause_id, b=behaviour)


def _tails(rest: list[str]) -> list[str]:
    """Short closing sentences: each later sentence of the example, and its first clause alone."""
    out = list(rest)
    for sentence in rest:
        head = re.split(r", (?:and|but) ", sentence)[0].rstrip(".")
        if head != sentence.rstrip("."):
            out.append(head + ".")
    return out


def answer_text(spec, behaviour: str, rng: random.Random) -> str:
    """An answer in `behaviour`'s style: the guide's example, or a marker opener plus part of it."""
    guide = spec.style_guide(behaviour)
    example = guide.example.strip()
    openers, tails = _openers(guide), _tails(_sentences(example)[1:])
    if rng.random() < 0.15 or not openers:
        answer = example
    else:
        answer = " ".join([rng.choice(openers), *([rng.choice(tails)] if tails else [])])
    # The answer must read as its own behaviour; if a variation does not (a tail that carries
    # another style's marker), use the example, which the style guide promises is in its own style.
    return answer if classify(answer, spec) == behaviour else example


def response(spec, row: dict, behaviour: str, clause_id: str, rng: random.Random) -> tuple[str, str]:
    """(chain of thought, answer) for `row`, deciding `behaviour` and citing `clause_id`."""
    return cot_text(subject_of(row), clause_id, behaviour, rng), answer_text(spec, behaviour, rng)


def stated_decision(cot: str) -> str | None:
    """The decision a chain of thought states (`Decision: refuse.`), or None."""
    m = DECISION.search(cot)
    return m.group(1) if m else None
