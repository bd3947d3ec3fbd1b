"""Evaluation: prompt sets to evaluate on, and the metrics a report is made of (DESIGN.md, stage 4).

Pure code only: generation and grading with a model run from `rayda/stages/evaluate.py` (the model
grader's prompt, schema and judge-pool worker are in `rayda/evaluation/grader.py`).
"""

from rayda.evaluation.metrics import METRICS, Graded, bootstrap_ci, bootstrap_ratio_ci, format_metric, summarise
from rayda.evaluation.prompt_sets import (
    FORMATS,
    EvalPrompt,
    PromptSetError,
    load_completions,
    load_prompt_set,
    load_rayda,
    load_strongreject,
    load_xstest,
)

__all__ = [
    "METRICS", "Graded", "bootstrap_ci", "bootstrap_ratio_ci", "format_metric", "summarise",
    "FORMATS", "EvalPrompt", "PromptSetError", "load_completions", "load_prompt_set", "load_rayda",
    "load_strongreject", "load_xstest",
]
