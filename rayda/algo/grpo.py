"""GRPO: group-relative advantages, the clipped policy-gradient loss, and KL estimators.

Pure torch, no Ray, no DeepSpeed. Shapes: B sequences, T tokens; `mask` is 1 on the tokens the
policy generated (the reasoning and the answer) and 0 on prompt and padding.

Left out on purpose: a value function (GRPO has none), an entropy bonus (the KL to the reference
keeps the policy's spread), sequence-level importance ratios (the ratio is per token, as in PPO).
"""

from __future__ import annotations

import torch


def group_advantages(rewards: torch.Tensor, valid: torch.Tensor | None = None, eps: float = 1e-6,
                     scale: str = "std") -> torch.Tensor:
    """r - mean within each group of samples of the same prompt, divided by the group's std (`scale="std"`,
    GRPO) or not (`scale="none"`, Dr. GRPO: a group whose samples nearly all agree then pushes less hard
    on its one odd sample, instead of giving it an advantage of several units).

    rewards, valid: [G, n] (G prompts, n samples each). Samples with valid == 0 (a judge error) take
    no part in the group's statistics and get advantage 0, so they add nothing to the gradient. A
    group whose valid rewards are all equal carries no signal and gets zeros rather than noise.
    """
    if scale not in ("std", "none"):
        raise ValueError(f"unknown advantage scale {scale!r}; expected 'std' or 'none'")
    valid = torch.ones_like(rewards) if valid is None else valid.to(rewards.dtype)
    count = valid.sum(dim=1, keepdim=True).clamp(min=1)
    mean = (rewards * valid).sum(dim=1, keepdim=True) / count
    var = (((rewards - mean) ** 2) * valid).sum(dim=1, keepdim=True) / (count - 1).clamp(min=1)
    std = var.sqrt()
    centred = rewards - mean
    scaled = centred / (std + eps) if scale == "std" else centred
    adv = torch.where(std > 0, scaled, torch.zeros_like(centred))
    return adv * valid


def label_weighted(advantages: torch.Tensor, labels: list[str | None], weights: dict[str, float]) -> torch.Tensor:
    """Each group's advantages ([G, n]) times its prompt label's weight (`rl.label_weights`; 1 for a label
    not named or a prompt without one)."""
    scale = torch.tensor([float(weights.get(label, 1.0)) for label in labels], dtype=advantages.dtype)
    return advantages * scale[:, None]


def group_signal(rewards: torch.Tensor, valid: torch.Tensor | None = None) -> list[bool]:
    """For each of the G groups ([G, n] rewards): do its valid rewards differ? Only then does it carry signal."""
    valid = torch.ones_like(rewards, dtype=torch.bool) if valid is None else valid.bool()
    out = []
    for g in range(rewards.shape[0]):
        values = rewards[g][valid[g]]
        out.append(values.numel() > 1 and bool((values != values[0]).any()))
    return out


def informative_groups(rewards: torch.Tensor, valid: torch.Tensor | None, keep: int) -> list[int]:
    """Which `keep` of the G groups to train on (DAPO's dynamic sampling), in batch order: the groups
    with signal (`group_signal`) first, then the others to fill up to `keep`.

    Filling keeps a step's batch size fixed; the filled groups have zero advantage and add only their
    KL term.
    """
    signal = group_signal(rewards, valid)
    order = [g for g, s in enumerate(signal) if s] + [g for g, s in enumerate(signal) if not s]
    return sorted(order[:keep])


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


def full_kl(logits: torch.Tensor, ref_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Exact per-position KL(policy || reference) over the whole vocabulary: [B, T, V] x 2 -> [B, T].

    sum_v p(v) (log p(v) - log q(v)) with p, q = softmax(logits / T). Unlike k1-k3, which see only the
    sampled token, this also charges for probability moved onto tokens the policy did not sample: in
    a small model a reward on one context's decision token (say a clause number) leaks into every
    other context's, and only a full-vocabulary penalty sees that leak where it was not sampled.
    Costs one reference forward pass per micro-batch (the learner runs it).
    """
    logp = torch.log_softmax(logits.float() / temperature, dim=-1)
    logq = torch.log_softmax(ref_logits.float() / temperature, dim=-1)
    return (logp.exp() * (logp - logq)).sum(-1)


def masked_sum(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sum over the tokens where mask == 1."""
    return (x * mask.to(x.dtype)).sum()


def masked_mean(x: torch.Tensor, mask: torch.Tensor, num_tokens: float | None = None) -> torch.Tensor:
    """Mean over the tokens where mask == 1 (token-level: long answers weigh by their length).

    `num_tokens` replaces the divisor: the learner passes the masked-token count of the whole optimizer
    batch, so a token weighs the same in every micro-batch and on every rank (see `losses.sft_loss`).
    """
    divisor = mask.to(x.dtype).sum() if num_tokens is None else torch.as_tensor(float(num_tokens), dtype=x.dtype)
    return masked_sum(x, mask) / divisor.clamp(min=1)


MAX_LOG_RATIO = 20.0
"""|log p - log p_old| is clamped to this before `exp`: a token whose probability moved by e^20 has long
been clipped, and an unclamped exp would overflow to inf and poison the batch's gradient."""


def clipped_pg_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
    num_tokens: float | None = None,
    clip_high: float | None = None,
) -> tuple[torch.Tensor, dict]:
    """PPO-style clipped surrogate, per token: -min(ratio * A, clip(ratio, 1 - clip, 1 + clip_high) * A).

    logp, old_logp, mask: [B, T]; advantages: [B] (one per sequence, broadcast over its tokens).
    `old_logp` is the sampling policy's: the learner's own before a step's first update, or, when a step
    makes one update, the rollout engine's sampling log-probs (equal to the learner's up to the
    train/inference mismatch, so no second forward pass is needed).
    `clip_high` (None: = clip) is the upper bound (DAPO's clip-higher): a larger one lets the
    probability of a rare, rewarded token grow faster than the symmetric clip allows.
    Returns the loss and statistics: the share of tokens where the clip binds (the clipped term is the
    larger loss, so that token gets no gradient), and the token sums (`pg_sum`, `clipped_sum`) a
    caller adds up over micro-batches and ranks.
    """
    clip_high = clip if clip_high is None else clip_high
    ratio = torch.exp(torch.clamp(logp - old_logp, -MAX_LOG_RATIO, MAX_LOG_RATIO))
    adv = advantages[:, None].to(logp.dtype)
    unclipped = -ratio * adv
    clipped = -torch.clamp(ratio, 1 - clip, 1 + clip_high) * adv
    per_token = torch.maximum(unclipped, clipped)
    # The clip binds where the clipped loss is the larger one: A > 0 and ratio > 1 + clip_high, or A < 0
    # and ratio < 1 - clip. Only there is the token's gradient zero (it moved far enough this batch).
    binds = (clipped > unclipped).to(logp.dtype)
    loss = masked_mean(per_token, mask, num_tokens)
    stats = {"clip_frac": masked_mean(binds, mask).detach(),
             "pg_sum": masked_sum(per_token, mask).detach(), "clipped_sum": masked_sum(binds, mask).detach()}
    return loss, stats


def grpo_loss(
    logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor | None,
    advantages: torch.Tensor,
    mask: torch.Tensor,
    clip: float = 0.2,
    kl_coef: float = 0.05,
    kl_kind: str = "k3",
    num_tokens: float | None = None,
    clip_high: float | None = None,
    kl_tokens: torch.Tensor | None = None,
    kl_weight: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict]:
    """The clipped policy-gradient loss plus kl_coef times the KL to the frozen reference.

    The KL is a penalty in the loss (as in GRPO), not folded into the reward: the advantages stay
    pure group-relative judge scores, and the penalty's gradient acts on every token directly.
    `kl_tokens` [B, T], when given, is the per-token KL already computed (`full_kl`); otherwise it is
    estimated from the sampled tokens' log-probs with `kl_kind`. `kl_weight` [B, T], when given, weighs
    each token's penalty in the loss (`rl.kl_reasoning`); the logged `kl` and `kl_sum` stay unweighted.
    """
    pg, stats = clipped_pg_loss(logp, old_logp, advantages, mask, clip, num_tokens, clip_high)
    if kl_tokens is None:
        if ref_logp is None:
            raise ValueError(f"kl_kind={kl_kind!r} estimates the KL from the reference's log-probs of the sampled tokens (ref_logp)")
        kl_tokens = kl_estimate(logp, ref_logp, kl_kind)
    kl = masked_mean(kl_tokens, mask, num_tokens)
    penalty = kl if kl_weight is None else masked_mean(kl_tokens * kl_weight.to(kl_tokens.dtype), mask, num_tokens)
    return pg + kl_coef * penalty, {**stats, "pg_loss": pg.detach(), "kl": kl.detach(),
                               "kl_sum": masked_sum(kl_tokens, mask).detach()}
