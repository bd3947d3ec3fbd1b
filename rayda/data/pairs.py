"""Preference pairs for Constitutional AI's preference model. Pure: verdicts and token ids in, decisions
and rows out (torch only to collate).

A pair is two samples of the policy for one prompt. Who wins:

    one malformed, one well-formed   the well-formed one, without asking the judge (`malformed`)
    both malformed                   nobody: dropped (`both_malformed`)
    both well-formed                 k votes of the judge (`Judge.compare`: prompt + the two final
                                     answers, under the pair's principle); the majority wins (`judged`);
                                     a tie is dropped (`tie`), and so is a pair with a failed vote
                                     (`judge_error`: never read as a tie or a 0, contract 2)

The preference model scores the chat `prompt + final answer` (no reasoning: what the RL reward sees),
rendered with the policy's chat template by `answer_ids`, the same function in training and serving.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

KEPT = ("judged", "malformed")
DROPPED = ("tie", "both_malformed", "judge_error")


@dataclass(frozen=True)
class PairRow:
    """One training pair as token ids (`answer_ids` of each side)."""

    chosen_ids: tuple[int, ...]
    rejected_ids: tuple[int, ...]
    prompt_id: str = ""

    @property
    def num_targets(self) -> int:
        """A pair is one target: the learner divides the loss by the batch's pair count."""
        return 1


@dataclass(frozen=True)
class Decision:
    chosen: str | None
    """`a`, `b`, or None when the pair is dropped."""
    reason: str
    """One of KEPT (the pair is kept) or DROPPED."""
    votes: tuple[int, ...] = ()
    """Per vote: +1 for a, -1 for b, 0 a tie (empty when the judge was not asked)."""


def vote(a, b) -> int:
    """One vote between two REWARD verdicts (`rayda.types.Verdict`, both ok): the higher score wins; on
    equal scores the larger sum of the score's parts does (the rubric's behaviour, substance and style:
    a wrong answer with the style right beats one with nothing right); else a tie."""
    for x, y in ((a.score, b.score), (_parts(a), _parts(b))):
        if x != y:
            return 1 if x > y else -1
    return 0


def _parts(v) -> float:
    return sum(float(x) for x in (v.scores or {}).values() if isinstance(x, (int, float)) and not isinstance(x, bool))


def decide(malformed_a: str | None, malformed_b: str | None, votes=()) -> Decision:
    """Who wins a pair (see the module's table); `votes` are the judge's k votes on a well-formed pair
    (+1 for a, -1 for b, 0 neither, None failed)."""
    if malformed_a and malformed_b:
        return Decision(None, "both_malformed")
    if malformed_a or malformed_b:
        return Decision("b" if malformed_a else "a", "malformed")
    if not votes:
        raise ValueError("a well-formed pair needs k >= 1 votes")
    if any(v is None for v in votes):
        return Decision(None, "judge_error", tuple(votes))
    votes = tuple(votes)
    total = sum(votes)
    return Decision(("a" if total > 0 else "b") if total else None, "judged" if total else "tie", votes)


def pair_record(a, b, votes=(), **fields) -> dict:
    """The row of one judged pair of `Completion`s (prompt, both final answers, the votes, who won and
    why) plus `fields` (principle, provenance)."""
    import json

    d = decide(a.malformed, b.malformed, votes)
    side = {"a": a, "b": b}

    return {
        "prompt_id": a.prompt.id, "category": a.prompt.category, "label": a.prompt.label,
        "messages": json.dumps(list(a.prompt.messages)), "answer_a": a.answer, "answer_b": b.answer,
        "malformed_a": a.malformed, "malformed_b": b.malformed, "votes": [v for v in d.votes if v is not None],
        "failed_votes": sum(v is None for v in d.votes), "chosen": d.chosen, "reason": d.reason,
        "chosen_answer": side[d.chosen].answer if d.chosen else None,
        "rejected_answer": side["b" if d.chosen == "a" else "a"].answer if d.chosen else None,
        "tokens": len(a.token_ids) + len(b.token_ids), **fields,
    }


def with_splits(rows: list[dict], fraction: float, seed: int) -> list[dict]:
    """The kept rows (a `chosen` side), each with `split` train / heldout, decided by its prompt id alone
    (`rayda.data.sft.is_heldout`: a stable seeded hash), so a prompt's pairs never straddle the split."""
    from rayda.data.sft import is_heldout

    return [dict(r, split="heldout" if is_heldout(r["prompt_id"], fraction, seed) else "train") for r in rows if r["chosen"]]


def principle_text(spec, clause_id: str) -> str:
    """What a model judge reads as the principle: the clause's id, title and text."""
    _, clause = spec.clauses()[clause_id]
    return f"{clause.id} {clause.title}: {clause.text}".strip()


def principle(spec, category: str, seed: int, prompt_id: str) -> str:
    """The clause of `category` a pair is judged under, drawn by a generator seeded by (seed, prompt)."""
    from rayda.data.gen_rows import stable_seed

    ids = sorted(cl.id for cl in spec.category(category).clauses)
    return random.Random(stable_seed(seed, "pm-principle", prompt_id)).choice(ids)


def answer_ids(tokenizer, messages, answer: str) -> list[int]:
    """Token ids of the chat `messages` + an assistant turn holding `answer`, in the tokenizer's chat
    template: what the preference model scores (the score is read at the last token)."""
    chat = [dict(m) for m in messages] + [{"role": "assistant", "content": answer}]
    text = tokenizer.apply_chat_template(chat, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def pair_row(tokenizer, messages, chosen: str, rejected: str, prompt_id: str, max_length: int) -> PairRow | None:
    """The training row of a kept pair; None when either side is longer than `max_length` tokens."""
    c, r = answer_ids(tokenizer, messages, chosen), answer_ids(tokenizer, messages, rejected)
    if max(len(c), len(r)) > max_length:
        return None
    return PairRow(tuple(c), tuple(r), prompt_id)


def pad(seqs: list, pad_id: int):
    """Right-padded [N, T] input_ids and attention_mask of token sequences."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = torch.as_tensor(s, dtype=torch.long)
        attn[i, :len(s)] = 1
    return {"input_ids": ids, "attention_mask": attn}


def collate_pairs(rows: list, pad_id: int):
    """[2B, T] input_ids and attention_mask (`pad`): the B chosen sequences, then the B rejected."""
    return pad([r.chosen_ids for r in rows] + [r.rejected_ids for r in rows], pad_id)
