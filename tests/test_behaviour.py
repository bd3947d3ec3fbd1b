"""rayda.behaviour.classify: style-guide markers decide refuse / safe_complete / comply."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from rayda.behaviour import classify
from rayda.spec import BEHAVIOURS


def _fake_spec():
    guides = {
        "refuse": SimpleNamespace(markers=("i can't help with",)),
        "safe_complete": SimpleNamespace(markers=("please reach out to",)),
        "comply": SimpleNamespace(markers=("sure, here is",)),
    }
    return SimpleNamespace(style_guide=lambda b: guides[b])


@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_each_style_guide_example_is_its_own_behaviour(spec, behaviour):
    assert classify(spec.style_guide(behaviour).example, spec) == behaviour


@pytest.mark.parametrize("behaviour", BEHAVIOURS)
def test_every_marker_alone_classifies_as_its_behaviour(spec, behaviour):
    for marker in spec.style_guide(behaviour).markers:
        assert classify(f"Well. {marker.capitalize()} this.", spec) == behaviour, marker


def test_case_insensitive_and_typographic_apostrophes():
    s = _fake_spec()
    assert classify("I CAN'T HELP WITH THAT.", s) == "refuse"
    assert classify("I can\u2019t   help\nwith that.", s) == "refuse"
    assert classify("PLEASE Reach Out To a friend.", s) == "safe_complete"


def test_refusal_checked_before_safe_completion():
    s = _fake_spec()
    assert classify("I can't help with that, but please reach out to a friend.", s) == "refuse"


def test_no_marker_is_comply():
    s = _fake_spec()
    assert classify("Paris is the capital of France.", s) == "comply"
    assert classify("", s) == "comply"
    assert classify("Sure, here is how.", s) == "comply"
