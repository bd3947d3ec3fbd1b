"""`rayda prompts import`: the public safety prompt sets, read from their published files, as prompt rows.

    rayda prompts import xstest_prompts.csv strongreject_dataset.csv train.tsv --out prompts.jsonl

| set | published file(s) | what the set says about a prompt |
|---|---|---|
| `xstest` | `xstest_prompts.csv` | safe / unsafe, and the prompt type |
| `strongreject` | `strongreject_dataset.csv` | every prompt forbidden; category, source |
| `wildjailbreak` | `train.tsv`, `eval.tsv` | `data_type`: vanilla / adversarial x harmful / benign |
| `orbench` | `or-bench-80k.csv`, `or-bench-hard-1k.csv`, `or-bench-toxic.csv` | 80k and hard-1k: benign but seemingly toxic; toxic: harmful |
| `harmbench` | `harmbench_behaviors_text_all.csv` (any behaviours CSV) | every behaviour harmful; semantic and functional category |
| `jailbreakbench` | `harmful-behaviors.csv`, `benign-behaviors.csv` | harmful or benign by file; category, source |
| `text` | any CSV/TSV/JSONL/Parquet file, a saved dataset folder, or `hf:NAME[:SPLIT]`, with `--column` | nothing |

A row: `{"id", "messages": [{"role": "user", "content"}], "source", "source_file", "source_row",
"harmful", "adversarial", "source_category", "source_labels", "split"}`. It has no `category` and no
`label` on purpose: those are the spec's, and `rayda label` assigns them; `harmful` and `adversarial`
are the set's own metadata (None where the set does not say).

Rows are deduplicated on their normalised text (case, spacing and punctuation ignored): the first
occurrence is kept. Near-duplicates (word-trigram Jaccard >= `NEAR_DUPLICATE`, found by MinHash with
banding, then checked exactly) form one group, and a WildJailbreak adversarial prompt joins the group
of the vanilla request it rewrites; the split is drawn per group from a hash of the group and the
seed, so it does not depend on file order and no group has members on both sides.

Every problem names the file and the row (`row 3 (line 4)`), before anything is written.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from rayda.evaluation import prompt_sets
from rayda.evaluation.prompt_sets import PromptSetError, _read_table, _require_columns, _text

SETS = ("xstest", "strongreject", "wildjailbreak", "orbench", "harmbench", "jailbreakbench", "text")
NEAR_DUPLICATE = 0.5
"""Word-trigram Jaccard similarity at or above which two prompts are near-duplicates (one word changed in
a 15-word request: 0.63; XSTest's "kill a Python process" / "kill a person" pair: 0.43)."""
NUM_HASHES, BANDS = 32, 16
"""MinHash signature length and LSH bands (2 rows each: a pair at Jaccard 0.5 shares a band with p = 0.99)."""


@dataclass
class Imported:
    """One prompt read from a published file, before deduplication and the split."""

    id: str
    text: str
    source: str
    source_file: str
    source_row: str
    harmful: bool | None = None
    adversarial: bool | None = None
    source_category: str | None = None
    source_labels: dict = field(default_factory=dict)
    links: tuple[str, ...] = ()
    """Other texts this prompt must share a split with (the vanilla request of an adversarial prompt)."""

    def row(self, split: str) -> dict:
        return {"id": self.id, "messages": [{"role": "user", "content": self.text}], "source": self.source,
                "source_file": self.source_file, "source_row": self.source_row, "harmful": self.harmful,
                "adversarial": self.adversarial, "source_category": self.source_category,
                "source_labels": self.source_labels, "split": split}


# ---- the readers: one per published format -------------------------------------------------------

def _xstest(path: Path, columns, rows) -> list[Imported]:
    """Read (and checked) as `rayda eval` reads it; an unsafe prompt is harmful."""
    out = []
    for p, (where, _) in zip(prompt_sets._xstest(path, columns, rows), rows):
        pid = p.id if p.id.startswith("xstest-") else f"xstest-{p.id}"
        labels = {"type": p.type, "label": "unsafe" if p.label == "refuse" else "safe",
                  **{k: v for k, v in p.extra.items() if v not in (None, "")}}
        out.append(Imported(pid, p.prompt.messages[-1]["content"], "xstest", str(path), where, harmful=p.label == "refuse",
                            adversarial=False, source_category=p.type, source_labels=labels))
    return out


def _strongreject(path: Path, columns, rows) -> list[Imported]:
    """Read (and checked) as `rayda eval` reads it; every prompt is forbidden."""
    return [Imported(p.id, p.prompt.messages[-1]["content"], "strongreject", str(path), where, harmful=True,
                     source_category=p.category, source_labels={k: v for k, v in p.extra.items() if v})
            for p, (where, _) in zip(prompt_sets._strongreject(path, columns, rows), rows)]


WILDJAILBREAK_TYPES = ("vanilla_harmful", "vanilla_benign", "adversarial_harmful", "adversarial_benign")


def _wildjailbreak(path: Path, columns, rows) -> list[Imported]:
    """train.tsv (vanilla, adversarial, completion, data_type) and eval.tsv (adversarial, label, data_type):
    an adversarial prompt is the `adversarial` column, a vanilla one the `vanilla` column."""
    _require_columns(path, columns, ("data_type",), "WildJailbreak")
    if "adversarial" not in columns and "vanilla" not in columns:
        raise PromptSetError(f"{path}: WildJailbreak needs a 'vanilla' or 'adversarial' column (columns found: {', '.join(columns)})")
    out = []
    for n, (where, row) in enumerate(rows, 1):
        kind = str(row.get("data_type", "")).strip()
        if kind not in WILDJAILBREAK_TYPES:
            raise PromptSetError(f"{path}: {where}: data_type must be one of {', '.join(WILDJAILBREAK_TYPES)}, got {kind!r}")
        adversarial = kind.startswith("adversarial")
        text = _text(path, where, row, "adversarial" if adversarial else "vanilla")
        vanilla = row.get("vanilla") if adversarial and isinstance(row.get("vanilla"), str) and row["vanilla"].strip() else None
        labels = {"data_type": kind, **({"vanilla": vanilla} if vanilla else {})}
        out.append(Imported(f"wildjailbreak-{path.stem}-{n}", text, "wildjailbreak", str(path), where,
                            harmful=kind.endswith("harmful"), adversarial=adversarial, source_labels=labels,
                            links=(vanilla,) if vanilla else ()))
    return out


ORBENCH_SUBSETS = {"toxic": True, "hard-1k": False, "hard": False, "80k": False}
"""OR-Bench file name part -> harmful: the 80k and hard-1k prompts are benign but look toxic."""


def _orbench(path: Path, columns, rows) -> list[Imported]:
    _require_columns(path, columns, ("prompt", "category"), "OR-Bench")
    subset = next((s for s in ORBENCH_SUBSETS if s in path.name.lower()), None)
    if subset is None:
        raise PromptSetError(f"{path}: cannot tell the OR-Bench subset from the file name; keep the published name "
                           "(or-bench-80k.csv, or-bench-hard-1k.csv or or-bench-toxic.csv)")
    name = "hard-1k" if subset == "hard" else subset
    return [Imported(f"orbench-{name}-{n}", _text(path, where, row, "prompt"), "orbench", str(path), where,
                     harmful=ORBENCH_SUBSETS[subset], adversarial=False,
                     source_category=_text(path, where, row, "category").strip(), source_labels={"subset": name})
            for n, (where, row) in enumerate(rows, 1)]


def _harmbench(path: Path, columns, rows) -> list[Imported]:
    """A contextual behaviour is asked with its context first, as HarmBench asks it."""
    _require_columns(path, columns, ("Behavior", "BehaviorID"), "HarmBench")
    out = []
    for where, row in rows:
        behaviour = _text(path, where, row, "Behavior")
        context = row.get("ContextString") or ""
        text = f"{context.strip()}\n\n---\n\n{behaviour}" if context.strip() else behaviour
        labels = {k: row[k] for k in ("FunctionalCategory", "SemanticCategory", "Tags") if row.get(k)}
        out.append(Imported(f"harmbench-{_text(path, where, row, 'BehaviorID').strip()}", text, "harmbench", str(path), where,
                            harmful=True, adversarial=False, source_category=row.get("SemanticCategory") or None,
                            source_labels=labels))
    return out


def _jailbreakbench(path: Path, columns, rows) -> list[Imported]:
    _require_columns(path, columns, ("Goal", "Category"), "JailbreakBench")
    name = path.name.lower()
    kind = "benign" if "benign" in name else "harmful" if "harmful" in name else None
    if kind is None:
        raise PromptSetError(f"{path}: cannot tell harmful from benign behaviours by the file name; keep the published "
                           "name (harmful-behaviors.csv or benign-behaviors.csv)")
    out = []
    for n, (where, row) in enumerate(rows, 1):
        index = str(row.get("Index") or n).strip()
        labels = {k: row[k] for k in ("Behavior", "Source") if row.get(k)}
        out.append(Imported(f"jailbreakbench-{kind}-{index}", _text(path, where, row, "Goal"), "jailbreakbench", str(path),
                            where, harmful=kind == "harmful", adversarial=False,
                            source_category=_text(path, where, row, "Category").strip(), source_labels=labels))
    return out


def _text_column(path: Path, columns, rows, column: str, name: str) -> list[Imported]:
    _require_columns(path, columns, (column,), f"--column {column}")
    return [Imported(f"{name}-{n}", _text(path, where, row, column), name, str(path), where)
            for n, (where, row) in enumerate(rows, 1)]


_READERS = {"xstest": _xstest, "strongreject": _strongreject, "wildjailbreak": _wildjailbreak, "orbench": _orbench,
            "harmbench": _harmbench, "jailbreakbench": _jailbreakbench}


def detect(path: Path, columns: list[str]) -> str:
    """The set a published file belongs to: its name first, then its columns."""
    name = path.name.lower()
    by_name = (("xstest", "xstest"), ("strongreject", "strongreject"), ("wildjailbreak", "wildjailbreak"),
               ("or-bench", "orbench"), ("orbench", "orbench"), ("harmbench", "harmbench"),
               ("harmful-behaviors", "jailbreakbench"), ("benign-behaviors", "jailbreakbench"))
    for part, fmt in by_name:
        if part in name:
            return fmt
    cols = set(columns)
    if "forbidden_prompt" in cols:
        return "strongreject"
    if "data_type" in cols and cols & {"vanilla", "adversarial"}:
        return "wildjailbreak"
    if {"Behavior", "BehaviorID"} <= cols:
        return "harmbench"
    if {"prompt", "type", "label"} <= cols:
        return "xstest"
    raise PromptSetError(f"{path}: cannot tell which prompt set this is (columns: {', '.join(columns) or 'none'}); "
                       f"pass --format ({', '.join(SETS)}), or --column NAME to import one text column")


def read_source(source: str, format: str | None = None, column: str | None = None) -> list[Imported]:
    """The prompts of one published file (or, with `column`, of any table or dataset)."""
    if format is not None and format not in SETS:
        raise PromptSetError(f"unknown prompt set {format!r}; known: {', '.join(SETS)}")
    if format == "text" and column is None:
        raise PromptSetError("--format text needs --column NAME: the column that holds the prompt text")
    path = Path(source).expanduser()
    if column is not None and (format in (None, "text")) and not path.is_file():
        from rayda.data.prompts import read_rows  # a saved dataset folder, or hf:NAME[:SPLIT]

        where, raw = read_rows(source)
        named = [(f"row {n}", r) for n, r in enumerate(raw, 1)]
        return _text_column(Path(where), sorted({k for r in raw for k in r}), named, column, _stem(where))
    columns, rows = _read_table(path)
    if column is not None and format in (None, "text"):
        return _text_column(path, columns, rows, column, _stem(str(path)))
    return _READERS[format or detect(path, columns)](path, columns, rows)


def _stem(where: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", Path(where.removeprefix("hf:")).stem.lower()).strip("-") or "prompts"


# ---- deduplication, near-duplicate groups, the split ---------------------------------------------

def normalise(text: str) -> str:
    """Lowercase words only: case, spacing and punctuation do not make two prompts different."""
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def shingles(norm: str) -> set[str]:
    """Word trigrams (the words themselves for a text of fewer than three words)."""
    words = norm.split()
    return {" ".join(words[i:i + 3]) for i in range(len(words) - 2)} or set(words) or {""}


def _stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


class DisjointSets:
    """Union-find over 0..n-1 (path halving): `join(i, j)`, then `find(i)` names i's set."""

    def __init__(self, n: int):
        self.parent = list(range(n))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def join(self, i: int, j: int) -> None:
        a, b = self.find(i), self.find(j)
        if a != b:
            self.parent[max(a, b)] = min(a, b)


def near_duplicate_groups(texts: list[str], threshold: float = NEAR_DUPLICATE) -> list[int]:
    """For each text, its group (the index of one member; equal for every member). Candidates come from MinHash LSH; a pair
    is joined only when its exact shingle Jaccard is >= threshold (each bucket is checked against its
    first member, so the work stays linear in the number of texts)."""
    import numpy as np

    sets = [shingles(normalise(t)) for t in texts]
    prime = (1 << 61) - 1
    rng = np.random.default_rng(0)
    a = rng.integers(1, prime, NUM_HASHES, dtype=np.uint64)
    b = rng.integers(0, prime, NUM_HASHES, dtype=np.uint64)
    sets_of = DisjointSets(len(texts))
    buckets: dict[tuple, int] = {}
    rows = NUM_HASHES // BANDS
    for i, s in enumerate(sets):
        x = np.array([_stable_hash(g) % prime for g in s], dtype=np.uint64)
        # (a * x + b) mod p in 64 bits (wraps; still a fixed hash family, which is all MinHash needs)
        sig = ((a[:, None] * x[None, :] + b[:, None]) % np.uint64(prime)).min(axis=1)
        for band in range(BANDS):
            key = (band, *sig[band * rows:(band + 1) * rows].tolist())
            j = buckets.setdefault(key, i)
            if j != i and sets_of.find(i) != sets_of.find(j) and len(s & sets[j]) / len(s | sets[j]) >= threshold:
                sets_of.join(i, j)
    return [sets_of.find(i) for i in range(len(texts))]


def split_of(key: str, heldout: float, seed: int) -> str:
    u = _stable_hash(f"{seed}:{key}") / 2**64
    return "heldout" if u < heldout else "train"


def build_rows(prompts: list[Imported], heldout: float = 0.1, seed: int = 0) -> tuple[list[dict], dict]:
    """(rows, report): deduplicated rows with their split, and what happened to the input."""
    if not 0 <= heldout < 1:
        raise PromptSetError(f"--heldout must be in [0, 1), got {heldout}")
    kept, seen_texts, dropped = [], set(), 0
    for p in prompts:
        norm = normalise(p.text)
        if norm in seen_texts:
            dropped += 1
            continue
        seen_texts.add(norm)
        kept.append(p)
    ids = [p.id for p in kept]
    if len(set(ids)) != len(ids):
        seen: dict[str, Imported] = {}
        for p in kept:
            if p.id in seen:
                raise PromptSetError(f"{p.source_file}: {p.source_row}: id {p.id!r} already used by "
                                   f"{seen[p.id].source_file}: {seen[p.id].source_row}; import the two files apart")
            seen[p.id] = p
    # Links (a vanilla request) take part in the grouping as extra texts, then are dropped again.
    texts = [p.text for p in kept] + [t for p in kept for t in p.links]
    owners = list(range(len(kept))) + [i for i, p in enumerate(kept) for _ in p.links]
    groups = near_duplicate_groups(texts)
    owner_sets, first_owner = DisjointSets(len(kept)), {}
    for owner, g in zip(owners, groups):
        owner_sets.join(owner, first_owner.setdefault(g, owner))
    roots = [owner_sets.find(i) for i in range(len(kept))]
    # A group's key: the smallest normalised text among its members, so the split ignores file order.
    key: dict[int, str] = {}
    for i, r in enumerate(roots):
        norm = normalise(kept[i].text)
        key[r] = min(key.get(r, norm), norm)
    rows = [p.row(split_of(key[r], heldout, seed)) for p, r in zip(kept, roots)]
    sources = sorted({p.source for p in kept})
    report = {
        "read": len(prompts), "kept": len(rows), "exact_duplicates_dropped": dropped,
        "near_duplicate_groups": sum(1 for n in Counter(roots).values() if n > 1),
        "split": {s: sum(r["split"] == s for r in rows) for s in ("train", "heldout")},
        "by_source": {s: {"rows": sum(r["source"] == s for r in rows),
                          "harmful": sum(r["source"] == s and r["harmful"] is True for r in rows),
                          "benign": sum(r["source"] == s and r["harmful"] is False for r in rows),
                          "adversarial": sum(r["source"] == s and r["adversarial"] is True for r in rows)}
                      for s in sources},
        "heldout": heldout, "seed": seed,
    }
    return rows, report


def import_prompts(sources: list[str], out: Path, *, format: str | None = None, column: str | None = None,
                   heldout: float = 0.1, seed: int = 0) -> dict:
    """Read every source, deduplicate, split, and write `out` (.jsonl or .parquet) atomically; the report."""
    from rayda import io

    out = Path(out)
    if out.suffix not in (".jsonl", ".parquet"):
        raise PromptSetError(f"--out {out}: write a .jsonl or .parquet file")
    prompts = [p for s in sources for p in read_source(s, format, column)]
    if not prompts:
        raise PromptSetError(f"{', '.join(sources)}: no prompts")
    rows, report = build_rows(prompts, heldout, seed)
    if out.suffix == ".jsonl":
        io.write_jsonl(out, rows)
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        with io.atomic_path(out) as tmp:
            pq.write_table(pa.Table.from_pylist(rows), tmp)
    return {"out": str(out), **report}
