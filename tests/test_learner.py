"""The learner group on a local Ray: 2 ranks over gloo with ZeRO-2 and ZeRO-3, export, resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from sft_fixtures import make_tiny_model, sft_rows, write_parquet

pytestmark = pytest.mark.ray


def test_group_runs_on_all_ranks_and_names_the_rank_that_died(ray_local):
    import ray

    from rayda.actors.group import ActorGroup, RankFailure
    from rayda.config import PoolConfig

    class Worker:  # defined here so that Ray ships it by value (workers cannot import test modules)
        def master_address(self):
            return "127.0.0.1", 0

        def setup(self, env):
            self.rank = env["RANK"]
            return env

        def ping(self, x):
            return (self.rank, x)

    group = ActorGroup(Worker, PoolConfig(actors=3, cpus_per_actor=0.1), "test-group")
    try:
        assert [e["RANK"] for e in group.info] == [0, 1, 2]
        assert all(e["WORLD_SIZE"] == 3 and e["LOCAL_RANK"] == 0 for e in group.info)
        assert group.run_all("ping", "x") == [(0, "x"), (1, "x"), (2, "x")]
        assert ray.get_actor("test-group-rank1") is not None  # readable names in the dashboard
        ray.kill(group.actors[1])
        with pytest.raises(RankFailure, match=r"rank 1 \(test-group-rank1\) died during ping"):
            group.run_all("ping", "y")
    finally:
        group.shutdown()


def _recipe(run_dir: Path, model: Path, **sft):
    from rayda.config import load_recipe

    base = dict(micro_batch_size=4, lr=0.003, warmup_steps=2, heldout_fraction=0.1, eval_every=10, save_every=0)
    base.update(sft)
    return load_recipe("tiny", [f"run.dir={run_dir}", f"model.policy={model}", "pools.learner.actors=2",
                                "pools.learner.cpus_per_actor=1", *(f"sft.{k}={v}" for k, v in base.items())])


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def _run(tmp: Path, model: Path, name: str, on_step=None, **sft) -> Path:
    from rayda.stages.sft import run

    run_dir = tmp / name
    write_parquet(sft_rows(96), run_dir / "sft_data" / "accepted.parquet")
    return run(_recipe(run_dir, model, **sft), progress=False, on_step=on_step)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("learner") / "model")


@pytest.fixture(scope="module")
def trained(ray_local, tiny_model, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sft")
    return {stage: _run(tmp, tiny_model, f"zero{stage}", zero_stage=stage, max_steps=30) for stage in (2, 3)}


@pytest.mark.slow
def test_two_ranks_zero2_and_zero3_train_and_export(trained, tiny_model):
    from transformers import AutoModelForCausalLM

    for stage, out in trained.items():
        assert (out / "_SUCCESS").exists()
        steps = [json.loads(line) for line in (out.parent.parent / "metrics.jsonl").read_text().splitlines()]
        assert [s["step"] for s in steps] == list(range(1, 31)) and all(s["stage"] == "sft" for s in steps)
        first, last = sum(s["loss"] for s in steps[:3]) / 3, sum(s["loss"] for s in steps[-3:]) / 3
        assert last < first - 1.0, (stage, first, last)  # loss falls (about 5.5 -> 1.5 here)
        assert steps[-1]["heldout_loss"] < steps[9]["heldout_loss"]
        report = json.loads((out / "train_report.json").read_text())
        assert report["ranks"] == 2 and report["zero_stage"] == stage
        AutoModelForCausalLM.from_pretrained(out)  # loads by path
    # Same data, seed and token-weighted loss: ZeRO-2 and ZeRO-3 train the same model.
    w2, w3 = _weights(trained[2]), _weights(trained[3])
    assert w2.keys() == w3.keys()
    worst = max((w2[k] - w3[k]).abs().max().item() for k in w2)
    assert worst < 1e-4, worst
    base = _weights(tiny_model)
    assert max((w3[k] - base[k]).abs().max().item() for k in w3) > 1e-2  # and it did train


@pytest.mark.slow
def test_zero3_export_gives_the_same_greedy_output_in_vllm_and_transformers(trained):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from vllm import LLM, SamplingParams

    path = str(trained[3])
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    prompts = [tok.apply_chat_template(r["messages"][:-1], add_generation_prompt=True, return_dict=False)
               for r in sft_rows(4, seed=7)]
    expected = [model.generate(torch.tensor([p]), max_new_tokens=24, do_sample=False)[0, len(p):].tolist()
                for p in prompts]
    llm = LLM(model=path, dtype="float32", enforce_eager=True, gpu_memory_utilization=0.2, max_model_len=256, seed=0)
    outs = llm.generate([{"prompt_token_ids": p} for p in prompts], SamplingParams(temperature=0, max_tokens=24))
    got = [list(o.outputs[0].token_ids) for o in outs]
    eos = tok.eos_token_id
    trim = lambda ids: ids[: ids.index(eos) + 1] if eos in ids else ids  # noqa: E731 (HF pads after eos)
    assert [trim(g) for g in got] == [trim(e) for e in expected]
    assert any(len(trim(e)) > 3 for e in expected)


class _Kill(Exception):
    pass


@pytest.mark.slow
def test_resume_after_a_kill_gives_the_same_weights_as_a_straight_run(trained, tiny_model, tmp_path):
    """Killed after step 12 (last checkpoint: step 10), resumed to step 30: the same weights as the
    straight 30-step ZeRO-2 run of `trained` (checkpointing does not change the math)."""

    def kill(step, record):
        if step == 12:
            raise _Kill

    with pytest.raises(_Kill):
        _run(tmp_path, tiny_model, "resumed", on_step=kill, zero_stage=2, max_steps=30, save_every=10)
    assert not (tmp_path / "resumed" / "checkpoints" / "sft" / "_SUCCESS").exists()
    resumed = _run(tmp_path, tiny_model, "resumed", zero_stage=2, max_steps=30, save_every=10)
    assert json.loads((resumed / "train_report.json").read_text())["resumed_from"] == 10
    a, b = _weights(trained[2]), _weights(resumed)
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst < 1e-6, worst  # fp32 on CPU, deterministic gloo: in practice bit-identical
    # and a finished stage is skipped
    assert _run(tmp_path, tiny_model, "resumed", zero_stage=2, max_steps=30) == resumed


@pytest.mark.slow
def test_averaged_export_is_the_mean_of_the_final_weights_and_the_kept_checkpoints(trained, tiny_model, tmp_path):
    """`sft.average_last=3` on the 30 steps of `trained[3]` (ZeRO-3: snapshots gathered from 2 ranks),
    killed after step 25 and resumed: the export is the mean of the straight run's final weights and
    the snapshots at steps 10 and 20, and a lost snapshot is rewritten from the resumed checkpoint."""
    from rayda.rl.merge import average_into

    def kill(step, record):
        if step == 25:
            raise _Kill

    options = dict(zero_stage=3, max_steps=30, save_every=10, average_last=3)
    with pytest.raises(_Kill):
        _run(tmp_path, tiny_model, "avg", on_step=kill, **options)
    state = tmp_path / "avg" / "checkpoints" / "sft_state"
    shutil.rmtree(state / "step20" / "weights")  # as if killed between the checkpoint and its snapshot
    out = _run(tmp_path, tiny_model, "avg", **options)
    assert json.loads((out / "train_report.json").read_text())["averaged_steps"] == [10, 20, 30]
    want = tmp_path / "want"
    shutil.copytree(trained[3], want)
    average_into(want, [state / "step10" / "weights", state / "step20" / "weights"])
    got, mean, final = _weights(out), _weights(want), _weights(trained[3])
    assert max((got[k] - mean[k]).abs().max().item() for k in got) < 1e-6
    assert max((got[k] - final[k]).abs().max().item() for k in got) > 1e-3  # the mean is not the end point


def test_one_grpo_update_moves_positive_samples_up_and_negative_ones_down(ray_local, tiny_model):
    """The real learner (DeepSpeed, one rank): one GRPO update on a fixed batch, whose old log-probs are
    the current weights' (they sampled it), raises the mean log-probability of the positive-advantage
    completions and lowers that of the negative ones."""
    import random

    from rayda.actors.group import ActorGroup
    from rayda.actors.learner import Learner
    from rayda.config import PoolConfig
    from rayda.engines.deepspeed_engine import LearnerOptions
    from rayda.rl.rows import policy_row, with_logprobs
    from rayda.rl.sync import learner_logprobs

    rng = random.Random(0)
    rows = [policy_row([1] + [rng.randrange(3, 150) for _ in range(6)], [rng.randrange(3, 150) for _ in range(8)], f"p{i}")
            for i in range(8)]
    adv = [1.0, -1.0] * 4
    opts = LearnerOptions(zero_stage=2, micro_batch_size=4, grad_accum=2, lr=1e-3, min_lr_ratio=1.0, warmup_steps=0,
                          total_steps=1, weight_decay=0.0, grad_clip=1.0, dtype="float32", seed=0, pad_id=0)

    def completion_logp(lps):  # mean log-prob of each row's 8 completion tokens (the last 8 targets)
        return [sum(lp[-8:]) / 8 for lp in lps]

    with ActorGroup(Learner, PoolConfig(actors=1, cpus_per_actor=1), "grpo-direction", setup_args=(str(tiny_model), opts)) as group:
        before = learner_logprobs(group, rows)
        batch = with_logprobs(rows, adv, before, before)  # old and reference = the starting weights
        group.run_sharded("train_step", batch, "grpo", clip=0.2, kl_coef=0.0)
        after = learner_logprobs(group, rows)
        # rows with per-target KL weights (rl.kl_reasoning) train on the real learner, with the exact KL
        weighted = with_logprobs([policy_row(r.input_ids[:7], r.input_ids[7:], r.prompt_id, True, 5.0, [r.input_ids[10]])
                                  for r in rows], adv, before, None)  # full KL: no reference log-probs, as the stage sends
        assert all(len(r.kl_weights) == len(r.input_ids) - 1 for r in weighted)  # with_logprobs keeps them
        stats = group.run_sharded("train_step", weighted, "grpo", clip=0.2, kl_coef=0.1, kl_kind="full")
    assert all(s["kl_sum"] > 0 for s in stats), stats  # the policy moved from the reference in the first update
    moved = [a - b for a, b in zip(completion_logp(after), completion_logp(before))]
    assert all(m > 0 for m, a in zip(moved, adv) if a > 0), moved
    assert all(m < 0 for m, a in zip(moved, adv) if a < 0), moved


@pytest.mark.slow
def test_grpo_update_is_the_same_on_one_and_two_ranks_and_a_reference_group_matches(ray_local, tiny_model):
    """Each rank receives only its shard (`run_sharded`), yet one GRPO update on 1 rank (2 micro-batches)
    and on 2 ranks (1 each) gives the same policy; and a reference group (2 frozen ZeRO-3 ranks,
    `pools.reference`) gives the same log-probs as the learner's own reference copy."""
    import random

    import numpy as np

    from rayda.actors.group import ActorGroup
    from rayda.actors.learner import Learner
    from rayda.config import PoolConfig
    from rayda.engines.deepspeed_engine import LearnerOptions
    from rayda.rl.rows import policy_row, with_logprobs
    from rayda.rl.sync import learner_logprobs

    rng = random.Random(1)
    rows = [policy_row([1] + [rng.randrange(3, 150) for _ in range(4 + i % 3)], [rng.randrange(3, 150) for _ in range(5 + i)], f"p{i}")
            for i in range(8)]
    adv = [1.0, -0.5, 0.25, -1.0, 0.5, -0.25, 1.0, -1.0]
    opts = dict(zero_stage=2, micro_batch_size=4, lr=1e-3, min_lr_ratio=1.0, warmup_steps=0, total_steps=1,
                weight_decay=0.0, grad_clip=1.0, dtype="float32", seed=0, pad_id=0)
    pool = lambda n: PoolConfig(actors=n, cpus_per_actor=1)  # noqa: E731
    frozen = LearnerOptions(**{**opts, "zero_stage": 3})
    worst = lambda a, b: max(float(np.abs(np.asarray(x) - np.asarray(y)).max()) for x, y in zip(a, b, strict=True))  # noqa: E731
    with ActorGroup(Learner, pool(2), "ref-group", setup_args=(str(tiny_model), frozen, True)) as reference:
        from_group = learner_logprobs(reference, rows)
    with ActorGroup(Learner, pool(1), "grpo-one", setup_args=(str(tiny_model), LearnerOptions(**opts, grad_accum=2))) as one:
        before = learner_logprobs(one, rows)
        ref = learner_logprobs(one, rows, reference=True)
        assert worst(ref, from_group) <= 1e-5
        batch = with_logprobs(rows, adv, before, ref)
        one.run_sharded("train_step", batch, "grpo", clip=0.2, kl_coef=0.1)
        after_one = learner_logprobs(one, rows)
    with ActorGroup(Learner, pool(2), "grpo-two", setup_args=(str(tiny_model), LearnerOptions(**opts, grad_accum=1))) as two:
        two.run_sharded("train_step", batch, "grpo", clip=0.2, kl_coef=0.1)
        after_two = learner_logprobs(two, rows)
    assert worst(after_one, before) > 1e-3  # the update moved the policy
    assert worst(after_one, after_two) <= 1e-5, worst(after_one, after_two)


@pytest.mark.slow
def test_two_updates_with_the_first_taking_its_own_old_logprobs_equal_a_full_recompute(ray_local, tiny_model):
    """A step of two GRPO updates, old log-probs as the RL stage takes them (`rows.old_logprobs`: the first
    update's from its own pass, only the second's recomputed) trains the same weights, bit for bit, as
    recomputing every row before the first update; in between the learner restarts from its start weights
    (`Learner.restart`, the next `rl.members` member) and gives the start's log-probs again."""
    import random

    import numpy as np

    from rayda.actors.group import ActorGroup
    from rayda.actors.learner import Learner
    from rayda.config import PoolConfig
    from rayda.engines.deepspeed_engine import LearnerOptions
    from rayda.rl.rows import old_logprobs, policy_row, with_logprobs
    from rayda.rl.sync import learner_logprobs

    rng = random.Random(2)
    rows = [policy_row([1] + [rng.randrange(3, 150) for _ in range(4 + i % 3)], [rng.randrange(3, 150) for _ in range(5 + i)], f"p{i}")
            for i in range(8)]
    adv = [1.0, -0.5, 0.25, -1.0, 0.5, -0.25, 1.0, -1.0]
    opts = LearnerOptions(zero_stage=2, micro_batch_size=4, grad_accum=1, lr=1e-2, min_lr_ratio=1.0, warmup_steps=0,
                          total_steps=2, weight_decay=0.0, grad_clip=1.0, dtype="float32", seed=0, pad_id=0)

    def step(group, old, own):
        ref = learner_logprobs(group, rows, reference=True)
        batch = with_logprobs(rows, adv, old, ref)
        for u in range(2):
            group.run_sharded("train_step", batch[4 * u:4 * (u + 1)], "grpo", clip=0.2, kl_coef=0.1, old_is_current=own[u])
        return learner_logprobs(group, rows)

    with ActorGroup(Learner, PoolConfig(actors=1, cpus_per_actor=1), "grpo-old", setup_args=(str(tiny_model), opts)) as group:
        start = learner_logprobs(group, rows)
        recomputed = step(group, start, [False, False])
        group.run_all("restart", opts)
        assert all(np.array_equal(a, b) for a, b in zip(learner_logprobs(group, rows), start))
        sampler = [lp - 0.3 for lp in start]  # far from the learner's: the first update must not use them for its ratio
        old, own = old_logprobs(rows, sampler, 2, True, lambda part: learner_logprobs(group, part))
        assert own == [True, False] and old[:4] == sampler[:4]
        taken = step(group, old, own)
    assert max(float(np.abs(a - b).max()) for a, b in zip(recomputed, start)) > 1e-3  # the updates moved the policy
    assert all(np.array_equal(a, b) for a, b in zip(taken, recomputed))
