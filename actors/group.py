"""A group of actors that act as one: the ranks of a distributed learner.

    group = ActorGroup(Learner, recipe.pools.learner, "learner", setup_args=(model_path, options))
    metrics = group.run_sharded("train_step", rows)  # rank r gets rows[r::world]; one result per rank
    group.run_all("save_checkpoint", path, tag, {})  # the same arguments on every rank
    group.shutdown()

Rank layout: one actor per bundle of the pool's placement group (actor `{name}-rank{r}` in bundle r).
Rank 0 is created first and picks the rendezvous address and port; every rank then gets
MASTER_ADDR/MASTER_PORT (rank 0's), RANK=r, WORLD_SIZE=n and LOCAL_RANK=0 (Ray gives each actor
its own GPU, so every rank sees exactly one device). The RL stage reuses this group for policy steps
and weight export.
"""

from __future__ import annotations

import time

from rayda.config import PoolConfig


class RankFailure(RuntimeError):
    """A rank died or raised; the message names the rank and the method."""


class ActorGroup:
    def __init__(self, actor_cls, pool: PoolConfig, name: str, setup_args: tuple = (), placement_timeout_s: float = 120.0):
        import ray

        from rayda.placement import placement_group_for, plan, scheduling

        self.name, self.world_size = name, pool.actors
        self.actors, self.actor_names, self.pg = [], [], None
        self.pg = placement_group_for(plan({name: pool}, ray.cluster_resources())[0], timeout_s=placement_timeout_s)
        remote = ray.remote(actor_cls)
        try:
            for rank in range(self.world_size):
                self.actor_names.append(f"{name}-rank{rank}")
                self.actors.append(remote.options(
                    name=self.actor_names[rank], num_cpus=pool.cpus_per_actor, num_gpus=pool.gpus_per_actor,
                    resources=dict(pool.resources) or None, scheduling_strategy=scheduling(self.pg, rank),
                    max_restarts=0, max_task_retries=0,
                ).remote())
                if rank == 0:
                    addr, port = self._gather([self.actors[0].master_address.remote()], "master_address")[0]
            envs = [dict(MASTER_ADDR=addr, MASTER_PORT=port, RANK=r, WORLD_SIZE=self.world_size, LOCAL_RANK=0)
                    for r in range(self.world_size)]
            self.info = self.run_each("setup", [(env, *setup_args) for env in envs])
        except BaseException:
            self.shutdown()
            raise

    def run_all(self, method: str, *args, **kwargs) -> list:
        """Call `method(*args, **kwargs)` on every rank at once; results in rank order.

        Arguments are put into the object store once and shared by all ranks. The first rank that
        fails ends the wait (the others may be blocked in a collective with it) with a RankFailure.
        """
        import ray

        args = [ray.put(a) for a in args]
        return self._gather([getattr(a, method).remote(*args, **kwargs) for a in self.actors], method)

    def run_sharded(self, method: str, rows: list, *args, **kwargs) -> list:
        """Call `method(shard, *args, **kwargs)` on every rank at once, rank r receiving only its shard
        `rows[r::world]`, packed as NumPy columns (`rayda.data.packed.Shard`); results in rank order."""
        import ray

        from rayda.data.packed import shard

        args = [ray.put(a) for a in args]
        parts = shard(rows, self.world_size)
        return self._gather([getattr(a, method).remote(part, *args, **kwargs) for a, part in zip(self.actors, parts)], method)

    def run_each(self, method: str, args_per_rank: list[tuple]) -> list:
        """Call `method(*args_per_rank[r])` on rank r, for every rank at once."""
        return self._gather([getattr(a, method).remote(*args) for a, args in zip(self.actors, args_per_rank)], method)

    def _gather(self, refs: list, method: str) -> list:
        import ray

        rank_of = {ref: r for r, ref in enumerate(refs)}
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            try:
                ray.get(done[0])
            except ray.exceptions.RayActorError as e:
                r = rank_of[done[0]]
                raise RankFailure(f"{self.name}: rank {r} ({self.actor_names[r]}) died during {method}: {e}") from e
            except ray.exceptions.RayTaskError as e:
                r = rank_of[done[0]]
                raise RankFailure(f"{self.name}: rank {r} ({self.actor_names[r]}) failed in {method}: {e}") from e
        return ray.get(refs)

    def shutdown(self) -> None:
        """Kill every rank and release the placement group (safe to call twice)."""
        import ray
        from ray.util.placement_group import remove_placement_group

        for a in self.actors:
            ray.kill(a, no_restart=True)
        self.actors = []
        # ray.kill returns at once; wait until the names are free so that a new group may take them.
        deadline = time.monotonic() + 30
        for name in self.actor_names:
            while time.monotonic() < deadline:
                try:
                    ray.get_actor(name)
                except ValueError:
                    break
                time.sleep(0.1)
        if self.pg is not None:
            remove_placement_group(self.pg)
            self.pg = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()
