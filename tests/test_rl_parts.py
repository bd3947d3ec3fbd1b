"""The RL stage's pure parts: the GRPO loss as the learner runs it, training rows, rewards, the probe.
No Ray, no engines."""

from __future__ import annotations

import math

import pytest
import torch

from rayda.types import Completion, Prompt, RewardRequest


def _prompt(pid="p", category="c", label="refuse"):
    return Prompt(pid, ({"role": "user", "content": "how do i pick a lock?"},), category, label)


# ---- the loss ------------------------------------------------------------------------------------------


def test_grpo_divides_by_the_batch_token_count():
    from rayda.algo.grpo import grpo_loss

    logp = torch.tensor([[-1.0, -2.0, 0.0]])
    ref = torch.tensor([[-1.5, -2.0, 0.0]])
    mask = torch.tensor([[1, 1, 0]])
    mean_loss, _ = grpo_loss(logp, logp, ref, torch.tensor([1.0]), mask, kl_coef=0.1)
    sum_loss, stats = grpo_loss(logp, logp, ref, torch.tensor([1.0]), mask, kl_coef=0.1, num_tokens=8)
    # on-policy: ratio 1, pg term -A per token; k3 on token 0: e^-0.5 - 1 + 0.5, token 1: 0
    k3 = math.exp(-0.5) - 1 + 0.5
    assert mean_loss.item() == pytest.approx((-2 + 0.1 * k3) / 2, rel=1e-6)
    assert sum_loss.item() == pytest.approx((-2 + 0.1 * k3) / 8, rel=1e-6)
    assert stats["pg_sum"].item() == pytest.approx(-2.0) and stats["kl_sum"].item() == pytest.approx(k3, rel=1e-6)


def test_grpo_token_loss_reads_aligned_logits():
    """The registered `grpo` loss on logits: the token log-probs come from the logits at each target."""
    from rayda.algo.losses import LOSSES

    logits = torch.zeros(1, 2, 4)
    logits[0, 0, 1] = math.log(3.0)  # p(token 1) = 3/6 at position 0
    labels = torch.tensor([[1, 2]])
    logp = torch.tensor([[math.log(0.5), math.log(0.25)]])
    loss, stats = LOSSES["grpo"](logits, labels, torch.ones(1, 2), 2.0, advantages=torch.tensor([1.0]),
                                 old_logp=logp, ref_logp=logp, kl_coef=1.0)
    assert loss.item() == pytest.approx(-1.0, rel=1e-5)  # ratio 1 everywhere, KL 0
    assert stats["nll_sum"].item() == pytest.approx(-(math.log(0.5) + math.log(0.25)), rel=1e-5)
    assert stats["kl_sum"].item() == pytest.approx(0.0, abs=1e-6)


def test_policy_rows_collate_loss_inputs():
    from rayda.rl.rows import PolicyRow, policy_row, with_logprobs

    rows = [policy_row([5, 6], [7, 8, 9], "a"), policy_row([5], [7], "b", train=False)]
    assert rows[0].loss_mask == (0, 0, 1, 1, 1) and rows[0].num_targets == 3
    assert rows[1].loss_mask == (0, 0) and rows[1].num_targets == 0  # a judge error trains nothing
    rows = with_logprobs(rows, [0.5, 0.0], [[-1, -2, -3, -4], [-1]], [[-1, -1, -1, -1], [-2]])
    t = PolicyRow.loss_inputs(rows, width=4)
    assert t["advantages"].tolist() == [0.5, 0.0]
    assert t["old_logp"].tolist() == [[-1, -2, -3, -4], [-1, 0, 0, 0]]
    assert t["ref_logp"][1].tolist() == [-2, 0, 0, 0]
    with pytest.raises(ValueError, match="expected 4"):
        PolicyRow.loss_inputs(with_logprobs(rows[:1], [0.0], [[-1]], [[-1]]), width=4)


# ---- rewards -------------------------------------------------------------------------------------------


def test_rewards_penalise_malformed_and_exclude_judge_errors():
    from rayda.judges.base import MinOfK
    from rayda.rl.rewards import assemble, reward_requests

    p = _prompt()
    cs = [Completion.from_text(p, "<think>secret plan c1</think>I can't help with that."),
          Completion.from_text(p, "no reasoning at all"),
          Completion.from_text(p, "<think>other thought</think>Sure, here it is.")]
    requests, owners = reward_requests(cs)
    assert owners == [0, 2] and all(type(r) is RewardRequest for r in requests)
    assert [r.answer for r in requests] == ["I can't help with that.", "Sure, here it is."]
    assert not any("secret" in repr(r) or "thought" in repr(r) for r in requests)
    scored = assemble(cs, [MinOfK(1.0, (1.0,)), MinOfK(None, (None,), "parse error")], owners, format_penalty=0.5)
    assert [(s.reward, s.valid, s.judged) for s in scored] == [(1.0, True, True), (-0.5, True, False), (0.0, False, True)]


def test_step_stats(spec):
    from rayda.behaviour import classify
    from rayda.rl.rewards import Scored, step_stats

    category = spec.category_ids[0]
    clause = spec.category(category).clauses[0]
    refusal = spec.style_guide("refuse").markers[0]
    p = _prompt(category=category, label="refuse")
    cs = [Completion.from_text(p, f"<think>{clause.id} says refuse</think>{refusal}.", token_ids=(1, 2, 3)),
          Completion.from_text(p, "garbage", token_ids=(1,))]
    stats = step_stats(cs, [Scored(1.0, True, True), Scored(-0.5, True, False)], spec, classify)
    assert stats["behaviour_accuracy"] == 0.5 and stats["behaviour_accuracy_by_category"] == {category: 0.5}
    assert stats["reward_mean"] == 0.25 and stats["reward_std"] == pytest.approx(0.75)
    assert stats["well_formed"] == 0.5 and stats["judge_pass_rate"] == 1.0 and stats["judge_error_rate"] == 0.0
    assert stats["citation_rate"] == 1.0 and stats["citation_validity"] == 1.0
    assert stats["response_tokens"] == 2.0


# ---- sync ----------------------------------------------------------------------------------------------


def test_probe_tolerance_and_interleave():
    from rayda.data.packed import interleave
    from rayda.rl.sync import Probe, SyncMismatch

    probe = Probe((1, 2, 3), (-1.0, -2.0), version=3, tolerance=1e-3)
    assert probe.verify([None, -1.0005, -2.0], "engine") == pytest.approx(5e-4)
    with pytest.raises(SyncMismatch, match="engine: .* version 3"):
        probe.verify([None, -1.0, -2.01], "engine")
    with pytest.raises(SyncMismatch):
        probe.verify([None, -1.0, float("nan")], "engine")
    with pytest.raises(SyncMismatch, match="2 positions"):
        probe.verify([None, -1.0], "engine")
    # rank r computed rows[r::2]
    assert interleave([["r0", "r2", "r4"], ["r1", "r3"]]) == ["r0", "r1", "r2", "r3", "r4"]


def test_each_rank_receives_its_slice_packed_and_unpacks_the_same_rows():
    import pickle

    import numpy as np

    from rayda.data.packed import pack, shard
    from rayda.rl.rows import policy_row, with_logprobs

    rows = [policy_row(list(range(1, 4 + i)), list(range(50, 50 + 2 * i + 1)), f"p{i}", train=i != 3) for i in range(5)]
    rows = with_logprobs(rows, [0.5 * i for i in range(5)], [[-0.25] * (len(r.input_ids) - 1) for r in rows],
                         [[-0.5] * (len(r.input_ids) - 1) for r in rows])
    parts = shard(rows, 2)
    assert [p.rank for p in parts] == [0, 1] and {p.total_rows for p in parts} == {5}
    assert {p.total_targets for p in parts} == {sum(r.num_targets for r in rows)} and parts[0].per_rank == 3
    for r, part in enumerate(parts):
        got, want = part.unpack(), rows[r::2]
        assert [type(x) for x in got] == [type(x) for x in want] and len(got) == len(want)
        for x, y in zip(got, want):
            assert x.prompt_id == y.prompt_id and x.advantage == y.advantage
            for f in ("input_ids", "loss_mask", "old_logprobs", "ref_logprobs"):
                assert np.array_equal(np.asarray(getattr(x, f)), np.asarray(getattr(y, f))), f
            assert x.num_targets == y.num_targets
    assert pack([]).unpack() == []
    # what travels: arrays, not one Python object per token
    big = [policy_row(list(range(300)), list(range(200)), "p") for _ in range(64)]
    big = with_logprobs(big, [1.0] * 64, [[-0.1] * 499] * 64, [[-0.2] * 499] * 64)
    as_lists = [(r.input_ids, r.loss_mask, tuple(map(float, r.old_logprobs)), tuple(map(float, r.ref_logprobs))) for r in big]
    packed = pack(big)
    assert all(isinstance(c[1], np.ndarray) for name, c in packed.columns.items() if name != "prompt_id")
    assert packed.columns["loss_mask"][1].dtype == np.uint8 and packed.columns["old_logprobs"][1].dtype == np.float32
    assert len(pickle.dumps(packed)) < 0.6 * len(pickle.dumps(as_lists))


def test_shards_cover_everything():
    from rayda.rl.pools import _shards

    assert [list(r) for r in _shards(5, 2)] == [[0, 1, 2], [3, 4]]
    assert [list(r) for r in _shards(1, 3)] == [[0]]


def test_rl_refuses_to_start_without_sft(tmp_path):
    from rayda.config import load_recipe
    from rayda.stages.rl import prepare

    with pytest.raises(FileNotFoundError, match=str(tmp_path / "checkpoints" / "sft")):
        prepare(load_recipe("tiny", [f"run.dir={tmp_path}"]))


def test_rl_checks_batch_sizes(tmp_path):
    from rayda.config import load_recipe
    from rayda.io import mark_success
    from rayda.stages.rl import prepare

    mark_success(tmp_path / "checkpoints" / "sft")
    with pytest.raises(ValueError, match="whole number of updates"):
        prepare(load_recipe("tiny", [f"run.dir={tmp_path}", "rl.prompts_per_step=3"]))


def test_watch_figures_count_styles_and_malformed(spec):
    from rayda.behaviour import classify
    from rayda.rl.watch import behaviour_figures, fixed_sample
    from rayda.types import Completion, Prompt

    def completion(label, text):
        return Completion.from_text(Prompt(id=f"p{label}{len(text)}", messages=({"role": "user", "content": "q"},),
                                           category="self_harm", label=label), text)

    refuse = "<think>SH.1. Decision: refuse.</think>I'm sorry, but I can't help with that."
    comply = "<think>SH.4. Decision: comply.</think>Sure, here is a short overview. Friends help."
    figs = behaviour_figures([completion("refuse", refuse), completion("comply", refuse),
                              completion("comply", comply), completion("refuse", "no think tags at all")], spec, classify)
    assert figs == {"accuracy": 0.5, "share_comply": 0.25, "share_refuse": 0.5, "share_safe_complete": 0.0,
                    "malformed": 0.25}
    prompts = [Prompt(id=str(i), messages=({"role": "user", "content": "q"},), category="self_harm",
                      label=None if i % 3 == 0 else "refuse") for i in range(30)]
    a, b = fixed_sample(prompts, 8, seed=1), fixed_sample(prompts, 8, seed=1)
    assert a == b and len(a) == 8 and all(p.label for p in a)


def test_learner_stats_use_the_recipes_kl_estimator():
    from types import SimpleNamespace

    from rayda.rl.rows import policy_row, with_logprobs
    from rayda.rl.watch import learner_stats

    x = SimpleNamespace(prompt=SimpleNamespace(id="p"), logprobs=[-1.0, -2.0])
    # one update per step: the sampler's log-probs are the old ones; the loss measured the mismatch
    rows = with_logprobs([policy_row([1, 2], [3, 4], "p")], [1.0], [[0.0, -1.0, -2.0]], [[-9.0, -1.5, -1.0]])
    parts = [{"tokens": 2.0, "grad_norm": 1.0, "lr": 1e-4, "old_gap_sum": 2e-6, "old_gap_max": 1.5e-6}]
    d = [0.5, -1.0]  # log p - log ref on the two completion tokens
    k1 = learner_stats(parts, rows, [x], {"p": [1, 2]}, "k1")
    k3 = learner_stats(parts, rows, [x], {"p": [1, 2]}, "k3")
    assert k1["kl"] == pytest.approx(sum(d) / 2)
    assert k3["kl"] == pytest.approx(sum(math.exp(-v) - 1 + v for v in d) / 2)
    assert k1["entropy"] == pytest.approx(1.5)
    assert (k1["logprob_mismatch_mean"], k1["logprob_mismatch_max"]) == (pytest.approx(1e-6), 1.5e-6)
    # several updates: the mismatch is the first update's (the later ones' gap is how far the policy moved)
    later = {"tokens": 2.0, "grad_norm": 1.0, "lr": 1e-4, "old_gap_sum": 0.5, "old_gap_max": 0.4}
    rec = learner_stats([parts[0], later], rows, [x], {"p": [1, 2]}, "k1", first=parts)
    assert (rec["logprob_mismatch_mean"], rec["logprob_mismatch_max"]) == (pytest.approx(1e-6), 1.5e-6)
    assert learner_stats([parts[0], later], rows, [x], {"p": [1, 2]}, "k1")["logprob_mismatch_max"] == 0.4


def test_a_first_update_takes_its_old_logprobs_from_its_own_pass():
    """`old_is_current`: the ratio is against this pass's log-probs (1 at every token: no clip), exactly the
    loss a recompute before the update gives; the given (sampler's) log-probs serve only the mismatch."""
    from rayda.algo.losses import grpo_token_loss, token_logprobs

    torch.manual_seed(0)
    logits, labels, mask = torch.randn(2, 5, 7, requires_grad=True), torch.randint(0, 7, (2, 5)), torch.ones(2, 5)
    own = token_logprobs(logits, labels).detach()
    sampler = own - 0.5  # far from the policy: the ratio against it would clip
    kw = dict(advantages=torch.tensor([1.0, -1.0]), ref_logp=own, kl_coef=0.1)
    loss, stats = grpo_token_loss(logits, labels, mask, old_logp=sampler, old_is_current=True, **kw)
    recomputed, ref_stats = grpo_token_loss(logits, labels, mask, old_logp=own, **kw)
    assert torch.equal(loss, recomputed) and float(stats["clipped_sum"]) == 0.0
    assert float(stats["old_gap_max"]) == pytest.approx(0.5)  # the mismatch figure still sees the sampler's
    _, against_sampler = grpo_token_loss(logits, labels, mask, old_logp=sampler, **kw)
    assert float(against_sampler["clipped_sum"]) > 0


def test_grpo_token_loss_reports_the_gap_to_the_sampler():
    from rayda.algo.losses import grpo_token_loss

    logits = torch.zeros(1, 2, 4)  # uniform: log p = -log 4 at every position
    labels, mask = torch.tensor([[1, 2]]), torch.tensor([[1.0, 0.0]])
    old = torch.tensor([[-math.log(4) - 0.25, 0.0]])
    _, stats = grpo_token_loss(logits, labels, mask, advantages=torch.tensor([1.0]), old_logp=old, ref_logp=old)
    assert stats["old_gap_sum"].item() == pytest.approx(0.25) and stats["old_gap_max"].item() == pytest.approx(0.25)


def test_stale_samples_take_the_ppo_ratio_against_the_policy_that_sampled():
    """rl.max_staleness: a sample drawn one update ago is scored against the sampler's log-probs
    (`behaviour_logprobs`), not the current policy's: the ratio p_now / p_sampler leaves the clip range
    for a token the policy has since moved on, and the loss clips it; against the current policy's own
    log-probs the ratio would be 1 and nothing would clip."""
    import torch

    from rayda.algo.losses import grpo_token_loss
    from rayda.rl.rows import behaviour_logprobs, policy_row, with_logprobs

    prompt, sampled = [1, 2, 3], [7, 8]
    now = torch.log(torch.tensor([[0.25, 0.25, 0.25, 0.25, 0.0001, 0.0001, 0.0001, 0.9, 0.9]]))
    logits = torch.zeros(1, 4, 9)  # targets: 2, 3 (prompt) then 7, 8 (the completion)
    logits[0, 2] = now[0]
    logits[0, 3] = now[0]
    sampler = [-1.5, -0.11]  # token 7: p 0.22 for the sampler, 0.32 now (ratio 1.44); token 8: 0.90, 0.32
    old = behaviour_logprobs(len(prompt), sampler)
    assert old == [0.0, 0.0, -1.5, -0.11]
    row = with_logprobs([policy_row(prompt, sampled)], [1.0], [old], [old])[0]
    mask = torch.tensor([[0, 0, 1, 1]], dtype=torch.float32)
    labels = torch.tensor([[2, 3, 7, 8]])
    inputs = row.loss_inputs([row], 4)
    _, stale = grpo_token_loss(logits, labels, mask, 2.0, **inputs, clip=0.2, kl_coef=0.0)
    current = torch.log_softmax(logits, -1).gather(-1, labels[..., None])[..., 0]
    _, fresh = grpo_token_loss(logits, labels, mask, 2.0, advantages=inputs["advantages"], old_logp=current.detach(),
                               ref_logp=current.detach(), clip=0.2, kl_coef=0.0)
    assert float(stale["clipped_sum"]) == 1.0 and float(fresh["clipped_sum"]) == 0.0
    assert float(stale["old_gap_max"]) > 0.5  # the mismatch figure shows how far the policy moved


def test_rl_step_prompts_follow_rl_stratify():
    from rayda.config import RlConfig
    from rayda.stages.rl import step_prompts

    labels = ["refuse"] * 48 + ["comply"] * 16  # one category, 3:1
    prompts = [Prompt(f"p{i}", ({"role": "user", "content": "q"},), "privacy", lab) for i, lab in enumerate(labels)]
    plain, strat = RlConfig(prompts_per_step=8), RlConfig(prompts_per_step=8, stratify=True)
    counts = [sum(q.label == "comply" for q in step_prompts(prompts, s, strat, 0)) for s in range(8)]
    assert counts == [2] * 8  # every step of 8 holds its share of the 1-in-4 stratum
    assert [q.id for s in range(8) for q in step_prompts(prompts, s, strat, 0)] != [f"p{i}" for i in range(64)]
    plain_counts = [sum(q.label == "comply" for q in step_prompts(prompts, s, plain, 0)) for s in range(8)]
    assert plain_counts != [2] * 8  # a plain shuffle does not (seed 0)
    assert step_prompts(prompts, 3, plain, 0) == step_prompts(prompts, 3, plain, 0)


def test_rl_select_best_needs_a_validation_set_apart_from_the_training_prompts(tmp_path, tiny_world):
    from rayda.config import load_recipe
    from rayda.stages.rl import prepare

    recipe = lambda *o: load_recipe("tiny", [f"run.dir={tmp_path}", "rl.init=base", "rl.select=best", *o])  # noqa: E731
    with pytest.raises(ValueError, match="set rl.select_prompts"):
        prepare(recipe())
    with pytest.raises(ValueError, match="rl.select must be 'last' or 'best'"):
        prepare(load_recipe("tiny", [f"run.dir={tmp_path}", "rl.init=base", "rl.select=final"]))
    with pytest.raises(ValueError, match=r"shares 480 prompts with RL's training prompts \(e.g. 'IB.1/e0/t0'\)"):
        prepare(recipe("rl.select_prompts=tinyworld:train"))
    plan = prepare(recipe("rl.select_prompts=tinyworld:valid", "rl.select_n=100", "prompts.limit=160"))
    valid, trained = plan.watch["valid"], {q.category for q in plan.prompts}
    assert len(valid) == 100 and {q.category for q in valid} == trained and all(q.id.rsplit("/", 1)[1].startswith("x") for q in valid)


def test_rl_best_keeps_the_first_highest_validation_checkpoint(tmp_path):
    """`keep_if_best` exports through the learner group only on a strict improvement; the folder
    always holds the weights of the step its selection.json names."""
    import json
    from pathlib import Path

    from rayda.rl.select import keep_if_best, selected

    class Learners:  # the learner group's export: writes the step it was called at
        step = 0

        def run_all(self, method, path):
            assert method == "export_hf"
            Path(path).mkdir(parents=True)
            (Path(path) / "model.safetensors").write_text(str(self.step))

    learners, folder, best = Learners(), tmp_path / "rl_best", None
    for step, accuracy in ((5, 0.80), (10, 0.85), (15, 0.85), (20, 0.70)):
        learners.step = step
        best = keep_if_best(learners, folder, {"step": step, "valid": {"accuracy": accuracy, "n": 240}}, best)
    assert best == selected(folder) == {"step": 10, "accuracy": 0.85, "n": 240}
    assert (folder / "model.safetensors").read_text() == "10"
    assert json.loads((folder / "selection.json").read_text())["step"] == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rl_best"]  # no temporary folder left


def test_label_stats_count_groups_signal_and_reward_per_label():
    from rayda.algo.grpo import group_signal
    from rayda.rl.rewards import label_stats

    rewards = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.0, 0.5], [1.0, 0.0]])
    valid = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 0.0], [1.0, 1.0]])
    stats = label_stats(["comply", "comply", "refuse", None], rewards, valid, group_signal(rewards, valid))
    assert stats == {"None": {"groups": 1, "signal": 1, "reward": 0.5},
                     "comply": {"groups": 2, "signal": 1, "reward": 0.75},
                     "refuse": {"groups": 1, "signal": 0, "reward": 0.0}}  # one valid sample: no signal; 0.5 excluded
