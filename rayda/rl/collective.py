"""Weights over a collective: learner rank 0 broadcasts, every rollout engine's workers receive.

    learner rank 0 ── TCPStore (port picked by the OS) ──┐
        rank 0 of a process group of 1 + (workers of every rollout engine), its own, beside DeepSpeed's
        and vLLM's: gloo when the tensors live on a CPU, NCCL on a GPU (the same calls)
    per bucket (consecutive tensors of one dtype, up to `bucket_bytes`): flatten -> broadcast -> views
        -> the engine's `load_weights` (vLLM's in-place reload, fed from the stream); one bucket travels
        while the previous one loads, so a worker holds two buckets beyond its model

Nothing touches the file system, so several nodes need no shared storage. A group is formed once and
re-formed when a member restarts; a member that does not take part within the group's timeout makes
the broadcast fail with an error on both sides. The pure parts (the tensor list, the buckets, the
packing) are here; `DeepSpeedLearner.broadcast_weights` sends and `vllm_worker` receives.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass

import torch

DEFAULT_BUCKET_BYTES = 64 << 20
"""Large enough that the per-bucket overhead vanishes, small enough that transfer and load overlap and
a worker holds little beyond its model (two buckets)."""


@dataclass(frozen=True)
class TensorMeta:
    """A tensor of the state dict as it travels: its checkpoint name, dtype and shape."""

    name: str
    dtype: str
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        return self.numel * torch.empty((), dtype=getattr(torch, self.dtype)).element_size()


def unique_tensors(named) -> list[tuple[str, torch.Tensor]]:
    """`named` (name, tensor) pairs with each tensor once, under its first name: a tied lm_head is the
    embedding under a second name and travels once, as in a Hugging Face checkpoint."""
    seen, out = set(), []
    for name, t in named:
        if id(t) not in seen:
            seen.add(id(t))
            out.append((name, t))
    return out


def meta_of(name: str, t: torch.Tensor) -> TensorMeta:
    """A tensor's meta; a ZeRO-3 partitioned parameter reports its full shape (`ds_shape`)."""
    shape = getattr(t, "ds_shape", None) or t.shape
    return TensorMeta(name, str(t.dtype).removeprefix("torch."), tuple(int(d) for d in shape))


def plan_buckets(metas: list[TensorMeta], bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> list[list[TensorMeta]]:
    """Consecutive tensors of one dtype, grouped up to `bucket_bytes` (a larger tensor travels alone)."""
    if bucket_bytes <= 0:
        raise ValueError(f"bucket_bytes must be positive, got {bucket_bytes}")
    buckets: list[list[TensorMeta]] = []
    size = 0
    for m in metas:
        if buckets and buckets[-1][-1].dtype == m.dtype and size + m.nbytes <= bucket_bytes:
            buckets[-1].append(m)
            size += m.nbytes
        else:
            buckets.append([m])
            size = m.nbytes
    return buckets


def flatten(tensors: list[torch.Tensor]) -> torch.Tensor:
    """One contiguous 1-D tensor holding `tensors` back to back (one copy)."""
    return torch.cat([t.detach().reshape(-1) for t in tensors]) if len(tensors) > 1 else tensors[0].detach().reshape(-1).contiguous()


def unflatten(flat: torch.Tensor, bucket: list[TensorMeta]) -> list[tuple[str, torch.Tensor]]:
    """Views into `flat`, one per tensor of `bucket`, with their names (no copy)."""
    expected = sum(m.numel for m in bucket)
    if flat.numel() != expected:
        raise ValueError(f"a bucket of {len(bucket)} tensors holds {expected} elements, got {flat.numel()}")
    out, at = [], 0
    for m in bucket:
        out.append((m.name, flat[at:at + m.numel].view(m.shape)))
        at += m.numel
    return out


def empty_bucket(bucket: list[TensorMeta], device) -> torch.Tensor:
    return torch.empty(sum(m.numel for m in bucket), dtype=getattr(torch, bucket[0].dtype), device=device)


def to_wire(buckets: list[list[TensorMeta]]) -> list:
    """Buckets as plain lists, which vLLM's RPC serialises (it does not take arbitrary classes)."""
    return [[[m.name, m.dtype, list(m.shape)] for m in bucket] for bucket in buckets]


def from_wire(wire: list) -> list[list[TensorMeta]]:
    return [[TensorMeta(str(n), str(d), tuple(int(x) for x in shape)) for n, d, shape in bucket] for bucket in wire]


# ---- the process group -----------------------------------------------------------------------------


def open_store(host: str, timeout_s: float):
    """The group's rendezvous, hosted by the sender on a port the OS picks; returns (store, port)."""
    import torch.distributed as dist

    store = dist.TCPStore(host, 0, is_master=True, wait_for_workers=False, timeout=datetime.timedelta(seconds=timeout_s))
    return store, store.port


def join(host: str, port: int, rank: int, world: int, device, timeout_s: float, store=None,
         join_timeout_s: float | None = None, tag: str = "rayda-weights"):
    """Join the weight group as `rank` of `world` (blocks until every member has joined, at most
    `join_timeout_s`, by default `timeout_s`, the limit of each broadcast). gloo for CPU tensors, NCCL
    for CUDA ones; the group is independent of any default process group."""
    import torch.distributed as dist

    timeout, joining = datetime.timedelta(seconds=timeout_s), datetime.timedelta(seconds=join_timeout_s or timeout_s)
    if store is None:
        store = dist.TCPStore(host, port, is_master=False, timeout=joining)
    prefixed = dist.PrefixStore(tag, store)
    if torch.device(device).type == "cuda":
        options = dist.ProcessGroupNCCL.Options()
        options._timeout = timeout
        return dist.ProcessGroupNCCL(prefixed, rank, world, options)
    group = dist.ProcessGroupGloo(prefixed, rank, world, joining)  # gloo connects its mesh within this
    group.set_timeout(timeout)  # and each broadcast within this
    return group


def broadcast(group, tensor: torch.Tensor, wait: bool = True):
    """Broadcast `tensor` from rank 0 in place (the group's timeout applies); `wait=False` returns the
    pending work instead, so the caller can prepare the next bucket while this one travels."""
    import torch.distributed as dist

    opts = dist.BroadcastOptions()
    opts.rootRank = 0
    opts.rootTensor = 0
    work = group.broadcast([tensor], opts)
    if wait:
        work.wait()
        return None
    return work


def send(group, flat_buckets):
    """Rank 0: broadcast each bucket (an iterable of `flatten`ed tensors, produced lazily), keeping one
    bucket in flight while the next is gathered and flattened."""
    pending = None
    for flat in flat_buckets:
        work = broadcast(group, flat, wait=False)
        if pending is not None:
            pending[1].wait()
        pending = (flat, work)  # the tensor must live until its work is done
    if pending is not None:
        pending[1].wait()


def receive(group, buckets: list[list[TensorMeta]], device, timing: dict | None = None):
    """Yield (name, tensor) for every tensor of every bucket as each arrives; the next bucket's receive
    is posted before the engine loads this one, so transfer and load overlap. `timing["wait_s"]` adds
    up the seconds spent waiting for bytes (the rest of a load is the engine's own)."""
    import time

    def post(bucket):
        flat = empty_bucket(bucket, device)
        return flat, broadcast(group, flat, wait=False)

    pending = post(buckets[0]) if buckets else None
    for i, bucket in enumerate(buckets):
        flat, work = pending
        t0 = time.perf_counter()
        work.wait()
        if timing is not None:
            timing["wait_s"] = timing.get("wait_s", 0.0) + time.perf_counter() - t0
        if i + 1 < len(buckets):
            pending = post(buckets[i + 1])
        yield from unflatten(flat, bucket)
