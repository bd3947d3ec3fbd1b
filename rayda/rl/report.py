"""Ray dashboard gauges of a step's figures (the metrics.jsonl line, TensorBoard and W&B: `rayda.tracking`)."""

from __future__ import annotations

import re


class Dashboard:
    """A step record on the Ray dashboard: the figures DESIGN.md lists through `rayda.metrics` (tagged
    by stage, pool and actor), and a gauge `rayda_rl_<key>` for every other numeric figure (loss,
    accuracy, ...), created at first use. Does nothing when Ray is not running (metrics then only go to
    the file)."""

    def __init__(self, prefix: str = "rayda_rl"):
        self.prefix, self.gauges = prefix, {}

    def publish(self, record: dict) -> None:
        try:
            import ray
            from ray.util.metrics import Gauge
        except ImportError:  # pragma: no cover - ray is a dependency
            return
        if not ray.is_initialized():
            return
        from rayda import metrics

        metrics.publish_step(record)
        published = set(metrics.GAUGES) | {"seconds"}
        rest = {k: v for k, v in record.items() if k not in published}
        for key, value in _flatten(rest).items():
            if key not in self.gauges:
                self.gauges[key] = Gauge(f"{self.prefix}_{key}", description=f"RL step figure {key}")
            self.gauges[key].set(float(value))


def _flatten(record: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in record.items():
        name = re.sub(r"[^A-Za-z0-9_]", "_", f"{prefix}{k}")  # Prometheus metric-name characters
        if isinstance(v, dict):
            out.update(_flatten(v, name + "_"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[name] = v
    return out
