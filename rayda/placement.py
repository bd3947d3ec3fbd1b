"""Placement: a pure planner from actor pools to placement-group bundles, and the Ray glue around it.

The planner fails fast, before any actor starts, when the cluster cannot hold the plan, and says what
is missing. It is pure (pools + a resource dict in, bundles out) so it is tested without Ray.
"""

from __future__ import annotations

from dataclasses import dataclass

from rayda.config import PoolConfig


class PlacementError(RuntimeError):
    """The cluster cannot hold the requested pools."""


@dataclass(frozen=True)
class PoolPlan:
    name: str
    bundles: tuple[dict, ...]
    """One bundle per actor: {"CPU": n, "GPU": g, custom...} (zero entries left out)."""


def bundle(pool: PoolConfig) -> dict:
    b = {"CPU": float(pool.cpus_per_actor), "GPU": float(pool.gpus_per_actor), **{k: float(v) for k, v in pool.resources.items()}}
    return {k: v for k, v in b.items() if v > 0}


def plan(pools: dict[str, PoolConfig], available: dict[str, float]) -> list[PoolPlan]:
    """Bundles for every pool; raises PlacementError naming each resource that falls short.

    `available` is the cluster's total (e.g. `ray.cluster_resources()`). The check is on totals; Ray
    still decides which node gets each bundle, and a per-node shortfall shows up as a placement group
    that never becomes ready, which `placement_group_for` turns into an error with a timeout.
    """
    plans, need = [], {}
    for name, pool in pools.items():
        if pool.actors < 1:
            raise PlacementError(f"pool {name!r}: actors must be at least 1, got {pool.actors}")
        b = bundle(pool)
        plans.append(PoolPlan(name, tuple(dict(b) for _ in range(pool.actors))))
        for k, v in b.items():
            need[k] = need.get(k, 0.0) + v * pool.actors
    short = {k: (v, available.get(k, 0.0)) for k, v in need.items() if v > available.get(k, 0.0) + 1e-9}
    if short:
        detail = "; ".join(f"{k}: need {v:g}, cluster has {have:g}" for k, (v, have) in sorted(short.items()))
        per_pool = ", ".join(f"{p.name}={len(p.bundles)}x{p.bundles[0]}" for p in plans)
        raise PlacementError(f"the cluster cannot hold the pools ({per_pool}): {detail}")
    return plans


def placement_group_for(pool_plan: PoolPlan, timeout_s: float = 120.0, strategy: str = "PACK"):
    """Create the placement group of one pool and wait until Ray has reserved it."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    pg = placement_group(list(pool_plan.bundles), strategy=strategy, name=f"rayda-{pool_plan.name}")
    ready, _ = ray.wait([pg.ready()], timeout=timeout_s)
    if not ready:
        remove_placement_group(pg)
        raise PlacementError(
            f"pool {pool_plan.name!r}: placement group {list(pool_plan.bundles)} not ready after {timeout_s:.0f}s "
            "(no single node may have room for one bundle, or another job holds the resources)"
        )
    return pg


def scheduling(pg, index: int):
    """Options that put an actor into bundle `index` of placement group `pg`."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    return PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=index)
