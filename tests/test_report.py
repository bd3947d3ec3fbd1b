"""The run report from what stages wrote: tables with intervals, plots, timings."""

from __future__ import annotations

import json

from rayda import io
from rayda.evaluation.metrics import Graded, summarise
from rayda.report import write_report


def _eval(correct: list[int]) -> dict:
    graded = [Graded(str(i), "privacy" if i % 2 else "self_harm", "refuse", "refuse" if ok else "comply")
              for i, ok in enumerate(correct)]
    return summarise(graded, n_resamples=200)


def test_report_tables_plots_and_timings(tmp_path):
    (tmp_path / "eval").mkdir()
    for model, correct in {"base": [1, 0, 0, 0], "sft": [1, 1, 0, 1], "rl": [1, 1, 1, 1]}.items():
        io.atomic_write_json(tmp_path / "eval" / f"{model}-heldout.json", _eval(correct))
    io.write_jsonl(tmp_path / "metrics.jsonl", [{"stage": "sft", "step": 1, "loss": 2.0}] +
                   [{"stage": "rl", "step": s, "reward_mean": 0.1 * s, "kl": 0.01 * s} for s in range(1, 4)])
    io.atomic_write_json(tmp_path / "timings.json", {"gen_sft": 12.0, "sft": 30.5})
    text = write_report(tmp_path).read_text()
    assert "| behaviour_accuracy | 0.25 [" in text and "| 1.00 [1.00, 1.00] |" in text
    assert "| privacy |" in text and "| self_harm |" in text
    assert "| sft | 30 |" in text or "| sft | 31 |" in text
    for png in ("categories.png", "rl_curves.png"):
        assert (tmp_path / png).read_bytes()[:4] == b"\x89PNG"
        assert png in text
    assert json.loads((tmp_path / "timings.json").read_text())["gen_sft"] == 12.0


def test_rl_plot_draws_each_member(tmp_path):
    """With rl.members, each member's per-step and watch lines reach the plot, labelled by member; a
    single run's lines carry no member label."""
    from rayda.report import line_label, rl_rows, rl_series

    step = lambda stage, s: {"stage": stage, "step": s, "reward_mean": 0.5, "kl": 0.01}  # noqa: E731
    watch = lambda stage: {"stage": stage, "step": 0, "train": {"accuracy": 0.9},  # noqa: E731
                           "heldout": {"accuracy": 0.8, "share_refuse": 0.4, "share_safe_complete": 0.3, "share_comply": 0.3}}
    io.write_jsonl(tmp_path / "metrics.jsonl", [step("rl", 1), step("rl", 2), watch("rl_eval"), step("rl_m1", 1),
                                                watch("rl_eval_m1"), step("rl_model", 1), {"stage": "sft", "step": 1}])
    runs, evals = rl_rows(tmp_path), rl_rows(tmp_path, "rl_eval")
    assert list(runs) == [0, 1] and list(evals) == [0, 1] and len(runs[0]) == 2
    panels = rl_series(runs, evals)
    assert [(kind, member, steps) for kind, member, steps, _ in panels["reward (mean)"]] == [("", 0, [1, 2]), ("", 1, [1])]
    assert [line_label(kind, member) for kind, member, *_ in panels["greedy behaviour accuracy"]] == [
        "train member 0", "heldout member 0", "train member 1", "heldout member 1"]
    assert len(panels["held-out answer styles (greedy)"]) == 6
    one = rl_series({0: runs[0]}, {0: evals[0]})
    assert [line_label(kind, member) for kind, member, *_ in one["reward (mean)"]] == [""]
    assert [line_label(kind, member) for kind, member, *_ in one["held-out answer styles (greedy)"]] == [
        "refuse", "safe_complete", "comply"]
    assert "behaviour accuracy" not in one  # no step carried it
