"""The safety specification: loading, validation, content hash, and the `spec(category)` compiler.

A spec is a folder of YAML files (see `specs/` in the repository): `index.yaml` names the spec, lists
the category files in order and holds the style guides; each category file holds a definition and
clauses with stable ids (`IB.3`), each tagged with the ideal behaviour.

Every validation error names the file and the line, because a spec is written by people.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import yaml

from rayda import shipped_path

BEHAVIOURS = ("comply", "refuse", "safe_complete")
CLAUSE_ID = re.compile(r"^[A-Z]{2,3}\.\d+$")
# A citation in free text: two or three capitals, a dot, a number ("IB.3", "SH.12").
CITATION = re.compile(r"\b([A-Z]{2,3}\.\d+)\b")


class SpecError(ValueError):
    """A spec file is malformed. The message names the file and the line."""


@dataclass(frozen=True)
class Clause:
    id: str
    behaviour: str
    title: str
    text: str
    examples: tuple[str, ...] = ()
    see: tuple[str, ...] = ()


@dataclass(frozen=True)
class Category:
    id: str
    prefix: str
    name: str
    definition: str
    clauses: tuple[Clause, ...]


@dataclass(frozen=True)
class StyleGuide:
    behaviour: str
    summary: str
    rules: tuple[str, ...]
    markers: tuple[str, ...]
    example: str


@dataclass(frozen=True)
class Citation:
    clause_id: str
    exists: bool
    in_category: bool


@dataclass(frozen=True)
class Spec:
    id: str
    version: str
    title: str
    description: str
    categories: tuple[Category, ...]
    style_guides: tuple[StyleGuide, ...]

    # ---- lookups -----------------------------------------------------------------------------
    @property
    def category_ids(self) -> tuple[str, ...]:
        return tuple(c.id for c in self.categories)

    def category(self, category_id: str) -> Category:
        for c in self.categories:
            if c.id == category_id:
                return c
        raise KeyError(f"unknown category {category_id!r}; known: {', '.join(self.category_ids)}")

    def clauses(self) -> dict[str, tuple[Category, Clause]]:
        return {cl.id: (c, cl) for c in self.categories for cl in c.clauses}

    def style_guide(self, behaviour: str) -> StyleGuide:
        for g in self.style_guides:
            if g.behaviour == behaviour:
                return g
        raise KeyError(f"no style guide for {behaviour!r}")

    @property
    def content_hash(self) -> str:
        """sha256 of the canonical JSON of the parsed spec: formatting and comments do not count."""
        blob = json.dumps(asdict(self), sort_keys=True, ensure_ascii=False).encode()
        return hashlib.sha256(blob).hexdigest()

    # ---- citations ---------------------------------------------------------------------------
    def citations(self, text: str, category_id: str) -> list[Citation]:
        """The clause ids cited in `text`, in order of first mention, checked against the spec."""
        known = self.clauses()
        out, seen = [], set()
        for cid in CITATION.findall(text):
            if cid in seen:
                continue
            seen.add(cid)
            hit = known.get(cid)
            out.append(Citation(cid, hit is not None, hit is not None and hit[0].id == category_id))
        return out

    # ---- the compiler ------------------------------------------------------------------------
    def compile(
        self,
        category_id: str,
        token_budget: int | None = None,
        count_tokens: Callable[[str], int] | None = None,
    ) -> str:
        """`spec(category)`: a summary of every category, the full policy of one, the style guides.

        With a token budget, parts are dropped from the least to the most essential until the text
        fits: rules and examples of the style guides, then the other categories' summary, then the
        clause titles, then the category's definition. The clause ids, behaviours and texts of the category always stay; if they
        alone exceed the budget that is an error, because a spec that cannot be shown is useless.
        """
        count = count_tokens or (lambda s: len(s.split()))
        target = self.category(category_id)
        levels = [
            dict(summary=True, guide_detail=True, titles=True, definition=True),
            dict(summary=True, guide_detail=False, titles=True, definition=True),
            dict(summary=False, guide_detail=False, titles=True, definition=True),
            dict(summary=False, guide_detail=False, titles=False, definition=True),
            dict(summary=False, guide_detail=False, titles=False, definition=False),
        ]
        for level in levels:
            text = self._render(target, **level)
            if token_budget is None or count(text) <= token_budget:
                return text
        raise ValueError(
            f"spec({category_id}) needs {count(text)} tokens even in its shortest form; "
            f"token_budget is {token_budget}"
        )

    def _render(self, target: Category, summary: bool, guide_detail: bool, titles: bool, definition: bool) -> str:
        lines = [f"# {self.title} (v{self.version})"]
        if summary:
            lines.append("## Categories")
            lines += [f"- {c.name} ({c.prefix}): {first_sentence(c.definition)}" for c in self.categories]
        lines.append(f"## Policy: {target.name} ({target.prefix})")
        if definition:
            lines.append(target.definition.strip())
        for cl in target.clauses:
            head = f"{cl.id} [{cl.behaviour}]" + (f" {cl.title}:" if titles else ":")
            lines.append(f"- {head} {cl.text.strip()}")
        lines.append("## Style guides")
        for g in self.style_guides:
            lines.append(f"- {g.behaviour}: {g.summary.strip()}")
            if guide_detail:
                lines += [f"  - {r}" for r in g.rules]
                lines.append(f"  - example: {g.example.strip()}")
        return "\n".join(lines)


def first_sentence(text: str) -> str:
    text = " ".join(text.split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


# ---- loading and validation ----------------------------------------------------------------------


class _LineLoader(yaml.SafeLoader):
    """A SafeLoader that remembers, for every mapping, the line each key was written on."""


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> dict:
    seen: dict = {}
    for key, _ in node.value:
        if isinstance(key, yaml.ScalarNode):
            if key.value in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key.value!r} (first on line {seen[key.value]})", key.start_mark
                )
            seen[key.value] = key.start_mark.line + 1
    mapping = loader.construct_mapping(node, deep=True)
    lines = {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
    mapping["__line__"] = node.start_mark.line + 1
    mapping["__lines__"] = lines
    return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.load(path.read_text(), Loader=_LineLoader)
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line = mark.line + 1 if mark else "?"
        kind = "YAML error" if isinstance(e, yaml.constructor.ConstructorError) else "YAML syntax error"
        raise SpecError(f"{path}:{line}: {kind}: {e.problem or e}") from None
    except OSError as e:
        raise SpecError(f"{path}: cannot read: {e.strerror}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{path}:1: expected a mapping at the top level")
    return data


class _Fields:
    """Typed access to one YAML mapping that reports `file:line: problem` on a bad or missing key."""

    def __init__(self, path: Path, data: dict, where: str):
        self.path, self.data, self.where = path, data, where

    def line(self, key: str | None = None) -> int:
        return self.data.get("__lines__", {}).get(key, self.data.get("__line__", 1))

    def fail(self, msg: str, key: str | None = None) -> SpecError:
        return SpecError(f"{self.path}:{self.line(key)}: {self.where}: {msg}")

    def str(self, key: str, default: str | None = None) -> str:
        if key not in self.data:
            if default is not None:
                return default
            raise self.fail(f"missing required field {key!r}")
        value = self.data[key]
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise self.fail(f"field {key!r} must be text", key)
        return str(value).strip()

    def list(self, key: str, required: bool = False) -> list:
        if key not in self.data:
            if required:
                raise self.fail(f"missing required field {key!r}")
            return []
        value = self.data[key]
        if not isinstance(value, list):
            raise self.fail(f"field {key!r} must be a list", key)
        return value

    def check_unknown(self, allowed: set[str]) -> None:
        for key in self.data:
            if key not in allowed and not key.startswith("__"):
                raise self.fail(f"unknown field {key!r} (allowed: {', '.join(sorted(allowed))})", key)


def _load_category(path: Path) -> tuple[Category, dict[str, tuple[Path, int]]]:
    f = _Fields(path, _read_yaml(path), "category")
    f.check_unknown({"id", "prefix", "name", "definition", "clauses"})
    prefix = f.str("prefix")
    if not re.fullmatch(r"[A-Z]{2,3}", prefix):
        raise f.fail(f"prefix {prefix!r} must be 2-3 capital letters", "prefix")
    clauses, where = [], {}
    for raw in f.list("clauses", required=True):
        if not isinstance(raw, dict):
            raise f.fail("each clause must be a mapping", "clauses")
        c = _Fields(path, raw, "clause")
        c.check_unknown({"id", "behaviour", "title", "text", "examples", "see"})
        cid = c.str("id")
        c.where = f"clause {cid}"
        if not CLAUSE_ID.match(cid) or not cid.startswith(prefix + "."):
            raise c.fail(f"clause id {cid!r} must look like {prefix}.<number>", "id")
        if cid in where:
            raise c.fail(f"duplicate clause id {cid!r} (first defined on line {where[cid][1]})", "id")
        behaviour = c.str("behaviour")
        if behaviour not in BEHAVIOURS:
            raise c.fail(f"unknown behaviour {behaviour!r}; expected one of {', '.join(BEHAVIOURS)}", "behaviour")
        examples = tuple(str(e).strip() for e in c.list("examples"))
        see = tuple(str(s).strip() for s in c.list("see"))
        clauses.append(Clause(cid, behaviour, c.str("title", ""), c.str("text"), examples, see))
        where[cid] = (path, c.line("id"))
    category = Category(f.str("id"), prefix, f.str("name"), f.str("definition"), tuple(clauses))
    return category, where


def _load_style_guides(f: _Fields) -> tuple[StyleGuide, ...]:
    raw = f.data.get("style_guides")
    if not isinstance(raw, dict):
        raise f.fail("missing required mapping 'style_guides'")
    guides = []
    for behaviour in BEHAVIOURS:
        if behaviour not in raw:
            raise f.fail(f"style_guides has no entry for {behaviour!r}", "style_guides")
    for behaviour, body in raw.items():
        if behaviour.startswith("__"):
            continue
        if behaviour not in BEHAVIOURS:
            raise SpecError(f"{f.path}:{raw['__lines__'][behaviour]}: style_guides: unknown behaviour {behaviour!r}")
        g = _Fields(f.path, body if isinstance(body, dict) else {}, f"style guide {behaviour}")
        g.check_unknown({"summary", "rules", "markers", "example"})
        markers = tuple(str(m).strip().lower() for m in g.list("markers", required=True))
        guides.append(
            StyleGuide(behaviour, g.str("summary"), tuple(map(str, g.list("rules"))), markers, g.str("example", ""))
        )
    return tuple(guides)


def load_spec(path: str | Path) -> Spec:
    """Load and validate a spec folder (or its `index.yaml`). Raises `SpecError` naming file:line."""
    path = Path(path)
    index = path / "index.yaml" if path.is_dir() else path
    f = _Fields(index, _read_yaml(index), "index")
    f.check_unknown({"id", "version", "title", "description", "categories", "style_guides"})
    categories, where = [], {}
    for name in f.list("categories", required=True):
        category, clause_where = _load_category(index.parent / str(name))
        if any(c.id == category.id or c.prefix == category.prefix for c in categories):
            raise SpecError(f"{index.parent / str(name)}:1: category id or prefix repeats an earlier file")
        for cid, loc in clause_where.items():
            if cid in where:
                raise SpecError(f"{loc[0]}:{loc[1]}: duplicate clause id {cid!r} (also in {where[cid][0]}:{where[cid][1]})")
        where.update(clause_where)
        categories.append(category)
    for category in categories:
        for clause in category.clauses:
            for ref in clause.see:
                if ref not in where:
                    p, line = where[clause.id]
                    raise SpecError(f"{p}:{line}: clause {clause.id}: 'see' refers to unknown clause {ref!r}")
    return Spec(
        id=f.str("id"),
        version=f.str("version"),
        title=f.str("title"),
        description=f.str("description", ""),
        categories=tuple(categories),
        style_guides=_load_style_guides(f),
    )


def default_spec_dir() -> Path:
    """The spec shipped with rayda: the checkout's `specs/`, or `rayda/specs` in an installed wheel."""
    return shipped_path("specs")
