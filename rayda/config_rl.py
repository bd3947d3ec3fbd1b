"""The recipe's `rl:` section (the `rayda rl` stage) and the LoRA settings it shares with `sft:`. Kept
apart from `rayda.config` only for size; `Recipe` holds them."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class LoraConfig:
    """Low-rank adapters (PEFT) instead of full fine-tuning: the learner trains only the adapters, and
    in RL the rollout engines serve the frozen weights plus the adapter, so a sync moves kilobytes."""

    rank: int = 0
    """Adapter rank r; 0 trains every weight. vLLM serves ranks 8, 16, 32, 64, 128, 256, 320 and 512."""
    alpha: float = 32.0
    """Scaling numerator: the update is (alpha / rank) * B @ A."""
    dropout: float = 0.0
    """Dropout on the adapter's input while training."""
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
    """Linear layers that get adapters (names as in the Hugging Face model)."""


@dataclass(frozen=True)
class RlConfig:
    steps: int = 20
    """RL steps: each samples a batch, takes the policy update(s) on it and syncs the rollout pool."""
    prompts: str | None = None
    """RL's prompt set, in any form `prompts.source` takes; None: `prompts.source` (`prompts.limit` applies
    either way). Deliberative Alignment samples RL prompts apart from the SFT ones."""
    init: str = "sft"
    """Where RL starts (and the KL reference it keeps close to): `sft`, this run's SFT checkpoint;
    `base`, the recipe's `model.policy` (the RL-only ablation); or a model path or hub name."""
    prompts_per_step: int = 8
    """Prompts per step (drawn in a seeded order that a resumed run replays exactly)."""
    stratify: bool = False
    """Draw each step's prompts stratified by (category, label): every step holds each in about its
    share of the prompts, instead of a plain shuffle's luck of the draw (`data.sft.stratified_order`)."""
    samples_per_prompt: int = 4
    """Samples per prompt: the group whose mean and std normalise the advantages (GRPO)."""
    max_staleness: int = 0
    """0: each step samples with the current policy, then trains (on-policy). 1: the next step's
    rollouts and judging run while this step trains, sampled by the policy one update behind; the
    loss takes the PPO ratio against that sampling policy's log-probs."""
    oversample: int = 1
    """Dynamic sampling (DAPO): each step samples prompts_per_step x oversample prompts and trains on
    prompts_per_step of their groups, those whose rewards differ first (a group whose samples all score
    the same has zero advantage and only dilutes the update); 1: train on every group sampled."""
    max_tokens: int = 160
    """Longest sampled completion (reasoning + answer) in tokens."""
    temperature: float = 1.0
    """Sampling temperature of the rollouts (> 0). The learner scores the samples under the same
    softmax(logits / T) (PPO ratio, KL to the reference), so the update is that of the policy that sampled."""
    top_p: float = 1.0
    """Nucleus sampling of the rollouts."""
    format_penalty: float = 0.5
    """Reward of a malformed completion (no `<think>…</think>` then an answer) is -format_penalty;
    it is never judged. Judged answers score in [0, 1]."""
    micro_batch_size: int = 8
    """Rows (samples) per forward/backward pass on each rank."""
    grad_accum: int = 4
    """Micro-batches per optimizer update on each rank. An update takes micro x accum x ranks rows; a
    step's prompts_per_step x samples_per_prompt rows must be a whole number of updates."""
    lr: float = 1e-4
    """Learning rate (AdamW, constant after warm-up)."""
    warmup_steps: int = 0
    """Linear warm-up, in optimizer updates."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this (0 turns clipping off)."""
    clip: float = 0.2
    """PPO ratio clip: a token's ratio to the sampling policy counts only within [1 - clip, 1 + clip_high]."""
    clip_high: float | None = None
    """Upper ratio bound (DAPO's clip-higher); None: the same as `clip`."""
    adv_scale: str = "std"
    """Advantages are reward - group mean, divided by the group's std (`std`, GRPO) or not (`none`, Dr. GRPO)."""
    label_weights: dict = field(default_factory=dict)
    """Advantage multipliers per prompt label (`{refuse: 2.0}`; a label not named: 1): how hard the groups
    of each behaviour push. Group normalisation gives every group the same weight whatever the cost of
    its mistakes; with a weight above 1 on `refuse`, a step's push towards refusing harmful requests
    outweighs its push towards complying, where the two meet on wordings RL never sampled."""
    kl_coef: float = 0.05
    """Weight of the KL penalty to the frozen SFT reference in the loss."""
    kl_kind: str = "k3"
    """KL penalty: `k1`, `k2` or `k3` (unbiased and never negative), estimated from the sampled tokens, or
    `full`, the exact KL over the vocabulary at each position (one more reference forward pass per
    micro-batch; it also sees probability moved onto tokens that were not sampled)."""
    kl_reasoning: float = 1.0
    """Multiplier of the KL penalty on the reasoning's tokens (`<think>` to `</think>`, the tag included);
    the answer's tokens weigh 1. The judge sees only the answer, so above 1 the reasoning stays nearer
    SFT's, which learnt to cite the spec, while the answer moves where the reward sends it."""
    zero_stage: int = 2
    """DeepSpeed ZeRO stage of the learner group (0-3)."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """`rl.lora.rank > 0`: the learner trains adapters on the SFT weights, the rollout engines serve
    them with vLLM's LoRA support, and each sync sends only the adapter (whatever `rl.sync`); the
    reference is the SFT weights with the adapter switched off (no copy). The export is merged."""
    probe_every: int = 1
    """Verify every N-th weight sync with the log-prob probe (1: every sync). A mismatch is an error."""
    probe_tolerance: float = 1e-3
    """Largest allowed |learner - rollout engine| log-prob on the probe, in nats. 1e-3 suits fp32 on
    both sides (measured about 1e-5); bf16 needs about 5e-2."""
    sync: str = "collective"
    """How the learner's weights reach the rollout engines after each step: `collective`, broadcast
    from learner rank 0 to every engine's workers over a process group of their own (gloo on CPU,
    NCCL on GPU; no shared storage needed), or `files`, a safetensors snapshot in `sync_dir` that
    every engine reloads."""
    sync_bucket_mb: int = 64
    """`collective`: tensors travel in buckets of up to this many MiB; one travels while the previous
    one loads (a worker holds two extra buckets)."""
    sync_timeout_s: float = 300.0
    """`collective`: a member that does not join or take part in a broadcast within this time fails
    the sync, with an error naming it."""
    sync_dir: str | None = None
    """`files`: where the learner writes the weight snapshot the rollout engines reload; None:
    `<run.dir>/checkpoints/rl_sync`. With several nodes it must be shared storage (a tmpfs is fastest)."""
    rollout_restarts: int = 2
    """Times Ray restarts a dead rollout actor (it is then re-synced to the current version)."""
    rollout_retries: int = 2
    """Times a step retries the rollouts of an actor that died mid-step before the run fails."""
    save_every: int = 10
    """Checkpoint the learner (DeepSpeed state + step) every N steps; 0: only the final export."""
    keep_checkpoints: int = 2
    """Newest checkpoints kept; older ones are deleted."""
    eval_every: int = 5
    """Every N steps (and before the first and after the last), greedy behaviour accuracy and the share
    of each answer style on a fixed sample of training prompts and of `eval.prompts`, through the
    rollout engines (no spec in context); 0: never."""
    eval_prompts: int = 64
    """Prompts in each of the two fixed samples that `eval_every` measures."""
    select: str = "last"
    """Which weights RL exports: `last`, the final step's; or `best`, early stopping on a validation
    set: of the checkpoints that `eval_every` measures after training, the one whose greedy behaviour
    accuracy on `select_prompts` is highest (the earliest on a tie). Each new best is exported to
    `<run.dir>/checkpoints/rl_best` as it is found."""
    select_prompts: str | None = None
    """`select=best`'s validation prompts, in any form `prompts.source` takes; labelled, in the training
    prompts' categories, and sharing no prompt with `rl.prompts` (e.g. `tinyworld:valid`)."""
    select_n: int = 240
    """Validation prompts measured at each checkpoint (a fixed seeded sample; all if fewer)."""
    merge: float = 1.0
    """The export is start + merge x (RL's weights - start), where `start` is the model RL began from
    (and keeps its KL to): 1 exports RL's weights as they are; below 1 goes back part of the way along
    the straight line (WiSE-FT / WARP), keeping most of what RL gained and less of its drift. Applied to
    the exported folder only: the training policy and its `eval_every` figures are RL's own."""
    members: int = 1
    """Independent RL runs from the same start, trained one after the other, whose final weights are
    averaged before `merge` (WARP's merge of independent runs, arXiv 2406.16768; `rayda.rl.members`).
    Member 0 is the run `members=1` makes; each other member draws with a seed of its own. Costs
    `members` runs. Full fine-tuning only (rl.lora.rank=0)."""
    log_samples: int = 4
    """Completions per step written to `<run.dir>/rl_samples.jsonl` (stage, prompt id, version, reasoning,
    answer, reward) for reading what the policy writes; 0: none."""
    max_model_len: int | None = None
    """Context length of the rollout engines; None takes the model's."""
    gpu_memory_utilization: float = 0.2
    """vLLM memory fraction of each rollout engine (of CPU memory on the CPU build: keep it near 0.2)."""
    enforce_eager: bool = True
    """Skip graph compilation in the rollout engines (about 40 s on CPU; not worth it for short runs)."""
