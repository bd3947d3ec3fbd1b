"""The recipe sections of Constitutional AI's preference model: `pm:` (the `rayda pm` stage) and
`reward:` (what RL is rewarded by). Kept apart from `rayda.config` only for size; `Recipe` holds them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PmConfig:
    init: str = "sft"
    """The policy that samples the pairs and whose weights the preference model starts from (plus a new
    scalar head): `sft`, this run's SFT checkpoint; `base`, `model.policy`; or a model path or hub name."""
    prompts: str | None = None
    """The prompts to sample pairs on; None: `rl.prompts`, else `prompts.source` (`prompts.limit` applies)."""
    temperature: float = 1.0
    """Sampling temperature of the two samples per prompt (> 0: they must be able to differ)."""
    max_tokens: int = 160
    """Longest sampled completion (reasoning + answer) in tokens."""
    votes: int = 3
    """Judge votes per pair, each under the pair's principle; the majority picks the chosen answer, a tie
    drops the pair."""
    shard_size: int = 64
    """Prompts per finished part (`pm_data/parts/part-*.parquet`): the unit of resumption."""
    heldout_fraction: float = 0.2
    """Share of prompt ids whose pairs are held out for the pair accuracy (a stable hash split)."""
    max_length: int = 384
    """Longest rendered prompt + answer in tokens; a pair with a longer side is dropped (counted)."""
    micro_batch_size: int = 8
    """Pairs per forward/backward pass on each rank (each pass scores 2 x this many sequences)."""
    grad_accum: int = 1
    """Micro-batches per optimizer step on each rank."""
    epochs: float = 3.0
    """Passes over the training pairs (fractions allowed)."""
    lr: float = 1e-4
    """Peak learning rate (AdamW, warm-up then cosine to lr x 0.1)."""
    warmup_steps: int = 5
    """Linear warm-up steps."""
    zero_stage: int = 2
    """DeepSpeed ZeRO stage of the learner group (0-3)."""


@dataclass(frozen=True)
class RewardConfig:
    kind: str = "judge"
    """What rewards RL: `judge`, the recipe's judge (REWARD view); `pm`, the preference model of
    `rayda pm`, served by the judge actors: sigmoid of its score of prompt + final answer, in [0, 1]."""
    model: str | None = None
    """reward.kind=pm: the preference model's folder; None: `<run.dir>/checkpoints/pm`."""


REWARD_KINDS = ("judge", "pm")
