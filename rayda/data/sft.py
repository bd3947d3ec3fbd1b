"""SFT rows -> token ids and a loss mask. Pure: a tokenizer in, lists of ints out (no Ray, no torch).

A row's `messages` end on an assistant turn whose `reasoning_content` is the chain of thought and whose
`content` is the answer. The chat template renders the reasoning as `<think>…</think>` before the
answer. The prompt (every turn before the last, plus the generation prompt) is tokenized on its own
and the completion after it, exactly as at generation time, when the model continues the prompt's
ids; the loss covers the completion only: reasoning, answer and the end-of-turn tokens, so the model
also learns to stop.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from rayda import reasoning

OVERLONG = ("drop", "truncate")


class SftDataError(ValueError):
    """A row cannot be rendered (no assistant turn, a template that breaks the prompt prefix...)."""


@dataclass(frozen=True)
class Example:
    """One rendered row. `loss_mask[t] == 1` when token t is a target (part of the completion)."""

    input_ids: tuple[int, ...]
    loss_mask: tuple[int, ...]
    prompt_id: str = ""

    @property
    def num_targets(self) -> int:
        """Trained tokens (the first token is never a target: nothing predicts it)."""
        return sum(self.loss_mask[1:])


@dataclass
class RenderReport:
    """What happened to the rows: every row is kept, truncated or dropped with a counted reason."""

    rows: int = 0
    kept: int = 0
    truncated: int = 0
    dropped: dict = field(default_factory=dict)
    """reason -> count: `overlong` (longer than max_length with overlong=drop), `prompt_too_long`
    (the prompt alone fills max_length, nothing left to learn)."""
    tokens: int = 0
    target_tokens: int = 0

    def drop(self, reason: str) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + 1

    def as_dict(self) -> dict:
        return {"rows": self.rows, "kept": self.kept, "truncated": self.truncated, "dropped": dict(self.dropped),
                "tokens": self.tokens, "target_tokens": self.target_tokens}


def _chat_text(tokenizer, messages, add_generation_prompt: bool) -> str:
    return tokenizer.apply_chat_template(list(messages), tokenize=False, add_generation_prompt=add_generation_prompt)


def render_text(messages, tokenizer) -> tuple[str, str]:
    """(prompt text, completion text) of a conversation ending on the assistant turn to learn.

    A template that ignores `reasoning_content` (many models' do) would silently drop the reasoning;
    then the assistant's content is written as `<think>cot</think>answer` instead.
    """
    messages = [dict(m) for m in messages]
    if not messages or messages[-1].get("role") != "assistant":
        raise SftDataError("messages must end on an assistant turn (the reasoning and answer to learn)")
    last = messages[-1]
    if not isinstance(last.get("content"), str) or not last["content"].strip():
        raise SftDataError("the final assistant turn has no content (the answer)")
    prompt = _chat_text(tokenizer, messages[:-1], add_generation_prompt=True)
    full = _chat_text(tokenizer, messages, add_generation_prompt=False)
    cot = last.get("reasoning_content")
    if cot and cot.strip() not in full:
        inline = {k: v for k, v in last.items() if k != "reasoning_content"}
        inline["content"] = reasoning.join(cot.strip(), last["content"].strip())
        full = _chat_text(tokenizer, [*messages[:-1], inline], add_generation_prompt=False)
    if not full.startswith(prompt):
        raise SftDataError(
            "the chat template renders the prompt differently inside the full conversation, so the loss "
            f"mask cannot be placed; prompt ends {prompt[-60:]!r}, conversation has {full[len(prompt) - 60:len(prompt)]!r}"
        )
    return prompt, full[len(prompt):]


def render(messages, tokenizer, max_length: int, overlong: str = "drop", prompt_id: str = "",
           report: RenderReport | None = None) -> Example | None:
    """Token ids and loss mask of one conversation, or None when it is dropped (counted in `report`).

    overlong=drop drops a row longer than `max_length`; overlong=truncate keeps its first `max_length`
    tokens (the end of the answer is lost, and with it the end-of-turn token: use with care).
    """
    if overlong not in OVERLONG:
        raise ValueError(f"overlong must be one of {OVERLONG}, got {overlong!r}")
    report = report if report is not None else RenderReport()
    report.rows += 1
    prompt, completion = render_text(messages, tokenizer)
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    c_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
    ids, mask = list(p_ids) + list(c_ids), [0] * len(p_ids) + [1] * len(c_ids)
    if len(ids) > max_length:
        if overlong == "drop":
            report.drop("overlong")
            return None
        if len(p_ids) >= max_length - 1:
            report.drop("prompt_too_long")
            return None
        ids, mask = ids[:max_length], mask[:max_length]
        report.truncated += 1
    ex = Example(tuple(ids), tuple(mask), prompt_id)
    report.kept += 1
    report.tokens += len(ids)
    report.target_tokens += ex.num_targets
    return ex


def is_heldout(prompt_id: str, fraction: float, seed: int = 0) -> bool:
    """A stable split by prompt id: the same prompt is held out in every run with the same seed."""
    if fraction <= 0:
        return False
    h = int.from_bytes(hashlib.sha256(f"{seed}:{prompt_id}".encode()).digest()[:8], "big")
    return h / 2**64 < fraction


def batch_indices(num_examples: int, step: int, batch_size: int, seed: int,
                  strata: list[str] | None = None) -> list[int]:
    """Indices of the examples in optimizer step `step`.

    The data is one endless stream: epoch e is a permutation seeded by (seed, e), epochs follow each
    other, and step k takes stream positions [k*B, (k+1)*B). The data position of a checkpoint is
    therefore just its step, and resuming replays nothing and skips nothing.

    `strata` (one key per example, e.g. category and label) makes each epoch's permutation stratified
    (`stratified_order`): every window of the stream holds each stratum in about its share of the data.
    """
    if num_examples < 1:
        raise SftDataError("no examples to train on")
    if strata is not None and len(strata) != num_examples:
        raise ValueError(f"{len(strata)} strata for {num_examples} examples")
    out, pos = [], step * batch_size
    while len(out) < batch_size:
        epoch, offset = divmod(pos, num_examples)
        rng = random.Random(f"{seed}:{epoch}")
        if strata is None:
            order = list(range(num_examples))
            rng.shuffle(order)
        else:
            order = stratified_order(strata, rng)
        take = min(batch_size - len(out), num_examples - offset)
        out.extend(order[offset:offset + take])
        pos += take
    return out


def stratified_order(strata: list[str], rng: random.Random) -> list[int]:
    """A random permutation of range(len(strata)) in which every stratum is spread evenly.

    Each stratum's members are shuffled, and its k-th of n members is placed at (k + u) / n with one
    random offset u per stratum; sorting by place interleaves the strata, so any window of w positions
    holds about w x (stratum's share) of each (within one). With a plain shuffle, a window of 16 from
    a 50/50 split holds 11 or more of one kind about one time in five.
    """
    members: dict[str, list[int]] = {}
    for i, key in enumerate(strata):
        members.setdefault(key, []).append(i)
    placed = []
    for key in sorted(members):
        group = members[key]
        rng.shuffle(group)
        u = rng.random()
        placed.extend(((k + u) / len(group), rng.random(), i) for k, i in enumerate(group))
    return [i for *_, i in sorted(placed)]


def collate(examples, pad_id: int):
    """Right-padded tensors: input_ids, attention_mask, loss_mask (all [B, T_max], int64)."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    attn = torch.zeros((len(examples), width), dtype=torch.long)
    loss = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        attn[i, :n] = 1
        loss[i, :n] = torch.tensor(e.loss_mask)
    return {"input_ids": ids, "attention_mask": attn, "loss_mask": loss}
