"""Evaluation prompt sets: rayda's own prompt files and external benchmarks in their published form.

External files are read exactly as their authors publish them, so a user can point `rayda eval` at a
downloaded `xstest_prompts.csv` or `strongreject_dataset.csv` without converting anything. Every
mistake in a file fails at load time, before any model is started, with the file, the row and the
column in the message (DESIGN.md, contract 6).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from rayda.spec import BEHAVIOURS
from rayda.types import Prompt

FILE_TYPES = (".csv", ".tsv", ".jsonl", ".parquet")
REQUIRED = {
    "xstest": ("prompt", "type", "label"),
    "strongreject": ("category", "forbidden_prompt"),
    "rayda": ("messages", "category"),
}
"""Known prompt-set formats and the columns each cannot do without."""
FORMATS = tuple(REQUIRED)
XSTEST_LABELS = {"safe": "comply", "unsafe": "refuse"}
"""XSTest says whether a prompt is safe to answer; rayda labels the ideal behaviour instead."""


class PromptSetError(ValueError):
    """A prompt or completion file that cannot be used as it is; the message says where and why."""


@dataclass(frozen=True)
class EvalPrompt:
    """A prompt to evaluate on, with what the source file says beyond rayda's `Prompt`.

    `type` is XSTest's prompt type (kept apart because the report breaks results down by it); `extra`
    holds the file's other columns (XSTest focus and note, StrongREJECT source, ...) so that the
    graded output can carry them through.
    """

    prompt: Prompt
    type: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def id(self) -> str:
        return self.prompt.id

    @property
    def category(self) -> str:
        return self.prompt.category

    @property
    def label(self) -> str | None:
        return self.prompt.label


# ---- reading any table ----------------------------------------------------------------------
def _read_table(path: Path) -> tuple[list[str], list[tuple[str, dict]]]:
    """(columns, [(where, row)]): `where` names the row for error messages ("row 3, line 4")."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        return _read_csv(path, "\t" if suffix == ".tsv" else ",")
    if suffix == ".jsonl":
        return _read_jsonl(path)
    if suffix == ".parquet":
        import pyarrow.parquet as pq  # lazily: `import rayda` stays cheap

        table = pq.read_table(path)
        return list(table.column_names), [(f"row {n}", r) for n, r in enumerate(table.to_pylist(), 1)]
    raise PromptSetError(f"{path}: unknown file type {suffix!r}; known: {', '.join(FILE_TYPES)}")


def _read_csv(path: Path, delimiter: str = ","):
    rows = []
    # utf-8-sig: spreadsheet exports often start with a byte-order mark that would rename column one.
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        columns = list(reader.fieldnames or [])
        for n, row in enumerate(reader, 1):
            where = f"row {n} (line {reader.line_num})"
            if None in row:
                raise PromptSetError(f"{path}: {where}: more fields than the header's {len(columns)}")
            rows.append((where, {k: ("" if v is None else v) for k, v in row.items()}))
    return columns, rows


def _read_jsonl(path: Path):
    columns: dict[str, None] = {}  # ordered set: the union of keys, in order of first appearance
    rows = []
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"row {len(rows) + 1} (line {line_no})"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise PromptSetError(f"{path}: {where}: not valid JSON: {e.msg}") from None
            if not isinstance(row, dict):
                raise PromptSetError(f"{path}: {where}: expected a JSON object, got {type(row).__name__}")
            columns.update(dict.fromkeys(row))
            rows.append((where, row))
    return list(columns), rows


def _require_columns(path: Path, columns: list[str], needed, what: str) -> None:
    missing = [c for c in needed if c not in columns]
    if missing:
        raise PromptSetError(
            f"{path}: missing column {', '.join(repr(c) for c in missing)} needed for {what} "
            f"(columns found: {', '.join(columns) or 'none'})"
        )


def _text(path: Path, where: str, row: dict, column: str) -> str:
    value = row.get(column)
    if not isinstance(value, str) or not value.strip():
        raise PromptSetError(f"{path}: {where}: column {column!r} must be non-empty text, got {value!r}")
    return value


def _check_unique(path: Path, prompts: list[EvalPrompt], wheres: list[str]) -> list[EvalPrompt]:
    """Ids join graded samples back to prompts, so a repeated id would silently merge two prompts."""
    first: dict[str, str] = {}
    for p, where in zip(prompts, wheres):
        if p.id in first:
            raise PromptSetError(f"{path}: {where}: id {p.id!r} already used at {first[p.id]}")
        first[p.id] = where
    return prompts


def _id(row: dict, fallback: str) -> str:
    value = row.get("id")
    return fallback if value is None or value == "" else str(value)


def _user(text: str) -> tuple[dict, ...]:
    return ({"role": "user", "content": text},)


# ---- the formats ----------------------------------------------------------------------------
def _xstest(path: Path, columns, rows) -> list[EvalPrompt]:
    """Category = XSTest type (`homonyms`, `contrast_homonyms`, ...): its own breakdown, not a spec category."""
    _require_columns(path, columns, REQUIRED["xstest"], "XSTest")
    out = []
    for n, (where, row) in enumerate(rows, 1):
        label = str(row.get("label", "")).strip().lower()
        if label not in XSTEST_LABELS:
            raise PromptSetError(f"{path}: {where}: label must be 'safe' or 'unsafe', got {row.get('label')!r}")
        kind = _text(path, where, row, "type").strip()
        pid = _id(row, f"xstest-{n}")
        extra = {k: v for k, v in row.items() if k not in ("id", "prompt", "type", "label")}
        prompt = Prompt(pid, _user(_text(path, where, row, "prompt")), kind, XSTEST_LABELS[label])
        out.append(EvalPrompt(prompt, kind, extra))
    return _check_unique(path, out, [w for w, _ in rows])


def _strongreject(path: Path, columns, rows) -> list[EvalPrompt]:
    """Every StrongREJECT prompt is forbidden, so its ideal behaviour is a refusal."""
    _require_columns(path, columns, REQUIRED["strongreject"], "StrongREJECT")
    out = []
    for n, (where, row) in enumerate(rows, 1):
        category = _text(path, where, row, "category").strip()
        extra = {k: v for k, v in row.items() if k not in ("category", "forbidden_prompt")}
        text = _text(path, where, row, "forbidden_prompt")
        prompt = Prompt(f"strongreject-{n}", _user(text), category, "refuse")
        out.append(EvalPrompt(prompt, None, extra))
    return out


def _messages(path: Path, where: str, value) -> tuple[dict, ...]:
    if isinstance(value, str):  # a CSV cell holding JSON
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise PromptSetError(f"{path}: {where}: messages is text but not JSON") from None
    ok = isinstance(value, list) and value and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
        for m in value
    )
    if not ok:
        raise PromptSetError(f"{path}: {where}: messages must be a non-empty list of {{role, content}} objects")
    if value[-1]["role"] != "user":
        last = value[-1]["role"]
        raise PromptSetError(f"{path}: {where}: the last message must be from the user, not {last!r}")
    return tuple({"role": m["role"], "content": m["content"]} for m in value)


def _rayda(path: Path, columns, rows) -> list[EvalPrompt]:
    _require_columns(path, columns, REQUIRED["rayda"], "rayda prompts")
    out = []
    for n, (where, row) in enumerate(rows, 1):
        if "messages" not in row:
            raise PromptSetError(f"{path}: {where}: no messages")
        messages = _messages(path, where, row["messages"])
        category = _text(path, where, row, "category")
        label = row.get("label") or None
        if label is not None and label not in BEHAVIOURS:
            raise PromptSetError(f"{path}: {where}: label {label!r} is not one of {', '.join(BEHAVIOURS)}")
        pid = _id(row, f"{path.stem}-{n}")
        kind = row.get("type") or None
        extra = {k: v for k, v in row.items() if k not in ("id", "messages", "category", "label", "type")}
        out.append(EvalPrompt(Prompt(pid, messages, category, label), kind, extra))
    return _check_unique(path, out, [w for w, _ in rows])


_LOADERS = {"xstest": _xstest, "strongreject": _strongreject, "rayda": _rayda}


def _detect(path: Path, columns: list[str]) -> str:
    """File name first (a published file missing a column should say which), then the columns."""
    name = path.name.lower()
    for fmt in ("xstest", "strongreject"):
        if fmt in name:
            return fmt
    if "forbidden_prompt" in columns:
        return "strongreject"
    if "messages" in columns:
        return "rayda"
    if "prompt" in columns and "type" in columns:
        return "xstest"
    known = "; ".join(f"{f} (columns {', '.join(c)})" for f, c in REQUIRED.items())
    raise PromptSetError(
        f"{path}: cannot tell the prompt-set format from columns {', '.join(columns) or 'none'}; "
        f"known formats: {known}. Pass format= to choose one."
    )


# ---- public ---------------------------------------------------------------------------------
def load_prompt_set(path_or_name: str | Path, format: str | None = None) -> list[EvalPrompt]:
    """Load an evaluation prompt set; `format` is one of FORMATS, or None to detect it."""
    if format is not None and format not in _LOADERS:
        raise PromptSetError(f"unknown prompt-set format {format!r}; known: {', '.join(FORMATS)}")
    path = Path(path_or_name)
    columns, rows = _read_table(path)
    return _LOADERS[format or _detect(path, columns)](path, columns, rows)


def load_xstest(path: str | Path) -> list[EvalPrompt]:
    return load_prompt_set(path, "xstest")


def load_strongreject(path: str | Path) -> list[EvalPrompt]:
    return load_prompt_set(path, "strongreject")


def load_rayda(path: str | Path) -> list[EvalPrompt]:
    return load_prompt_set(path, "rayda")


def load_completions(path: str | Path) -> list[dict]:
    """Rows of completions made elsewhere, every input column kept so the graded output can echo them.

    `prompt` must be non-empty text; `completion` must be text but may be empty (a model that said
    nothing is a result to grade, not a broken file).
    """
    path = Path(path)
    columns, rows = _read_table(path)
    _require_columns(path, columns, ("prompt", "completion"), "completions")
    out = []
    for where, row in rows:
        _text(path, where, row, "prompt")
        if not isinstance(row.get("completion"), str):
            got = row.get("completion")
            raise PromptSetError(f"{path}: {where}: column 'completion' must be text, got {got!r}")
        out.append(dict(row))
    return out
