"""Reading prompt sets into validated `Prompt`s.

Sources (`prompts.source` in the recipe):
    tinyworld:train | heldout | rl | rl_cue | rl_wide | train_cue | train_cue1 | train_mix | valid
                                          the tiny world's labelled prompts, made from the spec's
                                          clause examples (no model is built to read them; see
                                          `rayda.tinyworld.prompts.split_rows`)
    path/to/file.jsonl | .json | .parquet one row per prompt
    path/to/folder                        a `datasets.save_to_disk` folder, or a folder of .parquet/.jsonl files
    hf:NAME[:SPLIT] or NAME[:SPLIT]       a Hugging Face dataset by name (default split: train)

A row has `messages` (a list of {role, content} ending on a user turn) or a plain `prompt` string,
a `category` the spec knows, an optional `label` (comply / refuse / safe_complete), an optional
`subject` (what the user asks for, words of the last user turn: the rubric judge then requires the
reasoning to restate it) and an optional `id` (else `<source name>-<row number>`, stable as long as
the file is). Every problem is reported
with the source and the row (1-based) before any actor starts (DESIGN.md, contract 6).
"""

from __future__ import annotations

import json
from pathlib import Path

from rayda.spec import BEHAVIOURS
from rayda.types import Prompt

ROLES = ("system", "user", "assistant")


class PromptError(ValueError):
    """A prompt set cannot be used; the message names the source and the row."""


def read_rows(source: str, spec=None) -> tuple[str, list[dict]]:
    """(a name for messages and ids, raw rows) of a prompt source."""
    if source.startswith("tinyworld:"):
        from rayda.tinyworld.prompts import PROMPT_SPLITS, split_rows

        split = source.split(":", 1)[1]
        if split not in PROMPT_SPLITS:
            raise PromptError(f"prompts.source {source!r}: the tiny world has splits {', '.join(map(repr, PROMPT_SPLITS))}")
        if spec is None:
            raise PromptError(f"prompts.source {source!r} is made from a spec, and none was given")

        return source, split_rows(spec, split)
    p = Path(source).expanduser()
    if p.is_file():
        return str(p), _read_file(p)
    if p.is_dir():
        return str(p), _read_dir(p)
    if source.startswith(("/", "./", "../", "~")) or p.suffix in (".jsonl", ".json", ".parquet"):
        raise PromptError(f"prompt file {source!r} does not exist")
    return source, _read_hub(source.removeprefix("hf:"))


def _read_file(path: Path) -> list[dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    if path.suffix in (".jsonl", ".json"):
        text = path.read_text()
        if path.suffix == ".json" and text.lstrip().startswith("["):
            return json.loads(text)
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise PromptError(f"{path}: row {n}: not valid JSON ({e.msg})") from None
        return rows
    raise PromptError(f"{path}: unsupported prompt file type {path.suffix!r} (use .jsonl, .json or .parquet)")


def _read_dir(path: Path) -> list[dict]:
    if (path / "dataset_info.json").exists() or (path / "state.json").exists() or (path / "dataset_dict.json").exists():
        import datasets

        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise PromptError(f"{path}: dataset has splits {list(ds)}, none named 'train'")
            ds = ds["train"]
        return ds.to_list()
    files = sorted(f for f in path.iterdir() if f.suffix in (".parquet", ".jsonl"))
    if not files:
        raise PromptError(f"{path}: folder holds no .parquet or .jsonl files and is not a saved dataset")
    return [row for f in files for row in _read_file(f)]


def _read_hub(name: str) -> list[dict]:
    import datasets

    repo, _, split = name.partition(":")
    try:
        return datasets.load_dataset(repo, split=split or "train").to_list()
    except Exception as e:  # noqa: BLE001 - any loader failure means the source is unusable
        raise PromptError(f"prompt dataset {name!r} could not be loaded: {type(e).__name__}: {e}") from None


def row_messages(row: dict, at: str) -> list[dict]:
    """A row's turns (`messages`, or a plain `prompt` string), checked; PromptError names `at`."""
    messages = row.get("messages")
    if messages is None and isinstance(row.get("prompt"), str):
        messages = [{"role": "user", "content": row["prompt"]}]
    if not isinstance(messages, (list, tuple)) or not messages:
        raise PromptError(f"{at}: no messages (need a non-empty 'messages' list or a 'prompt' string)")
    clean = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ROLES or not isinstance(m.get("content"), str):
            raise PromptError(f"{at}: message {i} must be {{role: system|user|assistant, content: text}}, got {m!r:.80}")
        clean.append({"role": m["role"], "content": m["content"]})
    if clean[-1]["role"] != "user":
        raise PromptError(f"{at}: the last turn is {clean[-1]['role']!r}; a prompt must end on a user turn")
    return clean


def to_prompt(row: dict, n: int, where: str, spec, default_id: str) -> Prompt:
    """Validate one raw row (1-based row number `n`) into a Prompt; PromptError names source and row."""
    pid = row.get("id", row.get("prompt_id"))
    pid = default_id if pid is None else str(pid)
    at = f"{where}: row {n} (id {pid})"
    clean = row_messages(row, at)
    category = row.get("category")
    if category not in spec.category_ids:
        raise PromptError(f"{at}: unknown category {category!r}; the spec has {', '.join(spec.category_ids)}")
    label = row.get("label")
    if label is not None and label not in BEHAVIOURS:
        raise PromptError(f"{at}: unknown label {label!r}; expected one of {', '.join(BEHAVIOURS)}")
    subject = row.get("subject")
    if subject is not None and (not isinstance(subject, str) or not subject.strip()):
        raise PromptError(f"{at}: 'subject' must be non-empty text (what the user asks for), got {subject!r:.80}")
    if subject is not None and subject.strip().lower() not in clean[-1]["content"].lower():
        raise PromptError(f"{at}: subject {subject!r:.80} is not in the last user turn")
    return Prompt(pid, tuple(clean), category, label, subject.strip() if subject is not None else None)


def load_prompts(
    source: str,
    spec,
    *,
    limit: int | None = None,
    require_label: bool = False,
) -> list[Prompt]:
    """The first `limit` rows of `source`, validated against `spec`; raises PromptError naming the row."""
    where, rows = read_rows(source, spec)
    if limit is not None:
        rows = rows[:limit]
    stem = Path(where).stem or "prompt"
    prompts, seen = [], {}
    for n, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise PromptError(f"{where}: row {n}: expected a mapping, got {type(row).__name__}")
        p = to_prompt(row, n, where, spec, f"{stem}-{n - 1}")
        if require_label and p.label is None:
            raise PromptError(f"{where}: row {n} (id {p.id}): no label, and the judge needs one (judge.kind=rubric)")
        if p.id in seen:
            raise PromptError(f"{where}: row {n}: id {p.id!r} repeats row {seen[p.id]}")
        seen[p.id] = n
        prompts.append(p)
    if not prompts:
        raise PromptError(f"{where}: no prompts")
    return prompts
