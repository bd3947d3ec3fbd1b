"""The `cai:` section of a recipe: Constitutional AI's supervised stage (`rayda cai-sft`).

Kept apart from `rayda.config` (which imports it into `Recipe`) so that file stays readable; the
checks of its values live in `problems`, which `rayda.check` calls with the other sections' checks.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CaiConfig:
    rounds: int = 2
    """Critique -> revision rounds per prompt; each samples one principle (a clause of the prompt's
    category). A critique that asks for no change keeps the answer as it is (no generation)."""
    temperature: float = 0.7
    """Sampling temperature of the base's answers and revisions."""
    max_tokens: int = 256
    """Longest answer or revision (reasoning + answer) in tokens."""
    revision_prefix: str = "Clause {principle} applies."
    """The opening of a revision's reasoning, `{principle}` standing for the critique's clause id; the
    base writes the rest. "" leaves the whole revision to the base (see `rayda.critique` for why the tiny
    base needs it: it acts on a clause its reasoning names, not on one named in its context)."""
    critic_temperature: float = 0.7
    """llm/http critics: sampling temperature of a critique (the rubric judge's critic is rule-based)."""
    critic_max_tokens: int = 256
    """llm/http critics: longest critique in tokens (a JSON object: `fits` and `critique`)."""
    shard_size: int = 64
    """Prompts per finished part (`cai_data/parts/part-*.parquet`): the unit of resumption."""
    batch_size: int = 16
    """Prompts per generator batch (one vLLM call per round); also the critic's batch."""
    max_model_len: int | None = None
    """Context length of the generator engine; None takes the model's."""
    gpu_memory_utilization: float = 0.2
    """vLLM memory fraction (of CPU memory on the CPU build: keep it near 0.2)."""
    enforce_eager: bool = True
    """Skip graph compilation (about 40 s on CPU; not worth it for short runs)."""


def problems(cfg: CaiConfig) -> list[str]:
    """What is wrong with the `cai:` settings on their own."""
    out = [f"cai.{n} must be at least {low}, got {getattr(cfg, n)}"
           for n, low in (("rounds", 1), ("max_tokens", 1), ("critic_max_tokens", 1), ("shard_size", 1), ("batch_size", 1))
           if getattr(cfg, n) < low]
    out += [f"cai.{n} must be >= 0, got {getattr(cfg, n)}" for n in ("temperature", "critic_temperature") if getattr(cfg, n) < 0]
    try:
        cfg.revision_prefix.format(principle="IB.1")
    except (KeyError, IndexError, ValueError) as e:
        out.append(f"cai.revision_prefix {cfg.revision_prefix!r} is not a template with only {{principle}} in it ({e!r})")
    return out
