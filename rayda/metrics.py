"""rayda's figures on the Ray dashboard, as `ray.util.metrics`, tagged by pool and actor.

Ray's Prometheus export (each node's `--metrics-export-port`, `/metrics`) prefixes every name with `ray_`
(and may add `_total` to a counter):

    rayda_tokens_generated         counter    pool, actor           tokens sampled by a vLLM actor
    rayda_judge_verdicts           counter    pool, actor, outcome  judge verdicts, outcome ok | error
    rayda_judge_pass_rate          gauge      stage, pool, actor    share of judged samples that pass
    rayda_judge_error_rate         gauge      stage, pool, actor    share of judgements that failed
    rayda_reward_mean              gauge      stage, pool, actor    mean RL reward of the step
    rayda_kl                       gauge      stage, pool, actor    KL to the reference
    rayda_step_seconds             histogram  stage, pool, actor, phase   step time: generate / judge / train / sync / step

Tags carry only pool, actor, stage, phase and outcome names: never a value from the environment (a
judge API key lives in an environment variable and is read only by the http judge). Everything here
does nothing when Ray is not running, so the pure code paths stay free of Ray.
"""

from __future__ import annotations


STEP_BOUNDARIES = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 120, 300]
PHASE_POOL = {"generate": "rollout", "judge": "judge", "train": "learner", "sync": "learner", "step": "all"}
"""Which pool a phase of the step time belongs to."""
GAUGES = {"judge_pass_rate": "judge", "judge_error_rate": "judge", "reward_mean": "learner", "kl": "learner"}
"""The step figures DESIGN.md lists, with the pool each describes."""

_made: dict = {}


def metric(kind: str, name: str, description: str, tags: tuple[str, ...], **kw):
    """One metric object per name in this process, made at first use."""
    if name not in _made:
        from ray.util import metrics

        _made[name] = getattr(metrics, kind)(name, description=description, tag_keys=tags, **kw)
    return _made[name]


def _on() -> bool:
    try:
        import ray
    except ImportError:  # pragma: no cover - ray is a dependency
        return False
    return ray.is_initialized()


def actor_name() -> str:
    """This process's actor name (`rollout-0`), `actor-<id8>` for an unnamed actor (Ray Data), else `driver`."""
    import ray

    ctx = ray.get_runtime_context()
    if ctx.get_actor_id() is None:
        return "driver"
    return ctx.get_actor_name() or f"actor-{ctx.get_actor_id()[:8]}"


def tokens_generated(n: int, pool: str = "rollout") -> None:
    if n and _on():
        metric("Counter", "rayda_tokens_generated", "Tokens sampled by a vLLM actor", ("pool", "actor")) \
            .inc(float(n), tags={"pool": pool, "actor": actor_name()})


def judge_verdicts(ok: int, errors: int, pool: str = "judge") -> None:
    if (ok or errors) and _on():
        c = metric("Counter", "rayda_judge_verdicts", "Judge verdicts by outcome", ("pool", "actor", "outcome"))
        actor = actor_name()
        for outcome, n in (("ok", ok), ("error", errors)):
            if n:
                c.inc(float(n), tags={"pool": pool, "actor": actor, "outcome": outcome})


def step_figures(record: dict) -> dict[str, tuple[float, dict]]:
    """The dashboard figures of one step record: metric name -> (value, tags). Pure."""
    stage = str(record.get("stage", ""))
    out = {}
    for key, pool in GAUGES.items():
        v = record.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"rayda_{key}"] = (float(v), {"stage": stage, "pool": pool, "actor": "driver"})
    for phase, v in (record.get("seconds") or {}).items():
        if phase in PHASE_POOL and isinstance(v, (int, float)):
            out[f"rayda_step_seconds/{phase}"] = (float(v), {"stage": stage, "pool": PHASE_POOL[phase], "actor": "driver", "phase": phase})
    return out


def publish_step(record: dict) -> None:
    """Set the gauges and observe the step-time histogram for one step record (driver side)."""
    if not _on():
        return
    for name, (value, tags) in step_figures(record).items():
        if name.startswith("rayda_step_seconds/"):
            metric("Histogram", "rayda_step_seconds", "Step time by phase (generate, judge, train, sync, step)",
                    ("stage", "pool", "actor", "phase"), boundaries=STEP_BOUNDARIES).observe(value, tags=tags)
        else:
            metric("Gauge", name, f"Step figure {name.removeprefix('rayda_')}", ("stage", "pool", "actor")).set(value, tags=tags)
