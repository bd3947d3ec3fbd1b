"""Judges behind one interface (`rayda.judges.base.Judge`), chosen by `judge.kind` in the recipe.

    rubric  deterministic grader for labelled prompts (behaviour, style, substance; citations in FILTER)
    llm     a Hugging Face model in vLLM, verdicts forced into a JSON schema
    http    an OpenAI-compatible chat-completions endpoint
    pm      `rayda pm`'s preference model (RL's reward with `reward.kind=pm`; REWARD view only)

`make_judge` builds one; `register` adds a kind (a class taking `(spec, spec_texts, model, cfg)`).
"""

from __future__ import annotations

from typing import Callable

from rayda.judges.base import Judge, MinOfK, min_of_k

__all__ = ["Judge", "MinOfK", "min_of_k", "make_judge", "register", "KINDS", "needs_label", "needs_model", "check_kind"]


def _rubric(spec, spec_texts, model, cfg):
    from rayda.judges.rubric import RubricJudge

    return RubricJudge(spec, spec_texts, None)


def _llm(spec, spec_texts, model, cfg):
    from rayda.judges.llm import LLMJudge

    return LLMJudge(spec, spec_texts, model, cfg)


def _http(spec, spec_texts, model, cfg):
    from rayda.judges.http import HttpJudge

    return HttpJudge(spec, spec_texts, model, cfg)


def _pm(spec, spec_texts, model, cfg):
    from rayda.judges.pm import PreferenceModelJudge

    return PreferenceModelJudge(spec, spec_texts, model)


_REGISTRY: dict[str, Callable] = {"rubric": _rubric, "llm": _llm, "http": _http, "pm": _pm}
_NEEDS_LABEL = {"rubric": True, "llm": False, "http": False, "pm": False}
_NEEDS_MODEL = {"rubric": False, "llm": True, "http": False, "pm": True}

KINDS = tuple(_REGISTRY)


def register(kind: str, factory: Callable, needs_label: bool = False, needs_model: bool = False) -> None:
    _REGISTRY[kind] = factory
    _NEEDS_LABEL[kind], _NEEDS_MODEL[kind] = needs_label, needs_model


def check_kind(kind: str) -> None:
    if kind not in _REGISTRY:
        raise ValueError(f"unknown judge kind {kind!r}; known kinds: {', '.join(sorted(_REGISTRY))}")


def needs_label(kind: str) -> bool:
    check_kind(kind)
    return _NEEDS_LABEL[kind]


def needs_model(kind: str) -> bool:
    """True when the judge loads model weights itself (so a missing path must fail up front)."""
    check_kind(kind)
    return _NEEDS_MODEL[kind]


def make_judge(cfg, spec, spec_texts: dict[str, str], model: str | None = None) -> Judge:
    """The judge `cfg.kind` names. Heavy kinds (llm) start their engine here: call it inside an actor."""
    check_kind(cfg.kind)
    return _REGISTRY[cfg.kind](spec, spec_texts, model, cfg)

