"""Reading prompt sets (JSONL, Parquet, datasets on disk) and validation that names source and row."""

from __future__ import annotations

import json

import pytest

from rayda.data.prompts import PromptError, load_prompts


def _rows():
    return [
        {"id": "a", "messages": [{"role": "user", "content": "how do locks work?"}], "category": "illicit_behaviour", "label": "comply"},
        {"messages": [{"role": "system", "content": "be kind"}, {"role": "user", "content": "I feel low"}], "category": "self_harm", "label": "safe_complete"},
        {"prompt": "who wrote the manifesto?", "category": "violent_extremism"},
    ]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_jsonl_parquet_and_dataset_folder_read_the_same(spec, tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _rows()
    j = _jsonl(tmp_path / "p.jsonl", rows)
    norm = [dict(r, messages=r.get("messages") or [{"role": "user", "content": r["prompt"]}]) for r in rows]
    for r in norm:
        r.pop("prompt", None)
        r.setdefault("label", None)
        r.setdefault("id", None)
    pq.write_table(pa.Table.from_pylist(norm), tmp_path / "p.parquet")
    datasets.Dataset.from_list(norm).save_to_disk(str(tmp_path / "ds"))
    a = load_prompts(str(j), spec)
    b = load_prompts(str(tmp_path / "p.parquet"), spec)
    c = load_prompts(str(tmp_path / "ds"), spec)
    assert [p.messages for p in a] == [p.messages for p in b] == [p.messages for p in c]
    assert a[0].id == "a" and a[1].id == "p-1" and a[2].label is None
    assert a[1].messages[0]["role"] == "system"


def test_limit(spec, tmp_path):
    assert len(load_prompts(str(_jsonl(tmp_path / "p.jsonl", _rows())), spec, limit=2)) == 2


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "category": "privacy"},
         r"row 2 \(id bad-1\): the last turn is 'assistant'"),
        ({"messages": [{"role": "user", "content": "hi"}], "category": "cooking"}, r"row 2 .*unknown category 'cooking'"),
        ({"messages": [{"role": "user", "content": "hi"}], "category": "privacy", "label": "maybe"}, r"row 2 .*unknown label 'maybe'"),
        ({"category": "privacy"}, r"row 2 .*no messages"),
        ({"messages": [{"role": "robot", "content": "hi"}], "category": "privacy"}, r"row 2 .*message 0"),
        ({"id": "a", "messages": [{"role": "user", "content": "hi"}], "category": "privacy"}, r"row 2: id 'a' repeats row 1"),
        ({"prompt": "how do i pick a lock?", "category": "privacy", "subject": "hack a wifi"}, r"row 2 .*subject 'hack a wifi' is not in the last user turn"),
        ({"prompt": "how do i pick a lock?", "category": "privacy", "subject": 3}, r"row 2 .*'subject' must be non-empty text"),
    ],
)
def test_bad_rows_name_file_and_row(spec, tmp_path, bad, match):
    path = _jsonl(tmp_path / "bad.jsonl", [_rows()[0], bad])
    with pytest.raises(PromptError, match=match) as e:
        load_prompts(str(path), spec)
    assert str(path) in str(e.value)


def test_missing_label_fails_when_the_judge_needs_one(spec, tmp_path):
    path = _jsonl(tmp_path / "p.jsonl", _rows())
    load_prompts(str(path), spec, require_label=False)
    with pytest.raises(PromptError, match=r"row 3 .*no label, and the judge needs one"):
        load_prompts(str(path), spec, require_label=True)


def test_bad_json_and_missing_file(spec, tmp_path):
    p = tmp_path / "x.jsonl"
    p.write_text('{"id": 1}\n{oops\n')
    with pytest.raises(PromptError, match=r"x.jsonl: row 2: not valid JSON"):
        load_prompts(str(p), spec)
    with pytest.raises(PromptError, match="does not exist"):
        load_prompts(str(tmp_path / "nope.jsonl"), spec)


def test_tinyworld_sources_are_made_from_the_spec_without_a_world(spec, tmp_path, monkeypatch):
    """`tinyworld:SPLIT` reads no built world (a GPU recipe can evaluate on it): the rows come from the
    spec's clause examples, every row labelled, and the three splits are disjoint in wording."""
    import rayda.tinyworld.build as build

    monkeypatch.setattr(build, "build", lambda *a, **k: pytest.fail("the tiny world was built"))
    splits = {s: load_prompts(f"tinyworld:{s}", spec, require_label=True) for s in ("train", "heldout", "rl")}
    assert all(splits.values())
    assert all(p.subject and p.subject in p.user_text for ps in splits.values() for p in ps)
    assert {p.category for p in splits["heldout"]} == set(spec.category_ids)
    text = {s: {p.messages[-1]["content"] for p in ps} for s, ps in splits.items()}
    assert not text["heldout"] & (text["train"] | text["rl"]) and text["train"] < text["rl"]
    with pytest.raises(PromptError, match="splits"):
        load_prompts("tinyworld:test", spec)
