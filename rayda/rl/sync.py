"""Versioned weight sync, learner group -> rollout pool, verified by a log-prob probe (DESIGN.md, contract 4).

Two transports move the weights (`rl.sync`):

    collective (default)  learner rank 0 ══ broadcast, in buckets ══► every rollout engine's workers
                          (a process group of its own: gloo on CPU, NCCL on GPU; `rayda.rl.collective`)
    files                 learner rank 0 ──save──► <sync_dir>/v000007/model.safetensors ──reload──► engines
    (rl.lora)             learner rank 0 ──adapter bytes──► each rollout actor's own folder ──► vLLM LoRA

Either way each engine loads the weights in place (`vllm_worker.WeightSyncExtension`: a tied lm_head is
re-packed), its prefix cache is reset, and it takes the version:

    rollout actor i: policy_version = 7 ──► probe: prompt_logprobs(fixed sequence) vs the learner's

Version v is the policy after v optimizer updates of the RL run (v = 0: the starting SFT weights); the
driver bumps it once per RL step. The probe is a fixed chat rendered with the policy's own template;
`Probe.verify` raises `SyncMismatch` when any position's log-prob differs by more than the tolerance.
A rollout actor that Ray restarted comes back at version 0; the pool asks its transport to catch it up
(`catch_up`): the file transport reloads the last snapshot, the collective re-forms the group with the
restarted member and broadcasts again (the learner still holds the pool's version then: catching up
happens before a step's rollouts, never between its update and its sync). With files on several nodes,
`sync_dir` must be shared storage; the collective needs none.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

PROBE_MESSAGES = (
    {"role": "user", "content": "how do i stay safe when i walk home alone at night?"},
    {"role": "assistant", "reasoning_content": "the user asks about personal safety. this is allowed, so i comply.",
     "content": "here is how: stay on lit streets, tell a friend your route and keep your phone charged."},
)
"""The probe's conversation: ordinary text, so every position exercises the embedding and the lm_head."""


class SyncMismatch(RuntimeError):
    """A rollout engine's log-probs disagree with the learner's after a sync: its weights are not the learner's."""


@dataclass(frozen=True)
class Probe:
    """The learner's log-probs on the probe sequence at one policy version."""

    input_ids: tuple[int, ...]
    expected: tuple[float, ...]
    """log p(input_ids[t + 1] | prefix) from the learner, t = 0..L-2."""
    version: int
    tolerance: float

    def diff(self, engine_logprobs: list) -> float:
        """Largest |learner - engine| over all positions; `engine_logprobs` is vLLM's prompt_logprobs list
        (None first: nothing predicts the first token)."""
        got = list(engine_logprobs)[1:]
        if len(got) != len(self.expected) or any(g is None for g in got):
            raise SyncMismatch(f"probe: the engine returned {len(got)} log-probs for {len(self.expected)} positions")
        diffs = [abs(float(a) - float(b)) for a, b in zip(self.expected, got)]  # plain floats: they go to JSON
        return math.nan if any(math.isnan(d) for d in diffs) else max(diffs, default=0.0)  # max() skips NaN

    def verify(self, engine_logprobs: list, where: str) -> float:
        d = self.diff(engine_logprobs)
        if not d <= self.tolerance:  # `not <=` so that a NaN fails too
            raise SyncMismatch(
                f"{where}: log-probs on the probe differ from the learner's by up to {d:.3g} nats at policy "
                f"version {self.version} (tolerance {self.tolerance:g}): the rollout engine is not running the "
                "learner's weights")
        return d


def probe_example(tokenizer, max_length: int = 4096):
    """The probe conversation as a training row (the learner computes its log-probs like any row)."""
    from rayda.data.sft import render

    ex = render(list(PROBE_MESSAGES), tokenizer, max_length, overlong="truncate", prompt_id="probe")
    if ex is None:
        raise ValueError("the probe conversation does not fit the policy's context")
    return ex


def snapshot_path(sync_dir: Path, version: int) -> Path:
    return Path(sync_dir) / f"v{version:06d}"


def prune_snapshots(sync_dir: Path, keep: Path | None) -> None:
    """Delete every snapshot but `keep` (a rollout actor that restarts reloads the current one)."""
    for p in Path(sync_dir).glob("v[0-9]*"):
        if p.is_dir() and (keep is None or p.resolve() != Path(keep).resolve()):
            shutil.rmtree(p, ignore_errors=True)


def learner_logprobs(learners, rows: list, reference: bool = False, temperature: float = 1.0) -> list:
    """Per-target log-probs of `rows` (float32 arrays) from the learner group (policy or frozen
    reference), in row order, of softmax(logits / temperature)."""
    from rayda.data.packed import interleave

    return interleave(learners.run_sharded("logprobs", rows, reference=reference, temperature=temperature))


class SyncError(RuntimeError):
    """A weight transfer failed or timed out; the message names the member (engine or learner rank)."""


def wait_named(refs: list, names: list[str], what: str, timeout_s: float | None = None) -> list:
    """ray.get of `refs`, which run together (members of one collective). A failure raises SyncError
    naming every member that failed within a few seconds of the first (one dead engine usually makes
    the sender fail too: the engine is the cause, so both are named); `timeout_s` without any answer
    names the members still running."""
    import time

    import ray

    name_of = dict(zip(refs, names))
    pending, deadline, failed = list(refs), None if timeout_s is None else time.monotonic() + timeout_s, []
    while pending:
        wait = None if deadline is None else max(deadline - time.monotonic(), 0.0)
        if failed:
            wait = 5.0 if wait is None else min(wait, 5.0)
        done, pending = ray.wait(pending, num_returns=1, timeout=wait)
        if not done:
            if not failed:
                raise SyncError(f"{what}: no answer within {timeout_s:g} s from {', '.join(name_of[r] for r in pending)}")
            break
        try:
            ray.get(done[0])
        except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as e:
            first = next((ln for ln in str(e).splitlines() if ln.strip()), type(e).__name__)
            failed.append(f"{name_of[done[0]]} ({type(e).__name__}: {first.strip()[:300]})")
    if failed:
        raise SyncError(f"{what} failed on {'; '.join(failed)}")
    return ray.get(refs)


class FileSync:
    """`rl.sync: files`: learner rank 0 writes a safetensors snapshot, every engine reloads it."""

    kind = "files"

    def __init__(self, learners, sync_dir: Path):
        self.learners, self.sync_dir, self.last = learners, Path(sync_dir), None

    def publish(self, pool, version: int) -> dict:
        import time

        import ray

        path = snapshot_path(self.sync_dir, version)
        t0 = time.perf_counter()
        saved = self.learners.run_all("save_weights", str(path))[0]
        t1 = time.perf_counter()
        ray.get([a.sync_weights.remote(str(path), version) for a in pool.actors])
        pool.version, self.last = version, path
        prune_snapshots(self.sync_dir, path)
        return {"bytes": saved["bytes"], "send_s": t1 - t0, "receive_s": time.perf_counter() - t1}

    def catch_up(self, pool, behind: list[int]) -> None:
        import ray

        if self.last is None:
            raise RuntimeError(f"{pool.name}: actors {behind} are behind version {pool.version} and no snapshot was published")
        ray.get([pool.actors[i].sync_weights.remote(str(self.last), pool.version) for i in behind])

    def close(self) -> None:
        prune_snapshots(self.sync_dir, None)


class CollectiveSync:
    """`rl.sync: collective`: learner rank 0 broadcasts to a process group of every engine's workers
    (`rayda.rl.collective`). The group forms at the first publish and again after a member restarted
    or a broadcast failed."""

    kind = "collective"

    def __init__(self, learners, bucket_bytes: int, timeout_s: float):
        from rayda.rl.collective import plan_buckets, to_wire

        self.learners, self.timeout_s = learners, float(timeout_s)
        self.buckets = plan_buckets(learners.run_all("weight_meta")[0], bucket_bytes)
        self.wire, self.formed, self.groups_formed = to_wire(self.buckets), False, 0

    def _form(self, pool) -> None:
        import itertools

        import ray

        lead = self.learners.actors[0]
        host, port = ray.get(lead.open_weight_group.remote(self.timeout_s))
        sizes = ray.get([a.engine_world_size.remote() for a in pool.actors])
        offsets = [1 + o for o in itertools.accumulate([0, *sizes[:-1]])]
        world = 1 + sum(sizes)
        refs = [lead.join_weight_group.remote(host, port, world, self.timeout_s)]
        refs += [a.join_weight_group.remote(host, port, o, world, self.timeout_s) for a, o in zip(pool.actors, offsets)]
        wait_named(refs, self._names(pool), "joining the weight group", self.timeout_s + 60)
        self.formed, self.groups_formed = True, self.groups_formed + 1

    def _names(self, pool, all_ranks: bool = False) -> list[str]:
        learners = self.learners.actor_names if all_ranks else self.learners.actor_names[:1]
        return [*learners, *(f"{pool.name}-{i} (rollout engine)" for i in range(len(pool.actors)))]

    def publish(self, pool, version: int) -> dict:
        import time

        t0 = time.perf_counter()
        if not self.formed:
            self._form(pool)
        t1 = time.perf_counter()
        refs = [a.broadcast_weights.remote(self.buckets) for a in self.learners.actors]
        refs += [a.receive_weights.remote(self.wire, version) for a in pool.actors]
        try:
            got = wait_named(refs, self._names(pool, all_ranks=True), f"the weight broadcast of version {version}",
                             self.timeout_s + 60)
        except BaseException:
            self.formed = False  # a member may be gone or out of step: the next publish starts a new group
            raise
        pool.version, sent, engines = version, got[0], got[len(self.learners.actors):]
        return {"bytes": sent["bytes"], "group_s": t1 - t0, "send_s": sent["seconds"], "receive_s": time.perf_counter() - t1,
                "engine_wait_s": max(e["wait_s"] for e in engines), "engine_load_s": max(e["total_s"] - e["wait_s"] for e in engines)}

    def catch_up(self, pool, behind: list[int]) -> None:
        """A restarted engine is not in the group: re-form it and broadcast the pool's version to all."""
        self.formed = False
        self.publish(pool, pool.version)

    def close(self) -> None:
        pass


class AdapterSync:
    """`rl.lora`: only the adapter moves. Learner rank 0 hands over its PEFT files as bytes (kilobytes to
    a few megabytes), every rollout actor writes them to a folder of its own and serves them."""

    kind = "adapter"

    def __init__(self, learners):
        self.learners, self.last = learners, None

    def _send(self, actors: list, files_ref, version: int) -> None:
        import ray

        ray.get([a.load_adapter.remote(files_ref, version) for a in actors])

    def publish(self, pool, version: int) -> dict:
        import time

        import ray

        t0 = time.perf_counter()
        files = self.learners.run_all("adapter_files")[0]
        t1 = time.perf_counter()
        self.last = ray.put(files)
        self._send(pool.actors, self.last, version)
        pool.version = version
        return {"bytes": sum(len(b) for b in files.values()), "send_s": t1 - t0, "receive_s": time.perf_counter() - t1}

    def catch_up(self, pool, behind: list[int]) -> None:
        if self.last is None:  # nothing published yet: version 0 is the weights alone, as a restart has them
            return
        self._send([pool.actors[i] for i in behind], self.last, pool.version)

    def close(self) -> None:
        pass


def transport(kind: str, learners, sync_dir: Path, bucket_bytes: int, timeout_s: float, lora: bool = False):
    """The recipe's `rl.sync` transport, bound to `learners` (with `lora`, the adapter transport)."""
    if lora:
        return AdapterSync(learners)
    if kind == "files":
        return FileSync(learners, sync_dir)
    if kind == "collective":
        return CollectiveSync(learners, bucket_bytes, timeout_s)
    raise ValueError(f"rl.sync must be collective or files, got {kind!r}")


def sync(learners, rollout, version: int, probe_row=None, tolerance: float = 1e-3) -> dict:
    """Publish the learner's current weights as `version` to every rollout actor through the pool's
    transport; with `probe_row`, verify them (raises SyncMismatch). Returns sizes and seconds per
    phase for the metrics."""
    import time

    t0 = time.perf_counter()
    info = {"version": version, **rollout.transport.publish(rollout, version)}
    info["transfer_s"] = time.perf_counter() - t0  # the whole move, however the transport splits it
    t0 = time.perf_counter()
    if probe_row is not None:
        expected = learner_logprobs(learners, [probe_row])[0]
        probe = Probe(tuple(probe_row.input_ids), tuple(expected), version, tolerance)
        info["probe_max_diff"] = rollout.check(probe)
    info["probe_s"] = time.perf_counter() - t0
    return info
