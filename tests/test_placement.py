"""The pure placement planner."""

from __future__ import annotations

import pytest

from rayda.config import PoolConfig
from rayda.placement import PlacementError, plan


def test_plan_gives_one_bundle_per_actor():
    pools = {
        "rollout": PoolConfig(actors=2, cpus_per_actor=1, gpus_per_actor=1),
        "judge": PoolConfig(actors=1, cpus_per_actor=2, gpus_per_actor=0.5, resources={"judge_node": 1}),
        "learner": PoolConfig(actors=4, cpus_per_actor=2, gpus_per_actor=1),
    }
    plans = {p.name: p for p in plan(pools, {"CPU": 32, "GPU": 8, "judge_node": 1})}
    assert plans["rollout"].bundles == ({"CPU": 1.0, "GPU": 1.0},) * 2
    assert plans["judge"].bundles == ({"CPU": 2.0, "GPU": 0.5, "judge_node": 1.0},)
    assert len(plans["learner"].bundles) == 4


def test_cpu_only_bundles_have_no_gpu_key():
    (p,) = plan({"learner": PoolConfig(actors=2, cpus_per_actor=1)}, {"CPU": 2})
    assert p.bundles == ({"CPU": 1.0}, {"CPU": 1.0})


def test_fails_fast_naming_what_is_missing():
    pools = {"rollout": PoolConfig(actors=2, gpus_per_actor=1), "learner": PoolConfig(actors=4, gpus_per_actor=1)}
    with pytest.raises(PlacementError) as e:
        plan(pools, {"CPU": 64, "GPU": 4})
    assert "GPU: need 6, cluster has 4" in str(e.value)
    with pytest.raises(PlacementError, match="judge_node: need 1, cluster has 0"):
        plan({"judge": PoolConfig(resources={"judge_node": 1})}, {"CPU": 4})
    with pytest.raises(PlacementError, match="actors must be at least 1"):
        plan({"judge": PoolConfig(actors=0)}, {"CPU": 4})
