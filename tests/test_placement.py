"""The pure placement planner."""

from __future__ import annotations

import pytest

from rayda.config import PoolConfig
from rayda.placement import PlacementError, by_node, describe, plan, plan_nodes


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
    assert "GPU: need 6 (rollout 2x1, learner 4x1), cluster has 4" in str(e.value)
    with pytest.raises(PlacementError, match=r"judge_node: need 1 \(judge 1x1\), cluster has 0"):
        plan({"judge": PoolConfig(resources={"judge_node": 1})}, {"CPU": 4})
    with pytest.raises(PlacementError, match="actors must be at least 1"):
        plan({"judge": PoolConfig(actors=0)}, {"CPU": 4})


HEAD = {"CPU": 4, "GPU": 0, "head_node": 1, "node:__internal_head__": 1, "memory": 1e9}
GPU_NODE = {"CPU": 8, "GPU": 8, "learner_node": 1}
JUDGE_NODE = {"CPU": 8, "GPU": 8, "judge_node": 8}


def test_plan_that_fits_places_every_bundle():
    pools = {"rollout": PoolConfig(actors=2, gpus_per_actor=1), "learner": PoolConfig(actors=4, gpus_per_actor=1)}
    plans = plan_nodes(pools, {"a": {"CPU": 8, "GPU": 8}})
    assert [p.nodes for p in plans] == [("a", "a"), ("a",) * 4]
    assert by_node(plans) == {"a": {"rollout": 2, "learner": 4}}


def test_custom_resources_pin_pools_to_their_nodes():
    pools = {
        "rollout": PoolConfig(actors=2, gpus_per_actor=1),
        "judge": PoolConfig(actors=2, gpus_per_actor=4, resources={"judge_node": 1}),
        "learner": PoolConfig(actors=4, gpus_per_actor=1, resources={"learner_node": 0.25}),
    }
    plans = {p.name: p for p in plan_nodes(pools, {"head": HEAD, "gpu": GPU_NODE, "judge": JUDGE_NODE})}
    assert set(plans["judge"].nodes) == {"judge"} and set(plans["learner"].nodes) == {"gpu"}
    # the unpinned rollout pool goes where room is left and no one else's custom resource sits
    assert set(plans["rollout"].nodes) == {"gpu"}
    text = describe(list(plans.values()), {"head": HEAD, "gpu": GPU_NODE, "judge": JUDGE_NODE})
    assert "judge      2 x {CPU: 1, GPU: 4, judge_node: 1}  PACK          -> judge x2" in text
    assert "__internal_head__" not in text and "memory" not in text


def test_per_node_shortfall_names_the_pool_and_the_resource():
    nodes = {"a": {"CPU": 8, "GPU": 1}, "b": {"CPU": 8, "GPU": 1}}  # 2 GPUs in total, at most 1 per node
    with pytest.raises(PlacementError, match=r"pool 'learner' does not fit: GPU: one actor needs 2, the most free on one node is 1"):
        plan_nodes({"learner": PoolConfig(actors=1, gpus_per_actor=2)}, nodes)
    with pytest.raises(PlacementError, match=r"pool 'judge' does not fit: judge_node: one actor needs 2, the most free on one node is 1"):
        plan_nodes({"judge": PoolConfig(resources={"judge_node": 2})}, {"a": {"CPU": 8, "judge_node": 1}, "b": {"CPU": 8, "judge_node": 1}})
    with pytest.raises(PlacementError, match="pool 'rollout' does not fit: no single node has all of"):
        plan_nodes({"rollout": PoolConfig(actors=1, cpus_per_actor=4, gpus_per_actor=1)}, {"a": {"CPU": 8}, "b": {"CPU": 2, "GPU": 1}})


def test_strategies():
    nodes = {"a": {"CPU": 4}, "b": {"CPU": 4}}
    spread = plan_nodes({"p": PoolConfig(actors=4, strategy="SPREAD")}, nodes)[0]
    assert spread.nodes == ("a", "b", "a", "b")
    assert plan_nodes({"p": PoolConfig(actors=3)}, nodes)[0].nodes == ("a", "a", "a")
    with pytest.raises(PlacementError, match="STRICT_SPREAD needs 3 distinct nodes"):
        plan_nodes({"p": PoolConfig(actors=3, strategy="STRICT_SPREAD")}, nodes)
    with pytest.raises(PlacementError, match=r"pool 'p' does not fit on one node \(STRICT_PACK\): CPU: one actor needs 6"):
        plan_nodes({"p": PoolConfig(actors=6, strategy="STRICT_PACK")}, nodes)
    with pytest.raises(PlacementError, match="strategy 'FILL' is not one of"):
        plan({"p": PoolConfig(strategy="FILL")}, {"CPU": 4})


def test_packaged_recipes_plan_on_one_8_gpu_node():
    from rayda.config import load_recipe

    pools = load_recipe("qwen-gpu").pools.named()
    assert by_node(plan_nodes(pools, {"n0": {"CPU": 64, "GPU": 8}})) == {"n0": {"rollout": 2, "judge": 2, "learner": 4}}
    with pytest.raises(PlacementError, match="GPU: need 9"):
        plan_nodes(load_recipe("qwen-gpu", ["pools.learner.actors=5"]).pools.named(), {"n0": {"CPU": 64, "GPU": 8}})
