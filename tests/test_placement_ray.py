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
    with pytest.raises(PlacementError, match="GPU: need 4, cluster has 0"):
        plan({"rollout": PoolConfig(actors=4, gpus_per_actor=1)}, ray_local.cluster_resources())
