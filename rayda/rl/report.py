"""Ray dashboard gauges of a step's figures (the metrics.jsonl line, TensorBoard and W&B: `rayda.tracking`)."""

from __future__ import annotations

import re


class Dashboard:
    """A step record on the Ray dashboard: the figures DESIGN.md lists through `rayda.metrics` (tagged
    by stage, pool and actor), and a gauge `rayda_rl_<key>` for every other numeric figure (loss,
    accuracy, ...; `other_figures`), created at first use. Does nothing when Ray is not running
    (metrics then only go to the file)."""

    def __init__(self, prefix: str = "rayda_rl"):
        self.prefix = prefix

    def publish(self, record: dict) -> None:
        try:
            import ray
        except ImportError:  # pragma: no cover - ray is a dependency
            return
        if not ray.is_initialized():
            return
        from rayda import metrics

        metrics.publish_step(record)
        for name, (value, tags) in other_figures(record, self.prefix).items():
            metrics.metric("Gauge", name, f"RL step figure {name.removeprefix(self.prefix + '_')}", tuple(tags)).set(value, tags=tags)


def other_figures(record: dict, prefix: str = "rayda_rl") -> dict[str, tuple[float, dict]]:
    """The numeric figures of a step record that `rayda.metrics.GAUGES` does not publish, flattened
    (`train_accuracy` from {"train": {"accuracy": ...}}): gauge name -> (value, tags). Each is tagged
    by stage (`rl`, `rl_eval`; `rl_m1`, ... for `rl.members`, whose runs would otherwise overwrite
    each other's). Pure."""
    from rayda.metrics import GAUGES

    rest = {k: v for k, v in record.items() if k not in set(GAUGES) | {"seconds"}}
    tags = {"stage": str(record.get("stage", "rl"))}
    return {f"{prefix}_{key}": (float(value), tags) for key, value in _flatten(rest).items()}


def _flatten(record: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in record.items():
        name = re.sub(r"[^A-Za-z0-9_]", "_", f"{prefix}{k}")  # Prometheus metric-name characters
        if isinstance(v, dict):
            out.update(_flatten(v, name + "_"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[name] = v
    return out
