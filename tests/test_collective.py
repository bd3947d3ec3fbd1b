"""The collective weight transfer's parts (`rayda.rl.collective`): the tensor list, the buckets, the
packing, and a real gloo group of processes (one sender, two receivers) with its timeout."""

from __future__ import annotations

import multiprocessing as mp

import pytest
import torch

from rayda.rl.collective import (
    TensorMeta, flatten, from_wire, join, meta_of, open_store, plan_buckets, receive, send, to_wire, unflatten,
    unique_tensors,
)


def _metas(*specs):
    return [TensorMeta(f"t{i}", dtype, shape) for i, (dtype, shape) in enumerate(specs)]


def test_buckets_keep_order_split_on_dtype_and_size():
    metas = _metas(("float32", (4, 4)), ("float32", (8,)), ("bfloat16", (8,)), ("float32", (100,)), ("float32", (2,)))
    buckets = plan_buckets(metas, bucket_bytes=100)
    assert [[m.name for m in b] for b in buckets] == [["t0", "t1"], ["t2"], ["t3"], ["t4"]]
    assert [m for b in buckets for m in b] == metas  # every tensor once, in order
    assert metas[2].nbytes == 16 and metas[3].nbytes == 400  # a tensor above the bucket size travels alone
    assert len(plan_buckets(metas, 10 << 20)) == 3  # only the dtype changes split a large bucket
    with pytest.raises(ValueError):
        plan_buckets(metas, 0)


def test_flatten_then_unflatten_gives_the_tensors_back():
    tensors = [torch.randn(3, 5), torch.randn(7), torch.randn(2, 2, 2)]
    metas = [meta_of(f"w{i}", t) for i, t in enumerate(tensors)]
    flat = flatten(tensors)
    assert flat.shape == (15 + 7 + 8,)
    back = unflatten(flat, metas)
    assert [n for n, _ in back] == ["w0", "w1", "w2"]
    for (_, got), want in zip(back, tensors):
        assert torch.equal(got, want)
    with pytest.raises(ValueError, match="holds 30 elements, got 29"):
        unflatten(flat[:-1], metas)


def test_a_tied_weight_travels_once_and_the_wire_form_round_trips():
    emb = torch.nn.Parameter(torch.randn(10, 4))
    named = [("model.embed_tokens.weight", emb), ("model.norm.weight", torch.ones(4)), ("lm_head.weight", emb)]
    assert [n for n, _ in unique_tensors(named)] == ["model.embed_tokens.weight", "model.norm.weight"]
    buckets = plan_buckets([meta_of(n, t) for n, t in unique_tensors(named)])
    assert from_wire(to_wire(buckets)) == buckets
    assert to_wire(buckets) == [[["model.embed_tokens.weight", "float32", [10, 4]], ["model.norm.weight", "float32", [4]]]]


def _receiver(port, rank, world, wire, timeout_s, out):
    try:  # a spawned process takes seconds to start: joining may take longer than a broadcast
        group = join("127.0.0.1", port, rank, world, "cpu", timeout_s, join_timeout_s=60)
        out.put((rank, [(n, t.clone()) for n, t in receive(group, from_wire(wire), "cpu")]))
    except Exception as e:  # the parent checks what failed
        out.put((rank, f"{type(e).__name__}: {e}"))


def _group(n_receivers, wire, timeout_s):
    ctx = mp.get_context("spawn")
    store, port = open_store("127.0.0.1", 60)
    out = ctx.Queue()
    procs = [ctx.Process(target=_receiver, args=(port, r, n_receivers + 1, wire, timeout_s, out)) for r in range(1, n_receivers + 1)]
    for p in procs:
        p.start()
    return join("127.0.0.1", port, 0, n_receivers + 1, "cpu", timeout_s, store=store, join_timeout_s=60), procs, out


def test_broadcast_reaches_every_receiver_bucket_by_bucket():
    weights = {"a": torch.randn(64, 32), "b": torch.randn(32), "c": torch.arange(10, dtype=torch.float64)}
    buckets = plan_buckets([meta_of(n, t) for n, t in weights.items()], bucket_bytes=64 * 32 * 4)
    assert len(buckets) == 3
    group, procs, out = _group(2, to_wire(buckets), 60)
    send(group, (flatten([weights[m.name] for m in bucket]) for bucket in buckets))  # one bucket in flight at a time
    got = dict(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    for rank in (1, 2):
        assert not isinstance(got[rank], str), got[rank]
        assert [n for n, _ in got[rank]] == ["a", "b", "c"]
        for name, t in got[rank]:
            assert t.dtype == weights[name].dtype and torch.equal(t, weights[name])


def test_a_receiver_whose_sender_never_sends_fails_within_the_timeout():
    buckets = plan_buckets([TensorMeta("w", "float32", (16,))])
    group, procs, out = _group(1, to_wire(buckets), 3)
    rank, result = out.get(timeout=60)  # rank 0 joined but never broadcasts
    procs[0].join(timeout=30)
    print(result)
    assert isinstance(result, str) and not result.startswith("DistStoreError"), result  # it joined
    assert "Timed out" in result or "timeout" in result.lower(), result
