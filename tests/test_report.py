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
