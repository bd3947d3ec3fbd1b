"""GRPO math against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from rayda.algo.grpo import clipped_pg_loss, full_kl, group_advantages, grpo_loss, kl_estimate, label_weighted


def test_group_advantages_hand_computed():
    r = torch.tensor([[1.0, 0.0, 0.0, 1.0], [2.0, 2.0, 2.0, 2.0]])
    a = group_advantages(r, eps=0.0)
    # group 0: mean 0.5, sample std sqrt(1/3)
    s = math.sqrt(1 / 3)
    assert torch.allclose(a[0], torch.tensor([0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s]))
    assert torch.equal(a[1], torch.zeros(4))  # no signal in a constant group


def test_group_advantages_ignore_invalid_samples():
    r = torch.tensor([[1.0, 0.0, 99.0]])
    valid = torch.tensor([[1, 1, 0]])
    a = group_advantages(r, valid, eps=0.0)
    s = math.sqrt(0.5)  # std of [1, 0] with n-1
    assert torch.allclose(a, torch.tensor([[0.5 / s, -0.5 / s, 0.0]]))


def test_label_weights_scale_each_groups_advantages_by_its_prompts_label():
    adv = group_advantages(torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]]))
    out = label_weighted(adv, ["refuse", "comply", None], {"refuse": 2.0})
    assert torch.equal(out[0], 2 * adv[0]) and torch.equal(out[1:], adv[1:])  # unnamed labels and no label: 1
    assert torch.equal(label_weighted(adv, ["refuse"] * 3, {}), adv)


def test_kl_estimators():
    logp, ref = torch.tensor([-1.0, -2.0]), torch.tensor([-1.5, -1.0])
    d = logp - ref  # [0.5, -1.0]
    assert torch.allclose(kl_estimate(logp, ref, "k1"), d)
    assert torch.allclose(kl_estimate(logp, ref, "k2"), 0.5 * d**2)
    assert torch.allclose(kl_estimate(logp, ref, "k3"), torch.exp(-d) - 1 + d)
    assert (kl_estimate(logp, ref, "k3") >= 0).all()
    assert torch.equal(kl_estimate(ref, ref, "k3"), torch.zeros(2))
    with pytest.raises(ValueError, match="unknown KL estimator"):
        kl_estimate(logp, ref, "k9")


def test_full_kl_is_exact_and_sees_unsampled_tokens():
    # one position, a vocabulary of 3, KL(p || q) by hand
    p, q = torch.tensor([0.5, 0.25, 0.25]), torch.tensor([0.5, 0.45, 0.05])
    want = float((p * (p / q).log()).sum())
    got = full_kl(p.log()[None, None], q.log()[None, None])
    assert got.shape == (1, 1) and got.item() == pytest.approx(want, rel=1e-5)
    # The sampled token (index 0) kept its probability, so every sampled-token estimator reads 0,
    # while the exact KL charges the mass moved between the tokens that were not sampled.
    assert kl_estimate(p.log()[:1], q.log()[:1], "k3").item() == 0.0 and got.item() > 0.1
    # At temperature T both distributions are softmax(logits / T); identical logits give 0.
    assert full_kl(q.log()[None, None], q.log()[None, None], temperature=0.7).abs().item() < 1e-7
    hot = full_kl(p.log()[None, None], q.log()[None, None], temperature=2.0).item()
    pt, qt = torch.softmax(p.log() / 2, -1), torch.softmax(q.log() / 2, -1)
    assert hot == pytest.approx(float((pt * (pt / qt).log()).sum()), rel=1e-5)


def test_full_kl_loss_needs_the_reference_logits():
    from rayda.algo.losses import grpo_token_loss

    logits, labels, mask = torch.randn(1, 3, 5), torch.tensor([[1, 2, 3]]), torch.ones(1, 3)
    common = dict(advantages=torch.ones(1), old_logp=torch.zeros(1, 3), ref_logp=torch.zeros(1, 3), kl_kind="full")
    with pytest.raises(ValueError, match="ref_logits"):
        grpo_token_loss(logits, labels, mask, **common)
    _, same = grpo_token_loss(logits, labels, mask, ref_logits=logits.clone(), **common)
    _, moved = grpo_token_loss(logits, labels, mask, ref_logits=logits + torch.randn(1, 3, 5), **common)
    assert abs(float(same["kl_sum"])) < 1e-5 and float(moved["kl_sum"]) > 0


def test_full_kl_needs_no_reference_logprobs_and_the_estimators_do():
    """`rl.kl_kind=full` skips the pass for the sampled tokens' reference log-probs (the rows carry none,
    `loss_inputs` leaves ref_logp out): its loss is the same without them; k3 without them is an error."""
    from rayda.algo.losses import grpo_token_loss
    from rayda.rl.rows import PolicyRow, policy_row

    logits, labels, mask = torch.randn(2, 3, 5, requires_grad=True), torch.tensor([[1, 2, 3], [4, 0, 1]]), torch.ones(2, 3)
    common = dict(advantages=torch.tensor([1.0, -1.0]), old_logp=torch.full((2, 3), -1.6), kl_coef=0.1, kl_kind="full",
                  ref_logits=(logits + torch.randn(2, 3, 5)).detach())
    with_ref, _ = grpo_token_loss(logits, labels, mask, ref_logp=torch.randn(2, 3), **common)
    without, _ = grpo_token_loss(logits, labels, mask, **common)
    assert without.item() == with_ref.item()
    with pytest.raises(ValueError, match="ref_logp"):
        grpo_token_loss(logits, labels, mask, **{**common, "kl_kind": "k3"})
    row = policy_row([1, 2], [5, 6, 2])
    n = len(row.input_ids) - 1
    assert "ref_logp" not in PolicyRow.loss_inputs([PolicyRow(row.input_ids, row.loss_mask, "a", 1.0, [0.0] * n)], n)
    assert "ref_logp" in PolicyRow.loss_inputs([PolicyRow(row.input_ids, row.loss_mask, "a", 1.0, [0.0] * n, [0.0] * n)], n)


def test_clipped_loss_hand_computed():
    # one sequence of 3 tokens, last one masked out; ratios e^0.5, e^-0.5, 1
    logp = torch.tensor([[0.5, -0.5, 0.0]])
    old = torch.zeros(1, 3)
    mask = torch.tensor([[1, 1, 0]])
    loss, stats = clipped_pg_loss(logp, old, torch.tensor([1.0]), mask, clip=0.2)
    # A>0: token 1 ratio 1.6487 -> min(1.6487, 1.2) = 1.2; token 2 ratio 0.6065 -> min(0.6065, 0.8) = 0.6065
    assert loss.item() == pytest.approx(-(1.2 + math.exp(-0.5)) / 2, rel=1e-6)
    # The clip binds on token 1 only: token 2's ratio is outside [0.8, 1.2] too, but for A > 0 the
    # unclipped term is the smaller one there, so its gradient still flows.
    assert stats["clip_frac"].item() == pytest.approx(0.5)
    loss_neg, stats_neg = clipped_pg_loss(logp, old, torch.tensor([-1.0]), mask, clip=0.2)
    # A<0: -min(-r, -clip(r)) = max(r, clip(r)): token 1 -> 1.6487, token 2 -> 0.8
    assert loss_neg.item() == pytest.approx((math.exp(0.5) + 0.8) / 2, rel=1e-6)
    assert stats_neg["clip_frac"].item() == pytest.approx(0.5)  # token 2 binds (ratio < 0.8), token 1 does not


def test_clip_binds_exactly_where_the_gradient_is_zero():
    logp = torch.tensor([[0.5, -0.5, 0.1, -0.1]], requires_grad=True)
    for a in (1.0, -1.0):
        logp.grad = None
        loss, stats = clipped_pg_loss(logp, torch.zeros(1, 4), torch.tensor([a]), torch.ones(1, 4), clip=0.2)
        loss.backward()
        zero_grad = (logp.grad == 0).float()
        assert stats["clipped_sum"].item() == zero_grad.sum().item() == 1.0


def test_clip_higher_widens_only_the_upper_bound():
    logp, old, mask = torch.tensor([[0.25, -0.5]]), torch.zeros(1, 2), torch.ones(1, 2)
    # ratio e^0.25 = 1.284: clipped at 1.2 with the symmetric clip, free with clip_high 0.3
    sym, s_sym = clipped_pg_loss(logp, old, torch.tensor([1.0]), mask, clip=0.2)
    high, s_high = clipped_pg_loss(logp, old, torch.tensor([1.0]), mask, clip=0.2, clip_high=0.3)
    assert sym.item() == pytest.approx(-(1.2 + math.exp(-0.5)) / 2, rel=1e-6)
    assert high.item() == pytest.approx(-(math.exp(0.25) + math.exp(-0.5)) / 2, rel=1e-6)
    assert (s_sym["clipped_sum"].item(), s_high["clipped_sum"].item()) == (1.0, 0.0)
    # the lower bound is unchanged: A < 0 and ratio e^-0.5 < 0.8 is still clipped at 0.8
    neg, _ = clipped_pg_loss(logp, old, torch.tensor([-1.0]), mask, clip=0.2, clip_high=0.3)
    assert neg.item() == pytest.approx((math.exp(0.25) + 0.8) / 2, rel=1e-6)


def test_log_ratio_is_clamped_before_exp():
    logp = torch.tensor([[200.0, 0.0]], requires_grad=True)
    loss, _ = clipped_pg_loss(logp, torch.zeros(1, 2), torch.tensor([-1.0]), torch.ones(1, 2))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logp.grad).all()


def test_group_advantages_without_std_scaling():
    r = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    assert torch.allclose(group_advantages(r, scale="none"), torch.tensor([[0.25, 0.25, 0.25, -0.75]]))
    # with the std the lone failure's advantage is -0.75 / 0.5 = -1.5
    assert torch.allclose(group_advantages(r, eps=0.0), torch.tensor([[0.5, 0.5, 0.5, -1.5]]))
    with pytest.raises(ValueError, match="advantage scale"):
        group_advantages(r, scale="max")


def test_on_policy_gradient_is_advantage_weighted_logprob_gradient():
    logp = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    loss, _ = clipped_pg_loss(logp, logp.detach(), torch.tensor([2.0]), torch.ones(1, 2))
    loss.backward()
    assert torch.allclose(logp.grad, torch.tensor([[-1.0, -1.0]]))  # -A / n_tokens


def test_grpo_loss_adds_kl_penalty():
    logp = torch.tensor([[-1.0, -1.0]])
    ref = torch.tensor([[-1.5, -1.5]])
    loss, stats = grpo_loss(logp, logp, ref, torch.tensor([0.0]), torch.ones(1, 2), kl_coef=0.1)
    k3 = math.exp(-0.5) - 1 + 0.5
    assert stats["kl"].item() == pytest.approx(k3, rel=1e-6)
    assert loss.item() == pytest.approx(0.1 * k3, rel=1e-6)


def test_kl_weight_scales_each_tokens_penalty_in_the_loss_and_not_the_logged_kl():
    logp, ref = torch.tensor([[-1.0, -1.0, -1.0]]), torch.tensor([[-1.5, -1.5, -1.5]])
    mask, adv = torch.tensor([[0.0, 1.0, 1.0]]), torch.tensor([0.0])
    k3 = math.exp(-0.5) - 1 + 0.5
    loss, stats = grpo_loss(logp, logp, ref, adv, mask, kl_coef=0.1, kl_weight=torch.tensor([[9.0, 3.0, 1.0]]))
    assert loss.item() == pytest.approx(0.1 * k3 * (3 + 1) / 2, rel=1e-6)  # the masked token's weight counts for nothing
    assert stats["kl"].item() == pytest.approx(k3, rel=1e-6) and stats["kl_sum"].item() == pytest.approx(2 * k3, rel=1e-6)
    plain, _ = grpo_loss(logp, logp, ref, adv, mask, kl_coef=0.1, kl_weight=torch.ones(1, 3))
    assert plain.item() == pytest.approx(0.1 * k3, rel=1e-6)


def test_reasoning_kl_weights_cover_the_reasoning_through_its_closing_tag_and_collate_per_target():
    from rayda.rl.rows import PolicyRow, policy_row, reasoning_kl_weights

    close = [7, 8]  # "</think>" in two tokens
    w = reasoning_kl_weights(3, [5, 6, 7, 8, 9, 2], close, 4.0)
    assert w == [1.0, 1.0] + [4.0] * 4 + [1.0, 1.0]  # 2 prompt targets, reasoning + tag, answer + end of turn
    assert reasoning_kl_weights(2, [5, 7, 6], close, 4.0) == [1.0] + [4.0] * 3  # no closing tag: all reasoning
    assert reasoning_kl_weights(2, [7, 8, 7, 8, 9], close, 0.5) == [1.0, 0.5, 0.5, 1.0, 1.0, 1.0]  # the first tag ends it
    row = policy_row([1, 2, 3], [5, 6, 7, 8, 9, 2])
    assert row.kl_weights == () and policy_row([1, 2, 3], [5, 6, 7, 8, 9, 2], "a", True, 4.0, close).kl_weights == w
    n = len(row.input_ids) - 1
    weighted = PolicyRow(row.input_ids, row.loss_mask, "a", 1.0, [0.0] * n, [0.0] * n, w)
    plain = PolicyRow(row.input_ids, row.loss_mask, "b", 1.0, [0.0] * n, [0.0] * n)
    out = PolicyRow.loss_inputs([weighted, plain], n + 2)
    assert out["kl_weight"][0].tolist() == w + [1.0, 1.0] and out["kl_weight"][1].tolist() == [1.0] * (n + 2)
    assert "kl_weight" not in PolicyRow.loss_inputs([plain], n)
    with pytest.raises(ValueError, match="kl_weight has 2 entries"):
        PolicyRow.loss_inputs([PolicyRow(row.input_ids, row.loss_mask, "c", 1.0, [0.0] * n, [0.0] * n, [1.0, 1.0])], n)


def test_grpo_token_loss_scores_the_policy_at_the_sampling_temperature():
    from rayda.algo.losses import grpo_token_loss

    # One position, two tokens; logits [ln 4, 0] at T = 2 are softmax([ln 2, 0]) = [2/3, 1/3].
    logits = torch.tensor([[[math.log(4.0), 0.0]]], requires_grad=True)
    labels, mask = torch.tensor([[0]]), torch.ones(1, 1)
    old = torch.tensor([[math.log(2 / 3)]])
    loss, stats = grpo_token_loss(logits, labels, mask, advantages=torch.tensor([1.0]), old_logp=old, ref_logp=old,
                                  kl_coef=0.0, temperature=2.0)
    assert stats["nll_sum"].item() == pytest.approx(-math.log(2 / 3), rel=1e-6)  # not -log(4/5), the T = 1 value
    assert stats["clipped_sum"].item() == 0.0  # ratio 1: old log-probs at T = 2 match the policy at T = 2
    loss.backward()
    # d(-A * p/p_old)/dz0 at ratio 1 = -(1 - 2/3) / T = -1/6
    assert logits.grad[0, 0, 0].item() == pytest.approx(-1 / 6, rel=1e-5)


def test_dynamic_sampling_trains_on_the_groups_with_signal_first():
    from rayda.algo.grpo import group_signal, informative_groups

    rewards = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 1.0], [0.5, 0.5, 0.5]])
    valid = torch.ones_like(rewards)
    assert group_signal(rewards, valid) == [False, True, False, True, False]
    assert informative_groups(rewards, valid, 2) == [1, 3]
    assert informative_groups(rewards, valid, 3) == [0, 1, 3]  # filled up with the first group without signal, batch order kept
    assert informative_groups(rewards, valid, 5) == [0, 1, 2, 3, 4]
    # A judge error's sample does not count: the group's valid rewards are all 1.
    valid[1, 0] = 0
    assert group_signal(rewards, valid)[1] is False
    assert informative_groups(rewards, valid, 1) == [3]
