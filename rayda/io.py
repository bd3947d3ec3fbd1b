"""Atomic outputs and stage markers: write to a temporary name beside the target, then rename.

A killed run therefore leaves either the old file, the new file, or a stray `.tmp-*` that the next
run ignores: never a half-written output under the real name.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

SUCCESS = "_SUCCESS"


@contextlib.contextmanager
def atomic_path(target: Path, suffix: str = ""):
    """Yield a temporary path next to `target`; on success rename it over `target` (file or folder)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name}-", dir=target.parent)) / (target.name + suffix)
    try:
        yield tmp
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def atomic_write_text(target: Path, text: str) -> None:
    with atomic_path(Path(target)) as tmp:
        tmp.write_text(text)


def atomic_write_json(target: Path, obj) -> None:
    atomic_write_text(target, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def pin_settings(path: Path, settings: dict, what: str = "parts") -> None:
    """Write `settings` to `path` the first time; later, refuse to go on if they differ (a resumed
    run must not mix outputs of two configurations). The error names the keys that differ."""
    path = Path(path)
    if path.exists():
        old = json.loads(path.read_text())
        diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if diff:
            raise ValueError(f"{path.parent} holds {what} of a run with different settings ({', '.join(diff)}); "
                             "use another output folder or delete that one")
    else:
        atomic_write_json(path, settings)


def mark_success(folder: Path, info: dict | None = None) -> None:
    atomic_write_json(Path(folder) / SUCCESS, info or {})


def is_done(folder: Path) -> bool:
    return (Path(folder) / SUCCESS).exists()


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not valid JSON: {e.msg}") from None
    return rows


def write_jsonl(target: Path, rows) -> None:
    atomic_write_text(Path(target), "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


def prune_steps(state_dir: Path, keep: int) -> None:
    """Remove all but the newest `keep` checkpoints (`stepN` folders) of a stage's state folder; 0 keeps all."""
    tags = sorted((d for d in Path(state_dir).glob("step*") if d.is_dir()), key=lambda d: int(d.name[4:]))
    for old in tags[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
