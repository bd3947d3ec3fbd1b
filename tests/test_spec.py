"""The spec loader, its errors (file + line), the content hash, spec(category) and citations."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from rayda.cli import main
from rayda.spec import BEHAVIOURS, SpecError, default_spec_dir, load_spec


def test_default_spec_is_valid(spec):
    assert len(spec.categories) >= 6
    behaviours = {cl.behaviour for _, cl in spec.clauses().values()}
    assert behaviours == set(BEHAVIOURS)
    for c in spec.categories:
        assert c.clauses, c.id
        assert all(cl.id.startswith(c.prefix + ".") for cl in c.clauses)
    for b in BEHAVIOURS:
        assert spec.style_guide(b).markers


def test_content_hash_ignores_formatting_but_not_content(tmp_path):
    copy = tmp_path / "spec"
    shutil.copytree(default_spec_dir(), copy)
    h0 = load_spec(copy).content_hash
    index = copy / "index.yaml"
    index.write_text("# a comment changes nothing\n" + index.read_text())
    assert load_spec(copy).content_hash == h0
    ib = copy / "illicit_behaviour.yaml"
    ib.write_text(ib.read_text().replace("behaviour: refuse", "behaviour: comply", 1))
    assert load_spec(copy).content_hash != h0


def test_compile_has_summary_policy_and_style_guides(spec):
    text = spec.compile("self_harm")
    for c in spec.categories:
        assert c.name in text  # the summary names every category
    for cl in spec.category("self_harm").clauses:
        assert cl.id in text
    assert "SH." in text and "IB.1" not in text  # only this category's clauses in full
    for b in BEHAVIOURS:
        assert f"- {b}:" in text


def test_compile_respects_token_budget(spec):
    full = spec.compile("privacy")
    words = len(full.split())
    short = spec.compile("privacy", token_budget=words // 2)
    assert len(short.split()) <= words // 2
    for cl in spec.category("privacy").clauses:
        assert cl.id in short and cl.text.split()[0] in short  # clauses always survive
    with pytest.raises(ValueError, match="token_budget"):
        spec.compile("privacy", token_budget=5)


def test_compile_unknown_category(spec):
    with pytest.raises(KeyError, match="unknown category 'nope'"):
        spec.compile("nope")


def test_citations(spec):
    cot = "This is like IB.1 and maybe SH.2; also IB.1 again and ZZ.9."
    cites = spec.citations(cot, "illicit_behaviour")
    assert [(c.clause_id, c.exists, c.in_category) for c in cites] == [
        ("IB.1", True, True),
        ("SH.2", True, False),
        ("ZZ.9", False, False),
    ]
    assert spec.citations("no citations here", "privacy") == []


# ---- malformed specs: each names the file and the line ------------------------------------------


@pytest.fixture()
def spec_copy(tmp_path) -> Path:
    copy = tmp_path / "spec"
    shutil.copytree(default_spec_dir(), copy)
    return copy


def _line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def _expect(copy: Path, file: Path, line: int, problem: str, capsys):
    with pytest.raises(SpecError) as e:
        load_spec(copy)
    assert f"{file}:{line}:" in str(e.value) and problem in str(e.value), str(e.value)
    assert main(["spec", "check", str(copy)]) == 2
    err = capsys.readouterr().err
    assert f"{file}:{line}:" in err and problem in err


def test_yaml_syntax_error(spec_copy, capsys):
    f = spec_copy / "privacy.yaml"
    lines = f.read_text().splitlines()
    n = _line_of(f, "- id: PR.2")
    lines[n - 1] = lines[n - 1].replace("- id: PR.2", "- id: [PR.2")
    f.write_text("\n".join(lines) + "\n")
    with pytest.raises(SpecError, match=rf"{f}:\d+: YAML syntax error"):
        load_spec(spec_copy)
    assert main(["spec", "check", str(spec_copy)]) == 2
    assert "YAML syntax error" in capsys.readouterr().err


def test_duplicate_clause_id(spec_copy, capsys):
    f = spec_copy / "privacy.yaml"
    f.write_text(f.read_text().replace("- id: PR.2", "- id: PR.1", 1))
    second = [i for i, line in enumerate(f.read_text().splitlines(), 1) if "- id: PR.1" in line][1]
    _expect(spec_copy, f, second, "duplicate clause id 'PR.1'", capsys)


def test_unknown_behaviour(spec_copy, capsys):
    f = spec_copy / "self_harm.yaml"
    f.write_text(f.read_text().replace("behaviour: refuse", "behaviour: lecture", 1))
    _expect(spec_copy, f, _line_of(f, "behaviour: lecture"), "unknown behaviour 'lecture'", capsys)


def test_missing_field(spec_copy, capsys):
    f = spec_copy / "harassment_hate.yaml"
    text = f.read_text()
    lines = text.splitlines()
    n = _line_of(f, "- id: HH.2")
    # drop the clause's behaviour line
    b = next(i for i in range(n, len(lines)) if lines[i].strip().startswith("behaviour:"))
    del lines[b]
    f.write_text("\n".join(lines) + "\n")
    _expect(spec_copy, f, n, "missing required field 'behaviour'", capsys)


def test_dangling_reference(spec_copy, capsys):
    f = spec_copy / "privacy.yaml"
    f.write_text(f.read_text().replace("see: [HH.1]", "see: [XX.7]", 1))
    _expect(spec_copy, f, _line_of(f, "- id: PR.1"), "unknown clause 'XX.7'", capsys)


def test_duplicate_key(spec_copy, capsys):
    f = spec_copy / "privacy.yaml"
    f.write_text(f.read_text().replace("    see: [HH.1]\n", "    see: [HH.1]\n    see: [HH.2]\n", 1))
    _expect(spec_copy, f, _line_of(f, "see: [HH.2]"), "duplicate key 'see'", capsys)


def test_cli_check_and_show(capsys, spec):
    assert main(["spec", "check", "specs"]) == 0
    out = capsys.readouterr().out
    assert spec.content_hash in out
    assert main(["spec", "show", "privacy"]) == 0
    assert capsys.readouterr().out.strip() == spec.compile("privacy")
