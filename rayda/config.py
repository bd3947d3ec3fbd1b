"""Recipes: frozen dataclasses loaded from YAML, with `a.b=c` overrides from the command line.

A recipe is one YAML file with one mapping per section below. Unknown keys are errors that name the
key and suggest the nearest valid one; values are checked against the field's type. The resolved
recipe is written into the run directory so a run can always be reproduced.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

RECIPES_DIR = Path(__file__).parent / "recipes"


class ConfigError(ValueError):
    """A recipe or an override is invalid. The message names the key (and file) at fault."""


# ---- sections ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunConfig:
    dir: str = "runs/tiny"
    """Run directory: every stage writes its outputs (and `_SUCCESS`) under it."""
    seed: int = 0
    """Seed for data order, sampling and initialisation."""
    ray_address: str | None = None
    """Ray cluster to join (`auto`, `ray://host:10001`); None starts a local Ray."""
    num_cpus: int | None = None
    """CPUs for a local Ray started by rayda; None lets Ray count them."""


@dataclass(frozen=True)
class SpecConfig:
    path: str = "specs"
    """Spec folder (or its index.yaml). Relative paths resolve from the working directory, then from
    the rayda repository."""
    token_budget: int | None = None
    """Largest `spec(category)` in tokens of the policy's tokenizer; None shows the full spec."""


@dataclass(frozen=True)
class ModelConfig:
    policy: str = "tinyworld"
    """Policy to start from: a Hugging Face path or name, or `tinyworld` for the built-in tiny base model."""
    judge: str = "tinyworld"
    """Model behind the `llm` judge: a Hugging Face path or name, or `tinyworld`."""
    dtype: str = "auto"
    """`auto` (bf16 where the hardware supports it, else fp32), `bfloat16`, `float16` or `float32`."""


@dataclass(frozen=True)
class PromptsConfig:
    source: str = "tinyworld:train"
    """Prompt set: `tinyworld:train`, `tinyworld:heldout`, a .jsonl/.parquet file, a dataset folder or name."""
    limit: int | None = None
    """Use only the first N prompts (None: all)."""


@dataclass(frozen=True)
class TinyWorldConfig:
    vocab_size: int = 640
    """BPE vocabulary size. Keep it small: a large one leaves held-out tokens untrained (STACK.md)."""
    hidden_size: int = 256
    """Width of the tiny Llama."""
    num_layers: int = 4
    """Decoder layers."""
    num_heads: int = 4
    """Attention heads."""
    max_position: int = 1024
    """Longest sequence the tiny model handles (prompt + spec + response)."""
    transcripts: int = 8000
    """Policy-free synthetic transcripts to pre-train on (random behaviour, random clause)."""
    pretrain_steps: int = 600
    """Optimizer steps of pre-training."""
    batch_size: int = 32
    """Transcripts per pre-training step."""
    lr: float = 1e-3
    """Peak pre-training learning rate (cosine decay)."""
    system_spec_fraction: float = 0.25
    """Share of transcripts that carry `spec(category)` in a system message, as data generation does."""
    cache_dir: str | None = None
    """Where built worlds are cached by content hash; None: $RAYDA_CACHE or ~/.cache/rayda."""


@dataclass(frozen=True)
class PoolConfig:
    num_actors: int = 1
    """Actors in this pool."""
    num_cpus: float = 1
    """CPUs each actor reserves."""
    num_gpus: float = 0
    """GPUs each actor reserves (fractions allowed: colocated actors)."""
    resources: dict = field(default_factory=dict)
    """Custom Ray resources each actor needs, e.g. {"judge_node": 1}."""


@dataclass(frozen=True)
class PoolsConfig:
    generator: PoolConfig = field(default_factory=PoolConfig)
    """vLLM actors that write SFT data (gen-sft) and RL rollouts."""
    judge: PoolConfig = field(default_factory=PoolConfig)
    """Judge actors (the llm judge holds a vLLM engine; rubric and http judges are CPU-only)."""
    learner: PoolConfig = field(default_factory=PoolConfig)
    """DeepSpeed ranks, one actor each."""


@dataclass(frozen=True)
class Recipe:
    run: RunConfig = field(default_factory=RunConfig)
    """Where and how the run happens."""
    spec: SpecConfig = field(default_factory=SpecConfig)
    """The safety specification."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Policy and judge models."""
    prompts: PromptsConfig = field(default_factory=PromptsConfig)
    """The prompts every stage draws from."""
    tinyworld: TinyWorldConfig = field(default_factory=TinyWorldConfig)
    """The self-contained tiny world used when a model is `tinyworld`."""
    pools: PoolsConfig = field(default_factory=PoolsConfig)
    """Actor pools and the resources of each actor."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: str | Path) -> None:
        """Write the resolved recipe (atomically) so the run can be reproduced."""
        from rayda.io import atomic_write_text

        atomic_write_text(Path(path), yaml.safe_dump(self.to_dict(), sort_keys=False))


# ---- loading -------------------------------------------------------------------------------------


def recipe_path(name_or_path: str | None) -> Path:
    """A packaged recipe name (`tiny`) or a path to a YAML file."""
    name_or_path = name_or_path or "tiny"
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise ConfigError(f"recipe file {p} does not exist")
        return p
    packaged = RECIPES_DIR / f"{name_or_path}.yaml"
    if not packaged.exists():
        known = sorted(q.stem for q in RECIPES_DIR.glob("*.yaml"))
        raise ConfigError(f"unknown recipe {name_or_path!r}; packaged recipes: {', '.join(known)}")
    return packaged


def load_recipe(name_or_path: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """Load a recipe and apply `a.b=c` overrides (values parsed as YAML)."""
    path = recipe_path(name_or_path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: YAML syntax error: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a recipe must be a mapping of sections")
    for item in overrides:
        _apply_override(data, item)
    return build(Recipe, data, str(path))


def _apply_override(data: dict, item: str) -> None:
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} must look like key.sub=value")
    *parents, leaf = key.strip().split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {item!r}: {part!r} is not a section")
    node[leaf] = yaml.safe_load(raw) if raw.strip() else None


def build(cls: type, data: Any, where: str, prefix: str = ""):
    """Build dataclass `cls` from a mapping; unknown keys and wrong types raise ConfigError."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: {prefix or 'recipe'} must be a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            candidates = [f"{prefix}{k}" for k in fields]
            near = difflib.get_close_matches(dotted, candidates, n=1, cutoff=0.5)
            hint = f"; did you mean {near[0]!r}?" if near else f"; valid keys: {', '.join(candidates)}"
            raise ConfigError(f"{where}: unknown key {dotted!r}{hint}")
        kwargs[key] = _coerce(hints[key], value, where, dotted)
    return cls(**kwargs)


def _coerce(tp: Any, value: Any, where: str, key: str):
    if dataclasses.is_dataclass(tp):
        return build(tp, value, where, key + ".")
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, where, key)
    if tp is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if tp in (int, str, bool) and not (isinstance(value, tp) and not (tp is int and isinstance(value, bool))):
        raise ConfigError(f"{where}: {key} must be {tp.__name__}, got {value!r}")
    if tp is float and not isinstance(value, float):
        raise ConfigError(f"{where}: {key} must be a number, got {value!r}")
    if (origin or tp) is dict and not isinstance(value, dict):
        raise ConfigError(f"{where}: {key} must be a mapping, got {value!r}")
    if (origin or tp) in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: {key} must be a list, got {value!r}")
        return tuple(value)
    return value


def cache_root(configured: str | None = None) -> Path:
    """Where rayda caches built artefacts (the tiny world): recipe, then $RAYDA_CACHE, then ~/.cache."""
    root = configured or os.environ.get("RAYDA_CACHE") or Path.home() / ".cache" / "rayda"
    return Path(root).expanduser()
