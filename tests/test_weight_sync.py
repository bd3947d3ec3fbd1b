"""Weight sync learner -> rollout engine, for a model with tied embeddings and one without, over each
transport (the collective broadcast and the snapshot files; contract 4).

One learner rank and one rollout actor per model, all started once for the module. The learner takes a
large SFT step so that its weights clearly differ from the engine's; then a sync must make the
engine's log-probs on the probe agree with the learner's within the tolerance, a rollout made
before a sync must carry the old policy version, and one made after it the new version, with the
learner's log-probs for what it sampled (no key/value block kept from the old weights). A restarted
engine is outside the weight group: a broadcast then fails naming it, and the pool's catch-up brings
it back into a new group.
"""

from __future__ import annotations

import pytest

from rayda.rl.sync import SyncMismatch

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TOLERANCE = 1e-3
"""nats, fp32 on both sides (measured about 1e-5)."""


@pytest.fixture(scope="module")
def stacks(ray_local, tmp_path_factory):
    from transformers import AutoTokenizer

    from rayda.actors.group import ActorGroup
    from rayda.actors.learner import Learner
    from rayda.actors.rollout import Generator
    from rayda.config import PoolConfig
    from rayda.data.sft import render
    from rayda.engines.deepspeed_engine import LearnerOptions
    from rayda.engines.vllm_engine import EngineConfig
    from rayda.rl.pools import RolloutPool
    from rayda.rl.sync import probe_example
    from sft_fixtures import make_tiny_model, sft_rows

    root = tmp_path_factory.mktemp("weight-sync")
    out, pools = {}, {}
    for name in ("tied", "untied"):
        model = str(make_tiny_model(root / name, tied=name == "tied"))
        cfg = EngineConfig(model=model, dtype="float32", gpu_memory_utilization=0.1, max_model_len=256, weight_sync=True)
        pools[name] = RolloutPool(Generator, cfg, PoolConfig(actors=1, cpus_per_actor=1), f"ws-rollout-{name}")  # starts now
        out[name] = {"model": model, "pool": pools[name]}
    try:
        for name, s in out.items():
            tok = AutoTokenizer.from_pretrained(s["model"])
            opts = LearnerOptions(micro_batch_size=4, lr=3e-2, warmup_steps=0, min_lr_ratio=1.0, total_steps=10, pad_id=tok.pad_token_id or 0)
            s["learners"] = ActorGroup(Learner, PoolConfig(actors=1, cpus_per_actor=1), f"ws-learner-{name}", setup_args=(s["model"], opts))
            s["rows"] = [render(r["messages"], tok, 256) for r in sft_rows(4)]
            s["probe"] = probe_example(tok)
            s["sync_dir"] = root / f"sync-{name}"
        for s in out.values():
            s["pool"].wait_ready()
        yield out
    finally:
        for s in out.values():
            if "learners" in s:
                s["learners"].shutdown()
            s["pool"].shutdown()


def _attach(s, kind: str, timeout_s: float = 60.0):
    from rayda.rl.sync import transport

    s["pool"].attach(transport(kind, s["learners"], s["sync_dir"], 1 << 20, timeout_s))  # several buckets
    return s["pool"].transport


def _probe(s, version):
    from rayda.rl.sync import Probe, learner_logprobs

    return Probe(tuple(s["probe"].input_ids), tuple(learner_logprobs(s["learners"], [s["probe"]])[0]), version, TOLERANCE)


@pytest.mark.parametrize("kind", ["collective", "files"])
@pytest.mark.parametrize("name", ["tied", "untied"])
def test_sync_makes_engine_match_learner(stacks, name, kind):
    from rayda.rl.sync import sync

    s = stacks[name]
    _attach(s, kind)
    version = s["pool"].version
    s["pool"].check(_probe(s, version))  # in agreement before the learner moves
    s["learners"].run_sharded("train_step", s["rows"])
    with pytest.raises(SyncMismatch, match="not running the learner's weights"):
        s["pool"].check(_probe(s, version))  # the learner moved: the probe must notice
    info = sync(s["learners"], s["pool"], version + 1, s["probe"], TOLERANCE)
    print(f"{name}, {kind}: probe max |diff| after sync {info['probe_max_diff']:.2e} nats, {info['bytes']} bytes, "
          f"send {info['send_s']:.3f} s, receive {info['receive_s']:.3f} s")
    assert info["probe_max_diff"] <= TOLERANCE
    assert s["pool"].version == version + 1


def test_plain_reload_leaves_a_tied_lm_head_stale(stacks):
    """Why `WeightSyncExtension` exists: vLLM's own in-place reload on CPU does not re-pack a tied
    lm_head. If this starts failing, vLLM fixed it and the extension's repack can go."""
    import ray

    from rayda.rl.sync import snapshot_path

    s = stacks["tied"]
    s["learners"].run_sharded("train_step", s["rows"])
    path = snapshot_path(s["sync_dir"], 99)
    s["learners"].run_all("save_weights", str(path))
    actor = s["pool"].actors[0]
    ray.get(actor.reload_weights.remote(str(path)))
    expected = _probe(s, 99)
    got = ray.get(actor.prompt_logprobs.remote([list(expected.input_ids)]))[0]
    print(f"tied, plain reload: probe max |diff| {expected.diff(got):.2e} nats")
    assert expected.diff(got) > 100 * TOLERANCE
    ray.get(actor.sync_weights.remote(str(path), 99))  # the extension's reload fixes it
    got = ray.get(actor.prompt_logprobs.remote([list(expected.input_ids)]))[0]
    assert expected.diff(got) <= TOLERANCE
    s["pool"].version = 99


def test_rollouts_carry_the_version_they_were_sampled_from(stacks):
    import ray

    from rayda.data.sft import Example
    from rayda.rl.sync import learner_logprobs, sync

    s = stacks["untied"]
    _attach(s, "collective")
    # 200 tokens: more than one KV block (128 tokens on vLLM's CPU backend), so a prefix cache kept
    # across the sync would serve the prompt's first block from the old weights
    pool, prompt = s["pool"], list(s["rows"][0].input_ids + s["rows"][1].input_ids)[:200]
    before = pool.version
    sampled, _ = pool.generate([prompt, prompt], [1, 2], n=2, max_tokens=4)
    assert [v for v, _ in sampled] == [before, before]
    s["learners"].run_sharded("train_step", s["rows"])
    sync(s["learners"], pool, before + 1, s["probe"], TOLERANCE)
    # after the sync every actor is at the new version; the same prompts and seeds are stamped with it
    assert ray.get([a.version.remote() for a in pool.actors]) == [before + 1] * len(pool.actors)
    after, _ = pool.generate([prompt, prompt], [1, 2], n=2, max_tokens=4)
    assert [v for v, _ in after] == [before + 1, before + 1]
    # and are drawn from the new weights: the engine's log-prob of each sampled token is the learner's
    samples = [x for _, per_prompt in after for x in per_prompt]
    rows = [Example(tuple(prompt) + tuple(x.token_ids), (0,) * len(prompt) + (1,) * len(x.token_ids)) for x in samples]
    expected = [lp[len(prompt) - 1:] for lp in learner_logprobs(s["learners"], rows)]
    diffs = [abs(e - g) for x, lp in zip(samples, expected) for e, g in zip(lp, x.logprobs, strict=True)]
    print(f"rollout after sync: max |learner - engine| log-prob of sampled tokens {max(diffs):.2e} nats")
    assert len(diffs) == sum(len(x.token_ids) for x in samples) > 0 and max(diffs) <= TOLERANCE


def test_a_restarted_engine_fails_the_broadcast_by_name_then_rejoins(stacks):
    import time

    import ray

    from rayda.rl.sync import SyncError, sync

    s = stacks["tied"]
    pool, version = s["pool"], s["pool"].version
    collective = _attach(s, "collective", timeout_s=10.0)
    sync(s["learners"], pool, version + 1, s["probe"], TOLERANCE)  # the group forms
    assert collective.groups_formed == 1
    ray.kill(pool.actors[0], no_restart=False)  # Ray restarts it, at version 0 and outside the group
    deadline = time.monotonic() + 180
    while pool._versions() != [0]:  # until the kill has landed and the engine is back
        assert time.monotonic() < deadline, "the rollout actor did not come back"
        time.sleep(0.5)
    # (the learner does not move: catching up republishes its weights as the pool's current version)
    with pytest.raises(SyncError, match=r"weight broadcast of version .* failed on .*ws-rollout-tied-0 \(rollout engine\)"):
        collective.publish(pool, version + 2)
    assert pool.ensure_synced() == 1  # caught up through a new group, the probe of the current version checked
    assert collective.groups_formed == 2 and pool._versions() == [pool.version]
    info = sync(s["learners"], pool, pool.version + 1, s["probe"], TOLERANCE)  # and later syncs work
    assert info["probe_max_diff"] <= TOLERANCE


def test_lora_sync_moves_only_the_adapter_and_the_probe_holds(ray_local, tmp_path):
    """rl.lora: the learner trains rank-8 adapters, the engine serves them through vLLM's LoRA support,
    a sync moves only the adapter's files, and the probe holds; the reference (adapters switched off)
    is the starting model; the export merges the adapters into a plain model with the learner's outputs."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rayda.actors.group import ActorGroup
    from rayda.actors.learner import Learner
    from rayda.actors.rollout import Generator
    from rayda.config import LoraConfig, PoolConfig
    from rayda.data.sft import render
    from rayda.engines.deepspeed_engine import LearnerOptions
    from rayda.engines.vllm_engine import EngineConfig
    from rayda.rl.pools import RolloutPool
    from rayda.rl.sync import learner_logprobs, probe_example, sync, transport
    from sft_fixtures import make_tiny_model, sft_rows

    model = str(make_tiny_model(tmp_path / "model"))
    lora = LoraConfig(rank=8, alpha=16.0)
    cfg = EngineConfig(model=model, dtype="float32", gpu_memory_utilization=0.1, max_model_len=256, weight_sync=True, lora_rank=8)
    pool = RolloutPool(Generator, cfg, PoolConfig(actors=1, cpus_per_actor=1), "ws-rollout-lora")
    tok = AutoTokenizer.from_pretrained(model)
    opts = LearnerOptions(micro_batch_size=4, lr=3e-2, warmup_steps=0, min_lr_ratio=1.0, total_steps=10, pad_id=tok.pad_token_id or 0, lora=lora)
    probe = probe_example(tok)
    try:
        with ActorGroup(Learner, PoolConfig(actors=1, cpus_per_actor=1), "ws-learner-lora", setup_args=(model, opts)) as learners:
            pool.wait_ready()
            pool.attach(transport("collective", learners, tmp_path / "sync", 1 << 20, 60.0, lora=True))
            start = learner_logprobs(learners, [probe])[0]
            learners.run_sharded("train_step", [render(r["messages"], tok, 256) for r in sft_rows(4)])
            moved = learner_logprobs(learners, [probe])[0]
            reference = learner_logprobs(learners, [probe], reference=True)[0]
            assert abs(moved - start).max() > 0.05  # the adapters trained
            assert abs(reference - start).max() < 1e-5  # adapters off: the starting model
            info = sync(learners, pool, 1, probe, TOLERANCE)
            full = sum(p.numel() * 4 for p in AutoModelForCausalLM.from_pretrained(model).parameters())
            print(f"lora: probe max |diff| {info['probe_max_diff']:.2e} nats, adapter {info['bytes']} bytes vs full {full}")
            assert info["probe_max_diff"] <= TOLERANCE and info["bytes"] < full / 5
            pool.transport.catch_up(pool, [0])  # a restarted actor gets the same adapter again
            pool.check(pool.probe)
            learners.run_all("export_hf", str(tmp_path / "export"))
        merged = AutoModelForCausalLM.from_pretrained(tmp_path / "export", dtype=torch.float32)
        assert (tmp_path / "export" / "adapter" / "adapter_config.json").exists()
        ids = torch.tensor([probe.input_ids])
        lp = torch.log_softmax(merged(ids).logits[0, :-1], -1).gather(-1, ids[0, 1:, None])[:, 0]
        assert (lp - torch.as_tensor(moved)).abs().max() < 1e-4
    finally:
        pool.shutdown()
