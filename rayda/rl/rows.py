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
    """The same under the frozen reference (the SFT policy); empty with `rl.kl_kind=full`, whose loss
    takes the reference's whole distribution in the training pass instead."""
    kl_weights: Sequence[float] = ()
    """Per target, the KL penalty's weight (`reasoning_kl_weights`); empty: 1 everywhere."""

    @classmethod
    def loss_inputs(cls, rows: list["PolicyRow"], width: int) -> dict:
        """advantages [B] and old_logp, ref_logp [B, width] (zero-padded) for `rayda.algo.losses.grpo_token_loss`,
        and kl_weight [B, width] when any row has `kl_weights` (1 where a row has none). ref_logp is left
        out when no row carries reference log-probs (`rl.kl_kind=full`)."""
        import torch

        with_ref = any(len(r.ref_logprobs) for r in rows)
        out = {"advantages": torch.tensor([r.advantage for r in rows], dtype=torch.float32),
               "old_logp": torch.zeros(len(rows), width)}
        if with_ref:
            out["ref_logp"] = torch.zeros(len(rows), width)
        weighted = any(len(r.kl_weights) for r in rows)
        if weighted:
            out["kl_weight"] = torch.ones(len(rows), width)
        for i, r in enumerate(rows):
            per_target = [("old_logp", r.old_logprobs)] + ([("ref_logp", r.ref_logprobs)] if with_ref else [])
            per_target += [("kl_weight", r.kl_weights)] if len(r.kl_weights) else []
            for key, values in per_target:
                if len(values) != len(r.input_ids) - 1:
                    raise ValueError(f"row {r.prompt_id}: {key} has {len(values)} entries, expected {len(r.input_ids) - 1}")
                out[key][i, : len(values)] = torch.tensor(values, dtype=torch.float32)
        return out


def policy_row(prompt_ids: list[int], completion_ids: list[int], prompt_id: str = "", train: bool = True,
               kl_reasoning: float = 1.0, close_ids: Sequence[int] = ()) -> PolicyRow:
    """The training row of one sample; `train=False` masks it out entirely (a judge error: no gradient).
    With `kl_reasoning` other than 1, the row carries `reasoning_kl_weights` (`close_ids`: `</think>`'s ids)."""
    ids = tuple(prompt_ids) + tuple(completion_ids)
    mask = (0,) * len(prompt_ids) + (int(train),) * len(completion_ids)
    weights = reasoning_kl_weights(len(prompt_ids), completion_ids, close_ids, kl_reasoning) if kl_reasoning != 1.0 else ()
    return PolicyRow(ids, mask, prompt_id, kl_weights=weights)


def reasoning_kl_weights(prompt_len: int, completion_ids: Sequence[int], close_ids: Sequence[int], weight: float) -> list[float]:
    """Per-target KL weights for one row (`rl.kl_reasoning`): `weight` on the completion's reasoning,
    up to and including the first `close_ids` (`</think>`'s token ids), 1 on the answer after it and on
    the prompt's targets (masked out in the loss). A completion without the closing tag is all reasoning.

    Why: the judge sees only the answer, so nothing in the reward holds the reasoning to the spec; a
    larger KL there keeps the chain of thought near SFT's (which learnt to cite the spec) while the
    answer is free to move where the reward sends it."""
    n, k = len(completion_ids), len(close_ids)
    end = next((j + k for j in range(n - k + 1) if k and list(completion_ids[j:j + k]) == list(close_ids)), n)
    return [1.0] * (prompt_len - 1) + [float(weight)] * end + [1.0] * (n - end)


def behaviour_logprobs(prompt_len: int, sampled: Sequence[float]) -> list[float]:
    """Per-target old log-probs from the policy that sampled: 0 for the prompt's targets (masked out),
    then the log-prob of each sampled token under the sampler, so the PPO ratio is p_now / p_sampler
    however many updates the learner took since (`rl.max_staleness`)."""
    return [0.0] * (prompt_len - 1) + [float(x) for x in sampled]


def with_logprobs(rows: list[PolicyRow], advantages: list[float], old: list, ref: list | None) -> list[PolicyRow]:
    """The rows with their advantages and per-target log-probs (float32 arrays: what the loss computes in);
    `ref` None leaves the reference's out (`rl.kl_kind=full`)."""
    import numpy as np

    ref = ref if ref is not None else [()] * len(rows)
    return [replace(r, advantage=float(a), old_logprobs=np.asarray(o, dtype=np.float32), ref_logprobs=np.asarray(f, dtype=np.float32))
            for r, a, o, f in zip(rows, advantages, old, ref)]



def old_logprobs(rows: list, sampled: list, updates: int, on_policy: bool, recompute) -> tuple[list, list[bool]]:
    """A step's old log-probs per row, and per update whether it takes its own pass's instead (`old_is_current`).

    `sampled`: the sampler's per row (`behaviour_logprobs`). With several updates on fresh samples (`on_policy`),
    the first update's policy is still the one that sampled, in the learner's numerics: it takes its own
    pass's, detached, and carries the sampler's only to measure the train/inference mismatch; the later
    updates' rows get the learner's, recomputed before any update (`recompute(rows)`). Otherwise (one update,
    or stale samples, for which only the sampler's are right) the sampler's are the old ones.
    """
    if updates == 1 or not on_policy:
        return list(sampled), [False] * updates
    size = len(rows) // updates
    return [*sampled[:size], *recompute(rows[size:])], [True] + [False] * (updates - 1)
