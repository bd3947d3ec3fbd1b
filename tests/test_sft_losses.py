"""Pure tests of the SFT loss, the learning-rate schedule, the data order and the DeepSpeed config."""

from __future__ import annotations

import math

import pytest
import torch

from rayda.algo.losses import masked_nll, next_token, sft_loss, token_logprobs
from rayda.algo.schedule import warmup_cosine
from rayda.data.sft import batch_indices
from rayda.engines.deepspeed_engine import LearnerOptions, ds_config


def _logits():
    # Two positions over a vocabulary of 2: uniform, then 3:1 in favour of token 0.
    return torch.tensor([[[0.0, 0.0], [math.log(3.0), 0.0]]])


def test_sft_loss_matches_hand_computed_values():
    labels = torch.tensor([[0, 1]])
    # -log p: position 0 -> log 2; position 1 (label 1 has p = 1/4) -> log 4.
    assert torch.allclose(token_logprobs(_logits(), labels), torch.tensor([[-math.log(2), -math.log(4)]]))
    loss, stats = sft_loss(_logits(), labels, torch.tensor([[1, 1]]))
    assert loss.item() == pytest.approx(1.5 * math.log(2))
    assert stats["tokens"].item() == 2 and stats["nll_sum"].item() == pytest.approx(3 * math.log(2))
    loss, _ = sft_loss(_logits(), labels, torch.tensor([[0, 1]]))
    assert loss.item() == pytest.approx(math.log(4))
    # A global divisor: the learner divides by the token count of the whole optimizer batch.
    loss, _ = sft_loss(_logits(), labels, torch.tensor([[1, 1]]), num_tokens=4)
    assert loss.item() == pytest.approx(3 * math.log(2) / 4)


def test_loss_mask_prompt_labels_do_not_matter_answer_labels_do():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 11)
    labels = torch.randint(0, 11, (2, 6))
    mask = torch.tensor([[0, 0, 1, 1, 1, 0], [0, 0, 0, 1, 1, 1]])  # prompt, answer, padding
    base, _ = masked_nll(logits, labels, mask)
    changed_prompt = labels.clone()
    changed_prompt[0, 1] = (labels[0, 1] + 1) % 11
    changed_prompt[1, 2] = (labels[1, 2] + 5) % 11
    assert masked_nll(logits, changed_prompt, mask)[0].item() == base.item()
    changed_answer = labels.clone()
    changed_answer[0, 3] = (labels[0, 3] + 1) % 11
    assert masked_nll(logits, changed_answer, mask)[0].item() != pytest.approx(base.item())


def test_next_token_alignment():
    logits = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    ids = torch.tensor([[5, 6, 7, 8], [1, 2, 3, 4]])
    loss_mask = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 0]])
    lg, lb, m = next_token(logits, ids, loss_mask)
    assert lg.shape == (2, 3, 3) and torch.equal(lb, ids[:, 1:]) and torch.equal(m, loss_mask[:, 1:])
    assert torch.equal(lg[:, 0], logits[:, 0])  # position 0 predicts token 1


def test_warmup_cosine():
    assert warmup_cosine(0, 100, 4) == pytest.approx(0.2)
    assert warmup_cosine(3, 100, 4) == pytest.approx(0.8)
    assert warmup_cosine(4, 100, 4) == pytest.approx(1.0)
    assert warmup_cosine(99, 100, 4, min_ratio=0.1) == pytest.approx(0.1)
    mid = warmup_cosine(4 + 95 // 2, 100, 4, min_ratio=0.0)
    assert 0.45 < mid < 0.55
    assert warmup_cosine(0, 1, 0) == pytest.approx(1.0)


def test_batch_indices_is_an_endless_stream_of_epochs():
    n, b = 10, 4
    stream = [i for step in range(5) for i in batch_indices(n, step, b, seed=3)]
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    assert stream[:10] != stream[10:20]  # each epoch its own order
    assert batch_indices(n, 2, b, seed=3) == stream[8:12]  # a step straddling two epochs
    assert batch_indices(n, 2, b, seed=3) == batch_indices(n, 2, b, seed=3)
    assert batch_indices(n, 0, b, seed=4) != batch_indices(n, 0, b, seed=3)



def test_stratified_batches_hold_each_stratum_in_its_share_and_stay_a_stream_of_epochs():
    keys = ["refuse"] * 50 + ["comply"] * 30 + ["safe"] * 20
    for seed in range(5):
        stream = [i for step in range(25) for i in batch_indices(100, step, 16, seed, keys)]
        for e in range(4):  # every epoch is a permutation, each its own
            assert sorted(stream[e * 100:(e + 1) * 100]) == list(range(100))
        assert stream[:100] != stream[100:200]
        for step in range(20):  # a batch holds each stratum within one of its share (two across epochs)
            window = [keys[i] for i in stream[step * 16:(step + 1) * 16]]
            slack = 1 if step * 16 // 100 == (step * 16 + 15) // 100 else 2
            for key, share in (("refuse", 0.5), ("comply", 0.3), ("safe", 0.2)):
                assert abs(window.count(key) - 16 * share) <= slack + 1e-9, (seed, step, key, window.count(key))
    assert batch_indices(100, 3, 16, 0, keys) != batch_indices(100, 3, 16, 1, keys)
    with pytest.raises(ValueError, match="3 strata for 100 examples"):
        batch_indices(100, 0, 16, 0, keys[:3])


def test_ds_config_from_options():
    cfg = ds_config(LearnerOptions(zero_stage=3, offload_optimizer=True, offload_params=True,
                                   micro_batch_size=4, grad_accum=2, grad_clip=0.5), world_size=2)
    assert cfg["train_batch_size"] == 16 and cfg["gradient_accumulation_steps"] == 2
    assert cfg["zero_optimization"]["stage"] == 3
    assert cfg["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert cfg["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert cfg["gradient_clipping"] == 0.5
    if not torch.cuda.is_available():
        assert not cfg["bf16"]["enabled"] and not cfg["fp16"]["enabled"]  # auto = fp32 on CPU
    assert ds_config(LearnerOptions(dtype="bfloat16"), 1)["bf16"]["enabled"]
    with pytest.raises(ValueError, match="offload_params needs zero_stage 3"):
        ds_config(LearnerOptions(zero_stage=2, offload_params=True), 1)
    with pytest.raises(ValueError, match="zero_stage"):
        ds_config(LearnerOptions(zero_stage=4), 1)


def test_token_logprobs_at_a_temperature_are_those_of_the_tempered_softmax():
    logits = torch.tensor([[[math.log(4.0), 0.0]]])  # T = 2: softmax([ln 2, 0]) = [2/3, 1/3]
    assert token_logprobs(logits, torch.tensor([[1]]), 2.0).item() == pytest.approx(math.log(1 / 3), rel=1e-6)
    assert token_logprobs(logits, torch.tensor([[1]])).item() == pytest.approx(math.log(1 / 5), rel=1e-6)
