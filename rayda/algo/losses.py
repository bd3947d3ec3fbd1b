"""Token losses for the learner. Pure torch: no Ray, no DeepSpeed.

Shapes: B sequences, T positions, V vocabulary. `logits[b, t]` is the model's prediction for
`labels[b, t]`: callers shift once (`next_token`) so every function here sees aligned tensors.
`mask[b, t]` is 1 where the token is trained on (the assistant's reasoning and answer) and 0 on the
prompt and on padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def next_token(logits: torch.Tensor, input_ids: torch.Tensor, loss_mask: torch.Tensor):
    """Align a causal LM's outputs with its targets: position t predicts token t + 1.

    logits [B, T, V], input_ids [B, T], loss_mask [B, T] (1 on tokens to learn) ->
    logits [B, T-1, V], labels [B, T-1], mask [B, T-1].
    """
    return logits[:, :-1], input_ids[:, 1:], loss_mask[:, 1:]


def token_logprobs(logits: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """log p(labels[b, t] | prefix) for every position: [B, T, V], [B, T] -> [B, T] (float32), where
    p = softmax(logits / temperature): the distribution a sampler at that temperature draws from.

    cross_entropy works on [N, V] without materialising a second [B, T, V] log-softmax tensor; the
    float32 upcast keeps bf16 logits from rounding small probabilities to zero.
    """
    flat = logits.reshape(-1, logits.shape[-1]).float()
    if temperature != 1.0:
        flat = flat / temperature
    return -F.cross_entropy(flat, labels.reshape(-1), reduction="none").view(labels.shape)


def masked_nll(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed negative log-likelihood over masked tokens, and how many tokens that is."""
    mask = mask.to(torch.float32)
    return -(token_logprobs(logits, labels) * mask).sum(), mask.sum()


def sft_loss(
    logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, num_tokens: float | None = None
) -> tuple[torch.Tensor, dict]:
    """Mean next-token NLL over the masked tokens.

    `num_tokens` is the divisor. Leave it None for the mean over this micro-batch; the learner passes
    the masked-token count of the whole optimizer batch (over all micro-batches and ranks) so that
    every token weighs the same however the batch is cut up: a per-micro-batch mean would weigh a
    token in a short micro-batch more than one in a long one, and 1 rank and 2 ranks would then
    train different models on the same data.
    Returns the loss and {"nll_sum", "tokens"} (detached) for exact token-weighted logging.
    """
    nll, n = masked_nll(logits, labels, mask)
    divisor = n.clamp(min=1) if num_tokens is None else torch.as_tensor(float(num_tokens)).clamp(min=1)
    return nll / divisor, {"nll_sum": nll.detach(), "tokens": n.detach()}


def grpo_token_loss(
    logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, num_tokens: float | None = None, *,
    advantages: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor | None = None,
    clip: float = 0.2, clip_high: float | None = None, kl_coef: float = 0.05, kl_kind: str = "k3",
    temperature: float = 1.0, ref_logits: torch.Tensor | None = None, kl_weight: torch.Tensor | None = None,
    old_is_current: bool = False,
) -> tuple[torch.Tensor, dict]:
    """The GRPO loss (`rayda.algo.grpo.grpo_loss`) on a causal LM's aligned outputs.

    advantages [B]; old_logp, ref_logp [B, T], aligned with `labels` (the learner collates them from
    the rows, `rayda.rl.rows.PolicyRow`; ref_logp only for the sampled-token estimators, not `full`). `num_tokens` is the divisor, as in `sft_loss`.
    `temperature` is the rollouts' sampling temperature: the policy is scored as `softmax(logits / T)`,
    the distribution that drew the samples (`old_logp` and `ref_logp` must be computed the same way).
    `kl_kind="full"` takes the reference's logits [B, T, V] (`ref_logits`, aligned like `logits`) and
    penalises the exact KL over the vocabulary at every trained position (`rayda.algo.grpo.full_kl`).
    `kl_weight` [B, T] (from the rows' `kl_weights`) weighs each position's KL in the loss.
    Returns the loss and token sums for exact logging over micro-batches and ranks: `nll_sum` (the
    sampled tokens' NLL under the current policy: on-policy, an estimate of its entropy), `tokens`,
    `pg_sum`, `kl_sum`, `clipped_sum`, and `old_gap_sum` and `old_gap_max`, the
    |log p - old log p| of the trained tokens (with the sampler's log-probs as old ones: the
    train/inference mismatch, measured in the training pass itself).
    `old_is_current`: the policy has not been updated since it sampled these rows (a step's first update), so
    the ratio is taken against this pass's own log-probs, detached (exactly what a recompute before the
    update would give), and `old_logp` (the sampler's) serves only the mismatch figure.
    """
    from rayda.algo.grpo import full_kl, grpo_loss

    logp = token_logprobs(logits, labels, temperature)
    if kl_kind == "full" and ref_logits is None:
        raise ValueError("kl_kind='full' needs the reference's logits (ref_logits)")
    kl_tokens = full_kl(logits, ref_logits, temperature) if kl_kind == "full" else None
    loss, stats = grpo_loss(logp, logp.detach() if old_is_current else old_logp, ref_logp, advantages, mask, clip, kl_coef,
                            kl_kind, num_tokens, clip_high, kl_tokens, kl_weight)
    m = mask.to(torch.float32)
    sums = {k: stats[k] for k in ("pg_sum", "kl_sum", "clipped_sum")}
    gap = (logp.detach() - old_logp).abs() * m  # how far the trained policy is from the sampling one, per token
    sums |= {"old_gap_sum": gap.sum(), "old_gap_max": gap.max() if gap.numel() else torch.tensor(0.0)}
    return loss, {"nll_sum": -(logp.detach() * m).sum(), "tokens": m.sum(), **sums}


def bradley_terry_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, num_pairs: float | None = None) -> tuple[torch.Tensor, dict]:
    """The preference model's loss: -log sigmoid(r_chosen - r_rejected), summed over pairs [B] and
    divided by `num_pairs` (None: B), the pair count of the whole optimizer batch as `sft_loss`'s
    `num_tokens` is, so that every pair weighs the same however the batch is cut.

    Under Bradley-Terry, P(chosen preferred) = sigmoid(r_chosen - r_rejected): the loss is that
    probability's NLL. Its gradient raises r_chosen and lowers r_rejected by the same amount,
    sigmoid(r_rejected - r_chosen) per pair, so only the difference of scores is learnt (a constant
    shift of every score changes nothing). logsigmoid keeps large margins from overflowing.
    Returns the loss and {"nll_sum", "tokens" (pairs), "correct_sum" (pairs with r_chosen > r_rejected),
    "margin_sum"} (detached) for exact logging over micro-batches and ranks.
    """
    margin = r_chosen.float() - r_rejected.float()
    nll = -F.logsigmoid(margin).sum()
    n = torch.tensor(float(margin.numel()))
    divisor = n.clamp(min=1) if num_pairs is None else torch.as_tensor(float(num_pairs)).clamp(min=1)
    return nll / divisor, {"nll_sum": nll.detach(), "tokens": n, "correct_sum": (margin > 0).sum().detach().float(),
                           "margin_sum": margin.sum().detach()}


LOSSES = {"sft": sft_loss, "grpo": grpo_token_loss}
"""Losses the learner can run by name: fn(logits, labels, mask, num_tokens, **batch_extras) -> (loss, stats).
`stats` holds `nll_sum` and `tokens`; any other `*_sum` entry is added up over micro-batches by the
learner and returned by `train_step`."""
