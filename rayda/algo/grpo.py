"""GRPO: group-relative advantages, the clipped policy-gradient loss, and KL estimators.

Pure torch, no Ray, no DeepSpeed. Shapes: B sequences, T tokens; `mask` is 1 on the tokens the policy
generated (the reasoning and the answer) and 0 on prompt and padding.
"""

from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, valid: torch.Tensor | None = None, eps: float = 1e-6) -> torch.Tensor:
    """(r - mean) / (std + eps) within each group of samples of the same prompt.

    rewards, valid: [G, n] (G prompts, n samples each). Samples with valid == 0 (a judge error) take
    no part in the group's statistics and get advantage 0, so they add nothing to the gradient. A
    group whose valid rewards are all equal carries no signal and gets zeros rather than noise.
    """
    valid = torch.ones_like(rewards) if valid is None else valid.to(rewards.dtype)
    count = valid.sum(dim=1, keepdim=True).clamp(min=1)
    mean = (rewards * valid).sum(dim=1, keepdim=True) / count
    var = (((rewards - mean) ** 2) * valid).sum(dim=1, keepdim=True) / (count - 1).clamp(min=1)
    std = var.sqrt()
    centred = rewards - mean
    adv = torch.where(std > 0, centred / (std + eps), torch.zeros_like(centred))
    return adv * valid


def kl_estimate(logp: torch.Tensor, ref_logp: torch.Tensor, kind: str = "k3") -> torch.Tensor:
    """Per-token estimate of KL(policy || reference) from samples of the policy.

    k1 = log p - log q (unbiased, high variance, can be negative); k2 = (log p - log q)^2 / 2;
    k3 = q/p - 1 - log(q/p) (unbiased and always >= 0: the usual choice for a penalty).
    """
    diff = logp - ref_logp
    if kind == "k1":
        return diff
    if kind == "k2":
        return 0.5 * diff**2
    if kind == "k3":
        return torch.exp(-diff) - 1 + diff
    raise ValueError(f"unknown KL estimator {kind!r}; expected k1, k2 or k3")


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over the tokens where mask == 1 (token-level: long answers weigh by their length)."""
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1)


def clipped_pg_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
) -> tuple[torch.Tensor, dict]:
    """PPO-style clipped surrogate, per token: -min(ratio * A, clip(ratio, 1-c, 1+c) * A).

    logp, old_logp, mask: [B, T]; advantages: [B] (one per sequence, broadcast over its tokens).
    Returns the loss and statistics (the share of tokens whose ratio was clipped).
    """
    ratio = torch.exp(logp - old_logp)
    adv = advantages[:, None].to(logp.dtype)
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1 - clip, 1 + clip) * adv
    loss = masked_mean(-torch.minimum(unclipped, clipped), mask)
    clip_frac = masked_mean((unclipped != clipped).to(logp.dtype), mask)
    return loss, {"clip_frac": clip_frac.detach()}


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
    kl_coef: float = 0.05,
    kl_kind: str = "k3",
) -> tuple[torch.Tensor, dict]:
    """The clipped policy-gradient loss plus kl_coef times the KL to the frozen reference."""
    pg, stats = clipped_pg_loss(logp, old_logp, advantages, mask, clip)
    kl = masked_mean(kl_estimate(logp, ref_logp, kl_kind), mask)
    return pg + kl_coef * kl, {**stats, "pg_loss": pg.detach(), "kl": kl.detach()}
