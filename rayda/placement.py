"""Placement: a pure planner from actor pools to placement-group bundles and nodes, and the Ray glue.

    plans = plan(recipe.pools.named(), ray.cluster_resources())   # totals only (fast, needs no node list)
    layout = plan_nodes(recipe.pools.named(), cluster_nodes())    # also picks a node for every bundle

Both fail fast, before any actor starts, when the cluster cannot hold the plan, naming the pool and
the resource that is missing. They are pure (pools + resource dicts in, plans out), so they are tested
without Ray. Ray still makes the final choice of node; `plan_nodes` places bundles the way Ray's
strategies do (PACK fills a node before the next, SPREAD round-robins, the STRICT ones insist), which
is what `rayda plan` prints. Custom resources pin a pool to the nodes that advertise them.
"""

from __future__ import annotations

from dataclasses import dataclass

from rayda.config import PLACEMENT_STRATEGIES, PoolConfig

EPS = 1e-9


class PlacementError(RuntimeError):
    """The cluster cannot hold the requested pools."""


@dataclass(frozen=True)
class PoolPlan:
    name: str
    bundles: tuple[dict, ...]
    """One bundle per actor: {"CPU": n, "GPU": g, custom...} (zero entries left out)."""
    strategy: str = "PACK"
    """Placement-group strategy."""
    nodes: tuple[str, ...] = ()
    """Node of each bundle, as `plan_nodes` placed it (empty from `plan`)."""


def bundle(pool: PoolConfig) -> dict:
    b = {"CPU": float(pool.cpus_per_actor), "GPU": float(pool.gpus_per_actor), **{k: float(v) for k, v in pool.resources.items()}}
    return {k: v for k, v in b.items() if v > 0}


def _fmt(b: dict) -> str:
    return "{" + ", ".join(f"{k}: {v:g}" for k, v in b.items()) + "}"


def plan(pools: dict[str, PoolConfig], available: dict[str, float]) -> list[PoolPlan]:
    """Bundles for every pool; raises PlacementError naming each pool and resource that falls short.

    `available` is the cluster's total (e.g. `ray.cluster_resources()`): the check is on totals.
    """
    plans, need, users = [], {}, {}
    for name, pool in pools.items():
        if pool.actors < 1:
            raise PlacementError(f"pool {name!r}: actors must be at least 1, got {pool.actors}")
        if pool.strategy not in PLACEMENT_STRATEGIES:
            raise PlacementError(f"pool {name!r}: strategy {pool.strategy!r} is not one of {', '.join(PLACEMENT_STRATEGIES)}")
        b = bundle(pool)
        plans.append(PoolPlan(name, tuple(dict(b) for _ in range(pool.actors)), pool.strategy))
        for k, v in b.items():
            need[k] = need.get(k, 0.0) + v * pool.actors
            users.setdefault(k, []).append(f"{name} {pool.actors}x{v:g}")
    short = {k: v for k, v in need.items() if v > available.get(k, 0.0) + EPS}
    if short:
        raise PlacementError("the cluster cannot hold the pools: " + "; ".join(
            f"{k}: need {v:g} ({', '.join(users[k])}), cluster has {available.get(k, 0.0):g}" for k, v in sorted(short.items())))
    return plans


def _fits(b: dict, free: dict) -> bool:
    return all(free.get(k, 0.0) + EPS >= v for k, v in b.items())


def _take(b: dict, free: dict) -> None:
    for k, v in b.items():
        free[k] = free.get(k, 0.0) - v


def _why_not(name: str, b: dict, free: dict[str, dict]) -> str:
    """What stops one bundle of pool `name` from fitting on any node, in words."""
    missing = [f"{k}: one actor needs {v:g}, the most free on one node is {max((f.get(k, 0.0) for f in free.values()), default=0):g}"
               for k, v in b.items() if all(f.get(k, 0.0) + EPS < v for f in free.values())]
    if missing:
        return f"pool {name!r} does not fit: " + "; ".join(missing)
    return f"pool {name!r} does not fit: no single node has all of {_fmt(b)} free (free per node: " + \
        "; ".join(f"{n} {_fmt({k: f.get(k, 0.0) for k in b})}" for n, f in free.items()) + ")"


def _place(p: PoolPlan, free: dict[str, dict]) -> tuple[str, ...]:
    """Pick a node for every bundle of `p` from `free` (consumed); raise PlacementError when one fails."""
    custom = lambda n: sum(1 for k in free[n] if k not in ("CPU", "GPU", "memory", "object_store_memory")  # noqa: E731
                           and not k.startswith(("node:", "accelerator_type:")) and k not in p.bundles[0])
    # Prefer nodes without custom resources this pool does not ask for: leave them to the pools that do.
    order = sorted(free, key=lambda n: (custom(n), list(free).index(n)))
    if p.strategy == "STRICT_PACK":
        total = {}
        for b in p.bundles:
            for k, v in b.items():
                total[k] = total.get(k, 0.0) + v
        node = next((n for n in order if _fits(total, free[n])), None)
        if node is None:
            raise PlacementError(_why_not(p.name, total, free).replace("does not fit", "does not fit on one node (STRICT_PACK)"))
        _take(total, free[node])
        return (node,) * len(p.bundles)
    out: list[str] = []
    for b in p.bundles:
        ok = [n for n in order if _fits(b, free[n])]
        if p.strategy == "STRICT_SPREAD":
            ok = [n for n in ok if n not in out]
        elif p.strategy == "SPREAD":
            ok.sort(key=lambda n: out.count(n))  # stable: fewest bundles of this pool first
        else:  # PACK: the node this pool already uses most, then the order above
            ok.sort(key=lambda n: -out.count(n))
        if not ok:
            if p.strategy == "STRICT_SPREAD" and any(_fits(b, f) for f in free.values()):
                raise PlacementError(f"pool {p.name!r} does not fit: STRICT_SPREAD needs {len(p.bundles)} distinct nodes "
                                     f"with {_fmt(b)} free; found {len(out)}")
            raise PlacementError(_why_not(p.name, b, free))
        _take(b, free[ok[0]])
        out.append(ok[0])
    return tuple(out)


def plan_nodes(pools: dict[str, PoolConfig], nodes: dict[str, dict[str, float]]) -> list[PoolPlan]:
    """`plan` on the cluster's totals, then a node for every bundle (`nodes`: name -> resources).

    Pools asking for custom resources are placed first, then those asking for GPUs, then the rest, so
    that a CPU-only pool does not take the room of a pinned one. Returns the plans in the input order.
    """
    totals: dict[str, float] = {}
    for res in nodes.values():
        for k, v in res.items():
            totals[k] = totals.get(k, 0.0) + v
    plans = plan(pools, totals)
    free = {n: dict(r) for n, r in nodes.items()}
    rank = lambda p: (0 if set(p.bundles[0]) - {"CPU", "GPU"} else 1 if "GPU" in p.bundles[0] else 2)  # noqa: E731
    placed = {p.name: _place(p, free) for p in sorted(plans, key=rank)}
    return [PoolPlan(p.name, p.bundles, p.strategy, placed[p.name]) for p in plans]


def by_node(plans: list[PoolPlan]) -> dict[str, dict[str, int]]:
    """node -> {pool: actors placed there}."""
    out: dict[str, dict[str, int]] = {}
    for p in plans:
        for n in p.nodes:
            out.setdefault(n, {})
            out[n][p.name] = out[n].get(p.name, 0) + 1
    return out


def describe(plans: list[PoolPlan], nodes: dict[str, dict[str, float]] | None = None) -> str:
    """The plan as text: per pool (actors, bundle, strategy, nodes), then per node."""
    lines = ["pools:"]
    for p in plans:
        where = ", ".join(f"{n} x{p.nodes.count(n)}" for n in dict.fromkeys(p.nodes)) if p.nodes else "(any node)"
        lines.append(f"  {p.name:<10} {len(p.bundles)} x {_fmt(p.bundles[0])}  {p.strategy:<13} -> {where}")
    if nodes is not None:
        lines.append("nodes:")
        placed = by_node(plans)
        for n, res in nodes.items():
            shown = {k: v for k, v in res.items() if k in ("CPU", "GPU") or not k.startswith(("node:", "accelerator_type:"))
                     and k not in ("memory", "object_store_memory")}
            pools = ", ".join(f"{name} x{c}" for name, c in placed.get(n, {}).items()) or "-"
            lines.append(f"  {n:<24} {_fmt(shown)}  <- {pools}")
    return "\n".join(lines)


# ---- Ray -----------------------------------------------------------------------------------------


def cluster_nodes() -> dict[str, dict[str, float]]:
    """Alive nodes of the connected Ray cluster: `ip/node-id-prefix` -> total resources."""
    import ray

    out = {}
    for n in sorted(ray.nodes(), key=lambda n: (not n.get("Resources", {}).get("node:__internal_head__"), n["NodeID"])):
        if n.get("Alive"):
            head = "head " if n["Resources"].get("node:__internal_head__") else ""
            out[f"{head}{n['NodeManagerAddress']}/{n['NodeID'][:8]}"] = {k: float(v) for k, v in n["Resources"].items()}
    return out


def placement_group_for(pool_plan: PoolPlan, timeout_s: float = 120.0, strategy: str | None = None):
    """Create the placement group of one pool and wait until Ray has reserved it."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    strategy = strategy or pool_plan.strategy
    pg = placement_group(list(pool_plan.bundles), strategy=strategy, name=f"rayda-{pool_plan.name}")
    ready, _ = ray.wait([pg.ready()], timeout=timeout_s)
    if not ready:
        remove_placement_group(pg)
        raise PlacementError(
            f"pool {pool_plan.name!r}: placement group {list(pool_plan.bundles)} ({strategy}) not ready after {timeout_s:.0f}s "
            "(no single node may have room for one bundle, or another job holds the resources)"
        )
    return pg


def scheduling(pg, index: int):
    """Options that put an actor into bundle `index` of placement group `pg`."""
    from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

    return PlacementGroupSchedulingStrategy(placement_group=pg, placement_group_bundle_index=index)


def data_pool_args(pool: PoolConfig) -> dict:
    """`map_batches` arguments that run a Ray Data actor pool with a pool's size and per-actor resources."""
    from ray.data import ActorPoolStrategy

    args = dict(num_cpus=pool.cpus_per_actor, compute=ActorPoolStrategy(size=pool.actors))
    if pool.gpus_per_actor:
        args["num_gpus"] = pool.gpus_per_actor
    if pool.resources:
        args["resources"] = dict(pool.resources)
    return args
