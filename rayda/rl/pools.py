"""The RL stage's two actor pools, seen from the driver: rollouts (vLLM) and judges (REWARD view).

Rollout actors (`actors.rollout.Generator`) are restarted by Ray when they die (`max_restarts`). A
restarted actor comes back with the weights it was built from (policy version 0), so before every use
the pool asks each actor for its version and has its weight transport (`rayda.rl.sync`) catch up any
that is behind, verifying it with the last probe when that probe is of the current version. A request
that was in flight on the dead actor is retried (same prompts, same seeds): the learner has not been
touched yet in that step, so the step simply takes longer. Judges are stateless, so Ray retries their
calls itself.
"""

from __future__ import annotations

from rayda.judges.base import MinOfK, min_of_k
from rayda.types import RewardRequest, Verdict


def _shards(n_items: int, n_shards: int) -> list[range]:
    """Contiguous, near-equal ranges covering 0..n_items-1 (empty ones dropped)."""
    size, rest = divmod(n_items, n_shards)
    out, start = [], 0
    for i in range(n_shards):
        end = start + size + (i < rest)
        if end > start:
            out.append(range(start, end))
        start = end
    return out


def _options(pool, name: str, **kw) -> dict:
    return dict(name=name, num_cpus=pool.cpus_per_actor, num_gpus=pool.gpus_per_actor, resources=dict(pool.resources) or None, **kw)


def _reserve(pool, name: str):
    """The pool's placement group (planned, then reserved; fails fast naming what is missing)."""
    import ray

    from rayda.placement import placement_group_for, plan

    return placement_group_for(plan({name: pool}, ray.cluster_resources())[0])


def _release(pg) -> None:
    if pg is not None:
        from ray.util.placement_group import remove_placement_group

        remove_placement_group(pg)


class RolloutPool:
    def __init__(self, actor_cls, engine_cfg, pool, name: str = "rollout", max_restarts: int = 2, retries: int = 2):
        import ray

        from rayda.placement import scheduling

        remote = ray.remote(actor_cls)
        self.name, self.retries = name, retries
        self.pg = _reserve(pool, name)  # a restarted actor comes back into its own bundle
        self.actors = [remote.options(**_options(pool, f"{name}-{i}", max_restarts=max_restarts, max_task_retries=0,
                                                 scheduling_strategy=scheduling(self.pg, i))).remote(engine_cfg)
                       for i in range(pool.actors)]
        self.version, self.probe, self.transport = 0, None, None
        """`transport` (`rayda.rl.sync.FileSync` or `CollectiveSync`) moves the learner's weights here."""
        self.restarts_seen = 0
        """Actors found behind the pool's version (restarted) and re-synced."""

    def wait_ready(self) -> None:
        """Block until every engine has started (they start in parallel when the pool is created)."""
        import ray

        ray.get([a.version.remote() for a in self.actors])

    # ---- weights ------------------------------------------------------------------------------------
    def attach(self, transport) -> None:
        """The transport `rayda.rl.sync.sync` publishes through and restarted actors catch up with."""
        self.transport = transport

    def check(self, probe, actors: list[int] | None = None) -> float:
        """Probe the given actors (all by default); raises SyncMismatch; returns the largest difference."""
        import ray

        ids = list(range(len(self.actors))) if actors is None else actors
        got = ray.get([self.actors[i].prompt_logprobs.remote([list(probe.input_ids)]) for i in ids])
        self.probe = probe
        return max(probe.verify(lp[0], f"{self.name}-{i}") for i, lp in zip(ids, got))

    def ensure_synced(self) -> int:
        """Re-sync every actor whose version is behind the pool's (it restarted); returns how many were."""
        versions = self._versions()
        behind = [i for i, v in enumerate(versions) if v != self.version]
        if behind and self.transport is None:
            raise RuntimeError(f"{self.name}: actors {behind} are at versions {[versions[i] for i in behind]}, "
                               f"the pool at {self.version}, and no weight transport is attached to sync them")
        if behind:
            self.transport.catch_up(self, behind)
            if self.probe is not None and self.probe.version == self.version:
                self.check(self.probe, behind)
            self.restarts_seen += len(behind)
        return len(behind)

    def _versions(self, timeout_s: float = 300.0) -> list[int]:
        """Each actor's policy version; waits while one restarts (an actor and its engine take 10-20 s on CPU)."""
        import time

        import ray

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return ray.get([a.version.remote() for a in self.actors])
            except ray.exceptions.ActorUnavailableError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1.0)

    # ---- sampling -----------------------------------------------------------------------------------
    def generate(self, prompts: list[list[int]], seeds: list[int], on_submit=None, on_shard=None, **sampling) -> tuple[list, int]:
        """Samples for every prompt (token ids), each stamped with the version of the actor that drew it.

        Returns ([(version, [Sample, ...]) per prompt], retries used). `on_submit(attempt, pool)` runs
        once the requests are in flight (tests kill an actor there); `on_shard(indices, results)` runs
        as each actor's shard finishes, with the prompt indices and their (version, samples), so the
        caller can start judging a group while other groups are still sampling.
        """
        import ray

        shards = _shards(len(prompts), len(self.actors))
        out: list = [None] * len(prompts)
        pending, attempt = list(range(len(shards))), 0
        while pending:
            self.ensure_synced()
            refs = {self.actors[s].rollout.remote([prompts[i] for i in shards[s]], seeds=[seeds[i] for i in shards[s]], **sampling): s
                    for s in pending}
            if on_submit is not None:
                on_submit(attempt, self)
            failed, waiting = [], list(refs)
            while waiting:
                done, waiting = ray.wait(waiting, num_returns=1)
                s = refs[done[0]]
                try:
                    batch = ray.get(done[0])
                except ray.exceptions.RayActorError as e:
                    failed.append(s)
                    error = e
                    continue
                results = [(batch.policy_version, list(samples)) for samples in batch.samples]
                for i, r in zip(shards[s], results):
                    out[i] = r
                if on_shard is not None:
                    on_shard(list(shards[s]), results)
            if failed and attempt >= self.retries:
                raise RuntimeError(f"{self.name}: shards {sorted(failed)} failed {attempt + 1} times; last error: {error}")
            pending, attempt = sorted(failed), attempt + (1 if failed else 0)
        return out, attempt

    def shutdown(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.actors = []
        _release(self.pg)
        self.pg = None


class JudgePool:
    """Judge actors (`actors.judge.JudgeWorker`) scoring `RewardRequest`s: the final answer, never the cot."""

    def __init__(self, actor_cls, pool, judge_args: dict, name: str = "judge"):
        """`judge_args` are the actor's constructor arguments (`RunContext.judge_args`: cfg, spec, spec_texts, model)."""
        import ray

        from rayda.placement import scheduling

        remote = ray.remote(actor_cls)
        self.k, self.name, self.next_actor = judge_args["cfg"].k, name, 0
        self.pg = _reserve(pool, name)
        self.actors = [remote.options(**_options(pool, f"{name}-{i}", max_restarts=-1, max_task_retries=2,
                                                 scheduling_strategy=scheduling(self.pg, i)))
                       .remote(**judge_args) for i in range(pool.actors)]

    def reward(self, requests: list[RewardRequest], seeds: list[int]) -> list[MinOfK]:
        """Min-of-k judgement per request; a judge that fails gives an error judgement, never a score."""
        return [min_of_k(vs) for vs in self.verdicts(requests, seeds)]

    def verdicts(self, requests: list[RewardRequest], seeds: list[int]) -> list[list[Verdict]]:
        """The k verdicts per request; a failed actor's requests get one error verdict each."""
        return self.collect(self.submit(requests, seeds))

    def submit(self, requests: list[RewardRequest], seeds: list[int]) -> list:
        """Send `requests` to the judges now (spread over the actors); `collect` waits for the verdicts."""
        for r in requests:  # contract 1, checked again where requests leave the driver
            if type(r) is not RewardRequest:
                raise TypeError(f"the RL judge takes RewardRequest only, got {type(r).__name__}")
        shards = _shards(len(requests), len(self.actors))
        offset, self.next_actor = self.next_actor, self.next_actor + len(shards)  # one group at a time still uses every actor
        actors = [self.actors[(offset + s) % len(self.actors)] for s in range(len(shards))]
        return [(rng, a.reward.remote([requests[i] for i in rng], [seeds[i] for i in rng])) for a, rng in zip(actors, shards)]

    def compare(self, pairs: list[tuple], principles: list[str], seeds: list[int]) -> list[list]:
        """k votes per pair of RewardRequests (`JudgeWorker.compare`, `rayda pm`), spread over the actors;
        a failed actor's pairs get failed votes (None)."""
        import ray

        shards = _shards(len(pairs), len(self.actors))
        refs = [self.actors[s % len(self.actors)].compare.remote([pairs[i] for i in rng], [principles[i] for i in rng],
                                                                  [seeds[i] for i in rng]) for s, rng in enumerate(shards)]
        out: list[list] = []
        for rng, ref in zip(shards, refs):
            try:
                out += ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError):
                out += [[None] * self.k for _ in rng]
        return out

    def collect(self, submitted: list) -> list[list[Verdict]]:
        import ray

        out: list[list[Verdict]] = []
        for rng, ref in submitted:
            try:
                out += ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.RayTaskError) as e:
                out += [[Verdict(None, error=f"judge actor failed: {type(e).__name__}")] for _ in rng]
        return out

    def shutdown(self) -> None:
        import ray

        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.actors = []
        _release(self.pg)
        self.pg = None
