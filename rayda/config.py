"""Recipes: frozen dataclasses loaded from YAML, with `a.b=c` overrides from the command line.

A recipe is one YAML file with one mapping per section below. Unknown keys are errors that name the
key and suggest the nearest valid one; values are checked against the field's type. The resolved
recipe is written into the run directory so a run can always be reproduced.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from rayda.config_cai import CaiConfig
from rayda.config_pm import PmConfig, RewardConfig
from rayda.config_rl import LoraConfig, RlConfig
from rayda.typed_config import ConfigError, build

RECIPES_DIR = Path(__file__).parent / "recipes"


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
    num_gpus: int | None = None
    """GPUs for a local Ray started by rayda; None lets Ray count them. Logical GPUs on a CPU machine
    rehearse a GPU recipe's pool layout (the actors then find no CUDA and run on CPU)."""
    verbose: bool = False
    """Show the engines' INFO logs (vLLM, DeepSpeed); off by default, so each stage shows one progress bar."""


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
    """`auto`, `bfloat16`, `float16` or `float32`. `auto`: learners and RL rollouts bf16 on a GPU that supports
    it, else fp32; other vLLM engines (gen-sft, judges, evaluation) vLLM's own choice on a GPU, fp32 on CPU."""


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
    """Policy-free synthetic transcripts to pre-train on (a random clause, and its behaviour)."""
    pretrain_steps: int = 200
    """Optimizer steps of pre-training."""
    batch_size: int = 32
    """Transcripts per pre-training step."""
    lr: float = 1e-3
    """Peak pre-training learning rate (cosine decay)."""
    system_spec_fraction: float = 0.5
    """Share of transcripts that carry `spec(category)` in a system message, as data generation does."""
    cache_dir: str | None = None
    """Where built worlds are cached by content hash; None: $RAYDA_CACHE or ~/.cache/rayda."""
    extra_frames: int = 0
    """Generated request wordings (`rayda.tinyworld.prompts.extra_frames`), none a training or held-out
    frame, that half the pre-training transcripts wrap their subject in; 0: only the 12 training
    frames. Many wordings teach the base to copy a request out of a frame it never met."""
    report_prompts: int | None = None
    """Prompts the build's report samples the base on, in each of its two measurements (held-out
    without the spec; training prompts with it); None: all 240 held-out and every fourth training
    prompt (120). The spec-carrying measurement is most of a small world's build time."""


PLACEMENT_STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")


@dataclass(frozen=True)
class PoolConfig:
    actors: int = 1
    """Actors in this pool (one placement-group bundle each)."""
    cpus_per_actor: float = 1
    """CPUs each actor reserves."""
    gpus_per_actor: float = 0
    """GPUs each actor reserves (fractions allowed: colocated actors)."""
    resources: dict = field(default_factory=dict)
    """Custom Ray resources each actor needs, e.g. {"judge_node": 1}: pins the pool to the nodes that
    advertise them (`ray start --resources='{"judge_node": 4}'`)."""
    strategy: str = "PACK"
    """Placement strategy of the pool's placement group: PACK, SPREAD, STRICT_PACK or STRICT_SPREAD."""


@dataclass(frozen=True)
class PoolsConfig:
    rollout: PoolConfig = field(default_factory=PoolConfig)
    """vLLM actors that write SFT data (gen-sft), RL rollouts and evaluation answers."""
    judge: PoolConfig = field(default_factory=PoolConfig)
    """Judge actors (the llm judge holds a vLLM engine; rubric and http judges are CPU-only)."""
    learner: PoolConfig = field(default_factory=PoolConfig)
    """DeepSpeed ranks, one actor each."""
    reference: PoolConfig | None = None
    """A separate pool for the frozen reference model: its ranks hold the SFT weights sharded (ZeRO-3)
    and compute RL's reference log-probs. None (the default) keeps a whole copy on every learner rank."""

    def named(self) -> dict[str, PoolConfig]:
        """The pools that take resources, by name (rollout, judge, learner, then reference if set)."""
        out = {"rollout": self.rollout, "judge": self.judge, "learner": self.learner}
        return out if self.reference is None else {**out, "reference": self.reference}


@dataclass(frozen=True)
class GenSftConfig:
    samples_per_prompt: int = 8
    """Completions sampled per prompt; the best-scoring passing one is kept. The tiny base model picks
    its behaviour at random, so it needs several tries per prompt (about 1 in 18 passes)."""
    max_tokens: int = 256
    """Longest completion (reasoning + answer) in tokens."""
    temperature: float = 1.0
    """Sampling temperature of the generator."""
    top_p: float = 1.0
    """Nucleus sampling of the generator."""
    threshold: float = 0.8
    """Keep a sample whose min-of-k judge score is at least this (scores are in [0, 1])."""
    keep_per_prompt: int = 1
    """SFT rows per accepted prompt in `accepted.parquet`: its passing samples, best first, repeated in
    turn when it has fewer (so every accepted prompt weighs the same). Above 1, SFT sees several
    reasonings for one request; divide `sft.epochs` by it for the same number of SFT steps."""
    shard_size: int = 64
    """Prompts per finished part (`sft_data/parts/part-*.parquet`): the unit of resumption."""
    batch_size: int = 16
    """Prompts per generator batch (one vLLM call); also the judge's batch."""
    max_model_len: int | None = None
    """Context length of the generator engine; None takes the model's."""
    gpu_memory_utilization: float = 0.2
    """vLLM memory fraction (of CPU memory on the CPU build: keep it near 0.2)."""
    enforce_eager: bool = True
    """Skip graph compilation (about 40 s on CPU; not worth it for short runs)."""


@dataclass(frozen=True)
class JudgeConfig:
    kind: str = "rubric"
    """Judge kind: `rubric` (labels + style markers + citations), `llm` (a vLLM model in the judge
    actors, structured output), or `http` (an OpenAI-compatible endpoint)."""
    k: int = 3
    """Verdicts per judged sample; the kept score is their minimum."""
    batched_k: bool = True
    """llm/http judges: ask for the k verdicts as one request with n=k samples (else k requests)."""
    temperature: float = 1.0
    """Sampling temperature of llm/http judges (k verdicts should differ)."""
    max_tokens: int = 256
    """Longest verdict in tokens (the schema bounds a verdict to about 150 characters; a small
    tokenizer can need a token per character)."""
    max_model_len: int | None = None
    """Context length of the llm judge engine; None takes the model's. Larger than the model's trained
    length extends RoPE positions (a tiny judge reading spec + reasoning + answer), with a warning."""
    gpu_memory_utilization: float = 0.2
    """vLLM memory fraction of the llm judge engine."""
    base_url: str | None = None
    """http judge: the endpoint's base URL, e.g. `http://127.0.0.1:8000/v1`."""
    api_model: str | None = None
    """http judge: the model name the endpoint serves; None uses `model.judge`."""
    api_key_env: str = "RAYDA_JUDGE_API_KEY"
    """http judge: the environment variable that holds the API key (never logged)."""
    timeout_s: float = 60.0
    """http judge: seconds per request before it counts as failed (then retried)."""
    retries: int = 2
    """http judge: extra attempts after a timeout, connection error or 5xx/429 answer."""
    concurrency: int = 4
    """http judge: requests in flight at once, per judge actor."""
    structured: bool = True
    """llm/http judges: force the verdict into the JSON schema (structured outputs)."""


@dataclass(frozen=True)
class SftConfig:
    data: str | None = None
    """Accepted SFT rows (parquet with `messages`, `prompt_id`); None: `<run.dir>/sft_data/accepted.parquet`."""
    max_length: int = 512
    """Longest rendered conversation (prompt + reasoning + answer) in tokens."""
    overlong: str = "drop"
    """Rows longer than max_length: `drop` them or `truncate` them (both counted in the report)."""
    heldout_fraction: float = 0.05
    """Share of prompt ids held out for the held-out loss (a stable hash split)."""
    micro_batch_size: int = 8
    """Rows per forward/backward pass on each rank."""
    grad_accum: int = 1
    """Micro-batches per optimizer step on each rank; a step sees micro x accum x ranks rows."""
    epochs: float = 3.0
    """Passes over the training rows (fractions allowed); ignored when max_steps is set."""
    stratify: bool = False
    """Order each epoch stratified by the rows' (category, label) (`data.sft.stratified_order`): every
    batch, the last ones included, holds each in about its share; off: a plain shuffle."""
    max_steps: int | None = None
    """Optimizer steps; None derives them from epochs."""
    lr: float = 3e-4
    """Peak learning rate (AdamW)."""
    min_lr_ratio: float = 0.1
    """The cosine decays to lr x this at the last step."""
    warmup_steps: int = 10
    """Linear warm-up steps before the cosine."""
    weight_decay: float = 0.0
    """AdamW weight decay on matrices (never on norms and biases)."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 turns clipping off)."""
    zero_stage: int = 2
    """DeepSpeed ZeRO stage 0-3 (3 partitions the parameters too)."""
    offload_optimizer: bool = False
    """Keep optimizer states in CPU memory (ZeRO 1-3)."""
    offload_params: bool = False
    """Keep parameters in CPU memory (ZeRO-3 only)."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """`sft.lora.rank > 0` trains adapters; the export merges them into a full model (and keeps them in `adapter/`)."""
    save_every: int = 100
    """Checkpoint (DeepSpeed state, data position, RNG) every N steps; 0: never (only the final export)."""
    keep_checkpoints: int = 2
    """Newest checkpoints kept; older ones are deleted."""
    average_last: int = 1
    """The export is the uniform mean of the final weights and those of the last `average_last - 1`
    checkpoints (`save_every` steps apart; checkpoint averaging). 1: the final weights as they are."""
    eval_every: int = 50
    """Held-out loss every N steps and at the end; 0: only at the end."""


@dataclass(frozen=True)
class EvalConfig:
    prompts: str = "tinyworld:heldout"
    """Prompt set: `tinyworld:heldout`, a rayda JSONL/Parquet file, XSTest's `xstest_prompts.csv` or
    StrongREJECT's `strongreject_dataset.csv`."""
    limit: int | None = None
    """Evaluate only the first N prompts (None: all)."""
    max_tokens: int = 160
    """Longest response generated per prompt."""
    temperature: float = 0.0
    """Sampling temperature; 0 is greedy (the default: a model's typical answer, reproducible)."""
    samples_per_prompt: int = 1
    """Completions sampled per prompt (more than one needs `temperature` > 0); each metric is then
    also reported as mean ± sd over the samples, beside its bootstrap interval over prompts."""
    batch_size: int = 64
    """Prompts per generator batch."""
    n_resamples: int = 1000
    """Bootstrap resamples for the 95% intervals."""
    grader: str = "heuristic"
    """What reads each answer's behaviour: `heuristic` (`rayda.behaviour.classify`; an llm or http judge's
    REWARD verdict on labelled prompts of the spec's categories) or `judge` (the recipe's llm or http
    judge with the grading prompt of `rayda.evaluation.grader`: the behaviour, and whether the answer
    holds the harmful content asked for)."""
    grader_sees: str = "answer"
    """What the `judge` grader reads besides the request: `answer` (the final answer only) or
    `reasoning` (the chain of thought too). An eval's default name carries the variant."""
    gpu_memory_utilization: float = 0.2
    """vLLM memory fraction (of NUMA node 0's memory on CPU)."""
    spec_in_context: bool = False
    """Answer with `spec(category)` in the system message, as gen-sft's generator does (the prompting
    baseline of `rayda compare`); prompts outside the spec's categories are answered without it."""


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
    gen_sft: GenSftConfig = field(default_factory=GenSftConfig)
    """Stage 1: SFT data generation (sampling, threshold, shards)."""
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    """The judge of data generation (FILTER view) and RL (REWARD view)."""
    sft: SftConfig = field(default_factory=SftConfig)
    """Stage 2: supervised fine-tuning on the accepted rows (DeepSpeed learner group)."""
    rl: RlConfig = field(default_factory=RlConfig)
    """Stage 3: GRPO from the SFT checkpoint, rewards from the judge's REWARD view (final answers only)."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Stage 4: evaluation without the spec in context."""
    pm: PmConfig = field(default_factory=PmConfig)
    """Constitutional AI's preference model (`rayda pm`): judged pairs of policy samples, Bradley-Terry."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """What rewards RL: the judge (default) or the preference model (`reward.kind=pm`)."""
    cai: CaiConfig = field(default_factory=CaiConfig)
    """Constitutional AI's supervised stage (`rayda cai-sft`): answer, critique, revise, SFT on revisions."""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def with_overrides(self, overrides, where: str = "overrides") -> Recipe:
        """This recipe with `a.b=c` overrides, checked as `load_recipe` checks them (types, unknown keys)."""
        data = self.to_dict()
        for item in overrides:
            _apply_override(data, item)
        return build(Recipe, data, where)

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


def cache_root(configured: str | None = None) -> Path:
    """Where rayda caches built artefacts (the tiny world): recipe, then $RAYDA_CACHE, then ~/.cache."""
    root = configured or os.environ.get("RAYDA_CACHE") or Path.home() / ".cache" / "rayda"
    return Path(root).expanduser()
