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


def rl_rows(run_dir: Path, stage: str = "rl") -> dict[int, list[dict]]:
    """The metrics.jsonl lines of `stage` (`rl`: one per step; `rl_eval`: every `rl.eval_every` steps)
    by `rl.members` member (`rl_m1` -> 1), member 0 first."""
    from rayda.rl.members import member_of

    p = run_dir / "metrics.jsonl"
    runs: dict[int, list[dict]] = {}
    for r in io.read_jsonl(p) if p.exists() else []:
        member = member_of(r.get("stage") or "", stage)
        if "step" in r and member is not None:
            runs.setdefault(member, []).append(r)
    return dict(sorted(runs.items()))


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


def rl_series(runs: dict[int, list[dict]], evals: dict[int, list[dict]]) -> dict[str, list[tuple]]:
    """What the RL plot draws, by panel title: (kind, member, steps, values) per line. Per-step curves
    (`RL_CURVES`, kind ''), and from the `rl_eval` lines greedy accuracy on the fixed training and
    held-out samples (kind: the split) and the held-out share of each answer style (kind: the style; a
    collapse shows as one style taking over). `member` is the `rl.members` member, None for one run."""
    panels: dict[str, list[tuple]] = {}

    def add(title: str, kind: str, member: int, of: dict, rows: list[dict], value) -> None:
        pts = [(r["step"], value(r)) for r in rows]
        pts = [p for p in pts if p[1] is not None]
        if pts:
            panels.setdefault(title, []).append((kind, member if len(of) > 1 else None, [p[0] for p in pts], [p[1] for p in pts]))

    for key, title in RL_CURVES:
        for member, rows in runs.items():
            add(title, "", member, runs, rows, lambda r: r.get(key))
    for member, rows in evals.items():
        for split in ("train", "heldout"):
            add("greedy behaviour accuracy", split, member, evals, rows, lambda r: (r.get(split) or {}).get("accuracy"))
        for style in ("refuse", "safe_complete", "comply"):
            add("held-out answer styles (greedy)", style, member, evals, rows, lambda r: (r.get("heldout") or {}).get(f"share_{style}"))
    return panels


def line_label(kind: str, member: int | None) -> str:
    """A line's legend entry: its split or style, then `member i` when several runs were averaged."""
    return " ".join(x for x in (kind, None if member is None else f"member {member}") if x)


def plot_rl(runs: dict[int, list[dict]], path: Path, evals: dict[int, list[dict]] | None = None) -> bool:
    """`rl_series` drawn, one panel each: a colour per split or style and a line style per member (a
    curve panel: a colour per member); False (no file) when there is nothing to draw."""
    panels = rl_series(runs, evals or {})
    if not panels:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
    axes = list(axes) if len(panels) > 1 else [axes]
    for ax, (title, lines) in zip(axes, panels.items()):
        kinds = list(dict.fromkeys(kind for kind, *_ in lines))
        for kind, member, steps, values in lines:
            style = dict(color=f"C{kinds.index(kind)}", linestyle=("-", "--", ":", "-.")[(member or 0) % 4]) if kind else {}
            ax.plot(steps, values, marker="o" if kind else ".", label=line_label(kind, member) or None, **style)
        ax.set_xlabel("RL step")
        ax.set_title(title)
        if any(line_label(kind, member) for kind, member, *_ in lines):
            ax.legend(fontsize="small")
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
    runs = rl_rows(run_dir)
    if plot_rl(runs, run_dir / "rl_curves.png", rl_rows(run_dir, "rl_eval")):
        lines += ["", "## RL", ""]
        if len(runs) > 1:
            lines += [f"{len(runs)} runs from the same start (`rl.members`), each with its own curves; the export is their mean.", ""]
        lines += ["![RL reward, accuracy and KL by step](rl_curves.png)"]
    if timings:
        lines += ["", "## Stage timings (seconds, as last run)", "", "| stage | seconds |", "|---|---|"]
        lines += [f"| {k} | {v:.0f} |" for k, v in timings.items()]
    out = run_dir / "report.md"
    io.atomic_write_text(out, "\n".join(lines) + "\n")
    return out


if __name__ == "__main__":
    print(write_report(sys.argv[1]))
