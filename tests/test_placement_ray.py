"""Placement groups on a real local Ray: a plan that fits is reserved; one that cannot fail fast."""

from __future__ import annotations

import pytest

from rayda.config import PoolConfig
from rayda.placement import PlacementError, placement_group_for, plan, scheduling

pytestmark = pytest.mark.ray


def test_pool_placement_group_is_reserved_and_used(ray_local):
    ray = ray_local
    (pool,) = plan({"learner": PoolConfig(actors=2, cpus_per_actor=1)}, ray.cluster_resources())
    pg = placement_group_for(pool, timeout_s=30)

    @ray.remote(num_cpus=1)
    class Probe:
        def where(self):
            return ray.get_runtime_context().get_placement_group_id()

    actors = [Probe.options(scheduling_strategy=scheduling(pg, i)).remote() for i in range(2)]
    assert ray.get([a.where.remote() for a in actors]) == [pg.id.hex()] * 2
    ray.util.remove_placement_group(pg)


def test_plan_larger_than_cluster_fails_before_any_actor(ray_local):
    import time

    from rayda.placement import cluster_nodes, plan_nodes

    with pytest.raises(PlacementError, match=r"GPU: need 4 \(rollout 4x1\), cluster has 0"):
        plan({"rollout": PoolConfig(actors=4, gpus_per_actor=1)}, ray_local.cluster_resources())
    t0 = time.perf_counter()
    with pytest.raises(PlacementError, match="GPU"):
        plan_nodes({"rollout": PoolConfig(actors=4, gpus_per_actor=1)}, cluster_nodes())
    assert time.perf_counter() - t0 < 5  # seconds, not a placement-group timeout
