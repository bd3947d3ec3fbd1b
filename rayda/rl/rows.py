"""Rollouts -> the learner's training rows. Pure: lists of ints and floats in, rows out (torch only to collate).

A row is the prompt's token ids followed by the sampled completion's token ids (exactly what the
rollout engine saw and produced, end-of-turn token included), with the loss mask on the completion.
Per-position arrays (`old_logprobs`, `ref_logprobs`) have one entry per *target*, i.e. they are aligned
with `input_ids[1:]` like the learner's shifted labels (`rayda.algo.losses.next_token`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from rayda.data.sft import Example


@dataclass(frozen=True)
class PolicyRow(Example):
    """An `Example` that carries what the GRPO loss needs besides the tokens."""

    advantage: float = 0.0
    old_logprobs: Sequence[float] = ()
    """log p_old(input_ids[t + 1] | prefix) for t in 0..L-2, from the learner before the update."""
    ref_logprobs: Sequence[float] = ()
    """The same under the frozen reference (the SFT policy)."""

    @classmethod
    def loss_inputs(cls, rows: list["PolicyRow"], width: int) -> dict:
        """advantages [B] and old_logp, ref_logp [B, width] (zero-padded) for `rayda.algo.losses.grpo_token_loss`."""
        import torch

        out = {"advantages": torch.tensor([r.advantage for r in rows], dtype=torch.float32),
               "old_logp": torch.zeros(len(rows), width), "ref_logp": torch.zeros(len(rows), width)}
        for i, r in enumerate(rows):
            for key, values in (("old_logp", r.old_logprobs), ("ref_logp", r.ref_logprobs)):
                if len(values) != len(r.input_ids) - 1:
                    raise ValueError(f"row {r.prompt_id}: {key} has {len(values)} entries, expected {len(r.input_ids) - 1}")
                out[key][i, : len(values)] = torch.tensor(values, dtype=torch.float32)
        return out


def policy_row(prompt_ids: list[int], completion_ids: list[int], prompt_id: str = "", train: bool = True) -> PolicyRow:
    """The training row of one sample; `train=False` masks it out entirely (a judge error: no gradient)."""
    ids = tuple(prompt_ids) + tuple(completion_ids)
    mask = (0,) * len(prompt_ids) + (int(train),) * len(completion_ids)
    return PolicyRow(ids, mask, prompt_id)


def behaviour_logprobs(prompt_len: int, sampled: Sequence[float]) -> list[float]:
    """Per-target old log-probs from the policy that sampled: 0 for the prompt's targets (masked out),
    then the log-prob of each sampled token under the sampler, so the PPO ratio is p_now / p_sampler
    however many updates the learner took since (`rl.max_staleness`)."""
    return [0.0] * (prompt_len - 1) + [float(x) for x in sampled]


def with_logprobs(rows: list[PolicyRow], advantages: list[float], old: list, ref: list) -> list[PolicyRow]:
    """The rows with their advantages and per-target log-probs (float32 arrays: what the loss computes in)."""
    import numpy as np

    return [replace(r, advantage=float(a), old_logprobs=np.asarray(o, dtype=np.float32), ref_logprobs=np.asarray(f, dtype=np.float32))
            for r, a, o, f in zip(rows, advantages, old, ref)]

