"""The run report: base vs SFT vs RL per category with 95% intervals, RL curves, stage timings.

Reads only what the stages wrote (`eval/*.json`, `metrics.jsonl`, `timings.json`), so it can be
rebuilt at any time: `python -m rayda.report RUN_DIR`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rayda import io
from rayda.evaluation.metrics import format_metric

MODELS = ("base", "sft", "rl")
TABLE_METRICS = ("behaviour_accuracy", "not_unsafe", "not_overrefuse", "safe_completion_style",
                 "citation_validity", "malformed_rate")
RL_CURVES = (("reward_mean", "reward (mean)"), ("behaviour_accuracy", "behaviour accuracy"), ("kl", "KL to SFT"))


def load_evals(run_dir: Path, suffix: str = "heldout") -> dict[str, dict]:
    out = {}
    for model in MODELS:
        p = run_dir / "eval" / f"{model}-{suffix}.json"
        if p.exists():
            out[model] = json.loads(p.read_text())
    return out


def rl_rows(run_dir: Path, stage: str = "rl") -> list[dict]:
    """The metrics.jsonl lines of `stage`: `rl` (one per step) or `rl_eval` (every `rl.eval_every` steps)."""
    p = run_dir / "metrics.jsonl"
    if not p.exists():
        return []
    return [r for r in io.read_jsonl(p) if r.get("stage") == stage and "step" in r]


def overall_table(evals: dict[str, dict]) -> list[str]:
    models = [m for m in MODELS if m in evals]
    lines = ["| metric | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for metric in TABLE_METRICS:
        lines.append(f"| {metric} | " + " | ".join(format_metric(evals[m]["overall"].get(metric)) for m in models) + " |")
    return lines


def category_table(evals: dict[str, dict], metric: str = "behaviour_accuracy") -> list[str]:
    models = [m for m in MODELS if m in evals]
    cats = sorted({c for m in models for c in evals[m].get("categories", {})})
    lines = ["| category | " + " | ".join(models) + " |", "|---|" + "---|" * len(models)]
    for c in cats:
        lines.append(f"| {c} | " + " | ".join(format_metric(evals[m]["categories"].get(c, {}).get(metric)) for m in models) + " |")
    return lines


def plot_categories(evals: dict[str, dict], path: Path, metric: str = "behaviour_accuracy") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    models = [m for m in MODELS if m in evals]
    cats = sorted({c for m in models for c in evals[m].get("categories", {})})
    x, width = np.arange(len(cats)), 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(9, 4))
    for i, m in enumerate(models):
        stats = [evals[m]["categories"].get(c, {}).get(metric) or {} for c in cats]
        means = [s.get("mean") or 0.0 for s in stats]
        err = [[max(0.0, (s.get("mean") or 0) - (s.get("low") or 0)) for s in stats],
               [max(0.0, (s.get("high") or 0) - (s.get("mean") or 0)) for s in stats]]
        ax.bar(x + i * width, means, width, yerr=err, capsize=2, label=m)
    ax.set_xticks(x + width * (len(models) - 1) / 2, cats, rotation=20, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel(metric.replace("_", " "))
    ax.set_title(f"held-out {metric.replace('_', ' ')} by category (95% bootstrap intervals)")
    ax.legend()
    fig.tight_layout()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def plot_rl(rows: list[dict], path: Path, evals: list[dict] | None = None) -> bool:
    """Per-step curves (`RL_CURVES`), and from the `rl_eval` lines: greedy accuracy on the fixed training
    and held-out samples, and the held-out share of each answer style (a collapse shows as one style
    taking over)."""
    curves = [(k, label) for k, label in RL_CURVES if any(k in r for r in rows)]
    evals = [e for e in evals or [] if "heldout" in e or "train" in e]
    if not curves and not evals:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = len(curves) + (2 if evals else 0)
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 3.2))
    axes = list(axes) if panels > 1 else [axes]
    for ax, (key, label) in zip(axes, curves):
        pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker=".")
        ax.set_xlabel("RL step")
        ax.set_title(label)
    if evals:
        acc, styles = axes[len(curves):]
        for split in ("train", "heldout"):
            pts = [(e["step"], e[split]["accuracy"]) for e in evals if split in e]
            acc.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=split)
        acc.set_title("greedy behaviour accuracy")
        acc.legend()
        for style in ("refuse", "safe_complete", "comply"):
            pts = [(e["step"], e["heldout"][f"share_{style}"]) for e in evals if "heldout" in e]
            styles.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=style)
        styles.set_title("held-out answer styles (greedy)")
        styles.legend()
        for ax in (acc, styles):
            ax.set_xlabel("RL step")
    fig.tight_layout()
    with io.atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return True


def write_report(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    evals = load_evals(run_dir)
    timings_path = run_dir / "timings.json"
    timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
    lines = [f"# rayda run report: `{run_dir}`", "",
             "Held-out prompts (templates never seen in training), answered WITHOUT the spec in context.",
             "Cells: mean [95% bootstrap interval].", "", "## Overall", ""]
    lines += overall_table(evals)
    lines += ["", "## Behaviour accuracy by category", ""]
    lines += category_table(evals)
    if evals:
        plot_categories(evals, run_dir / "categories.png")
        lines += ["", "![per-category behaviour accuracy](categories.png)"]
    if plot_rl(rl_rows(run_dir), run_dir / "rl_curves.png", rl_rows(run_dir, "rl_eval")):
        lines += ["", "## RL", "", "![RL reward, accuracy and KL by step](rl_curves.png)"]
    if timings:
        lines += ["", "## Stage timings (seconds, as last run)", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.0f} |" for k, v in timings.items()]
    out = run_dir / "report.md"
    io.atomic_write_text(out, "\n".join(lines) + "\n")
    return out


if __name__ == "__main__":
    print(write_report(sys.argv[1]))
