"""Evaluation: prompt sets to evaluate on, and the metrics a report is made of (DESIGN.md, stage 4).

Pure code only: generation and grading with a model live in `rayda/stages/evaluate.py`.
"""

from rayda.evaluation.metrics import METRICS, Graded, bootstrap_ci, bootstrap_ratio_ci, summarise
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
    "METRICS", "Graded", "bootstrap_ci", "bootstrap_ratio_ci", "summarise",
    "FORMATS", "EvalPrompt", "PromptSetError", "load_completions", "load_prompt_set", "load_rayda",
    "load_strongreject", "load_xstest",
]
