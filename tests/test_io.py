"""Atomic outputs: a failure leaves the old content and no stray file under the real name."""

from __future__ import annotations

import pytest

from rayda.io import atomic_path, atomic_write_json, is_done, mark_success, prune_steps, read_jsonl, write_jsonl


def test_atomic_write_replaces_only_on_success(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]
    with atomic_path(target) as tmp:
        tmp.write_text("new")
    assert target.read_text() == "new"


def test_atomic_folder(tmp_path):
    target = tmp_path / "model"
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "a").write_text("1")
    assert (target / "a").read_text() == "1"


def test_success_marker_and_jsonl(tmp_path):
    assert not is_done(tmp_path)
    mark_success(tmp_path, {"rows": 3})
    assert is_done(tmp_path)
    write_jsonl(tmp_path / "x.jsonl", [{"a": 1}, {"b": 2}])
    assert read_jsonl(tmp_path / "x.jsonl") == [{"a": 1}, {"b": 2}]
    (tmp_path / "bad.jsonl").write_text('{"a": 1}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
        read_jsonl(tmp_path / "bad.jsonl")
    atomic_write_json(tmp_path / "j.json", {"k": 1})


def test_prune_steps_keeps_the_newest_checkpoints_by_step_number(tmp_path):
    for n in (1, 2, 9, 10):
        (tmp_path / f"step{n}").mkdir()
    (tmp_path / "step_notes.txt").write_text("a file, not a checkpoint")
    prune_steps(tmp_path, 0)  # 0 keeps all
    assert len(list(tmp_path.glob("step*"))) == 5
    prune_steps(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step10", "step9", "step_notes.txt"]  # 10 after 9, not before 2
