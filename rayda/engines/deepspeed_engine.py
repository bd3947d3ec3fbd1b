"""The learner's DeepSpeed adapter: one object per rank, driven by the `Learner` actor.

Each rank receives only its own shard of the global batch (`rows[rank::world]`, packed as NumPy
columns: `rayda.data.packed`) and cuts it into `grad_accum` micro-batches. The loss is divided by the
masked-token count of the whole global batch (which the shard carries), so the gradient is the
token-weighted mean over all ranks and micro-batches whatever the cut (see `rayda.algo.losses.sft_loss`). DeepSpeed averages gradients over ranks and, by default, divides
by `grad_accum` too; we undo both scalings by hand (`backward(scale_wrt_gas=False)`, loss x world).

Each rank decides its own device, backend and dtype (`rayda.engines.device`, in the rank's process,
not the driver's): without CUDA, DeepSpeed runs through its CPU accelerator (`DS_ACCELERATOR=cpu`, set
before deepspeed is imported) and torch.distributed over gloo; with CUDA over nccl.
"""

from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from rayda.algo.losses import LOSSES, next_token
from rayda.algo.schedule import warmup_cosine
from rayda.data.sft import collate
from rayda.engines.device import Decision, local_decision, prepare_deepspeed
from rayda.engines.learner_weights import WeightsOut


@dataclass(frozen=True)
class LearnerOptions:
    """What a learner rank needs to know; built by each stage from its recipe section."""

    zero_stage: int = 2
    offload_optimizer: bool = False
    offload_params: bool = False
    micro_batch_size: int = 8
    grad_accum: int = 1
    lr: float = 3e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 10
    total_steps: int = 100
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.95)
    grad_clip: float = 1.0
    dtype: str = "auto"
    """auto: bf16 on a CUDA device that supports it, else fp32, decided by each rank for its own
    device (`rayda.engines.device.decide`)."""
    seed: int = 0
    pad_id: int = 0
    lora: object = None
    """A `rayda.config.LoraConfig` with rank > 0 to train PEFT adapters only (ZeRO 0-2); None: every weight."""
    verbose: bool = False
    """DeepSpeed's INFO logs (`run.verbose`); WARNING and above otherwise."""
    head: str = "lm"
    """`lm`: the causal LM (SFT, RL); `score`: the same network with a new scalar head
    (`AutoModelForSequenceClassification`, num_labels=1), the preference model trained on pairs
    (`rayda.data.pairs.PairRow`) with the `bt` loss."""

    def rows_per_step(self, world_size: int) -> int:
        return self.micro_batch_size * self.grad_accum * world_size


def resolve_dtype(dtype: str) -> str:
    """`dtype` as this process resolves it (`rayda.engines.device.decide`): `auto` -> bfloat16 on CUDA
    with bf16 support, else float32. Meaningful only in the process that runs the model."""
    return local_decision(dtype).dtype


def ds_config(opts: LearnerOptions, world_size: int, decision: Decision | None = None) -> dict:
    """The DeepSpeed config of a recipe's learner options (a pure function of `decision`, tested without
    DeepSpeed; without one, this process's own `local_decision`)."""
    from rayda.check import zero_problems

    problems = zero_problems(opts.zero_stage, opts.offload_params, opts.offload_optimizer)
    if problems:
        raise ValueError(problems[0])
    decision = decision or local_decision(opts.dtype)
    pin = decision.accelerator == "cuda"
    zero: dict = {"stage": opts.zero_stage}
    if opts.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": pin}
    if opts.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": pin}
    dtype = decision.dtype
    return {
        "train_micro_batch_size_per_gpu": opts.micro_batch_size,
        "gradient_accumulation_steps": opts.grad_accum,
        "train_batch_size": opts.rows_per_step(world_size),
        "gradient_clipping": opts.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": dtype == "bfloat16"},
        "fp16": {"enabled": dtype == "float16"},
        # We pass a torch AdamW: DeepSpeed's CPU Adam would JIT-compile another op at first start.
        "zero_allow_untested_optimizer": True,
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


def _log_level(verbose: bool) -> None:
    """DeepSpeed's logger (and its handlers) at INFO with `verbose`, else WARNING, in this rank's process."""
    import logging

    from deepspeed.utils import logger

    level = logging.INFO if verbose else logging.WARNING
    logger.setLevel(level)
    for handler in logger.handlers:
        handler.setLevel(level)


def _skip_cpu_shm_op() -> None:
    """Do not JIT-build DeepSpeed's shared-memory all-reduce op on CPU.

    DeepSpeed builds it at `init_distributed` (93 s on a fresh 2-core machine, cached afterwards in
    ~/.cache/torch_extensions) but only tensor-parallel inference (`inference_all_reduce`) uses it;
    training collectives go through torch.distributed/gloo. Set RAYDA_DS_SHM_OP=1 to build it anyway.
    """
    if torch.cuda.is_available() or os.environ.get("RAYDA_DS_SHM_OP") == "1":
        return
    import importlib

    # importlib, not `import deepspeed.comm.torch`: deepspeed.comm re-exports the torch package under
    # that attribute name, so the import statement would hand back torch itself.
    importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None


def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class DeepSpeedLearner(WeightsOut):
    """One rank of a data-parallel DeepSpeed learner (its weights leave through `WeightsOut`). The distributed environment (MASTER_ADDR,
    MASTER_PORT, RANK, WORLD_SIZE, LOCAL_RANK) must be set before construction.

    `frozen=True` makes a rank of a reference group (`pools.reference`): no optimizer, no gradients,
    the weights sharded under `opts.zero_stage` (3: each rank holds 1/world of them) and gathered
    layer by layer in each forward pass; only `logprobs` is meant to be called."""

    def __init__(self, model_path: str, opts: LearnerOptions, frozen: bool = False):
        self.model_path, self.opts = model_path, opts
        self.rank, self.world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        if torch.cuda.is_available():  # first, so the bf16 question below opens no context on GPU 0
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        # This rank's own accelerator, backend and dtype; DS_ACCELERATOR must be set before the import.
        self.decision = prepare_deepspeed(opts.dtype)
        import deepspeed

        _skip_cpu_shm_op()
        _log_level(opts.verbose)
        deepspeed.init_distributed(dist_backend=self.decision.backend)
        self._build(opts, frozen)

    def restart(self, opts: LearnerOptions) -> None:
        """Back to the start in this process: the weights of `model_path` again, a new optimizer and schedule,
        `opts.seed` (`rl.members`: the next member trains on the ranks, engines and weight group the first
        one started). The frozen reference copy stays: it is the same start."""
        import gc

        if self.frozen or opts.lora or opts.head != self.opts.head:
            raise ValueError("restart: only a full-weight policy learner restarts")
        self.engine = None
        gc.collect()
        self.opts = opts
        self._build(opts, frozen=False)

    def _build(self, opts: LearnerOptions, frozen: bool) -> None:
        """The model from `model_path`, and unless `frozen` its optimizer and schedule, in a DeepSpeed engine."""
        import deepspeed
        from transformers import AutoModelForCausalLM

        model_path = self.model_path
        random.seed(opts.seed)
        np.random.seed(opts.seed)
        torch.manual_seed(opts.seed)

        self.config = ds_config(opts, self.world_size, self.decision)
        dtype = getattr(torch, self.decision.dtype)
        # Every rank loads the full model and ZeRO-3 partitions it in `initialize`. A model larger than
        # one device would have to be built inside deepspeed.zero.Init (transformers' HfDeepSpeedConfig
        # path), which needs the `accelerate` package: not a dependency yet.
        if opts.head == "score":  # the policy's network, its LM head dropped, a new score head (warned about)
            from transformers import AutoModelForSequenceClassification

            model = AutoModelForSequenceClassification.from_pretrained(model_path, num_labels=1, dtype=dtype)
            model.config.pad_token_id = opts.pad_id  # the score is read at the last token that is not padding
        else:
            model = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
        model.config.use_cache = False
        self.lora = bool(opts.lora and opts.lora.rank) and not frozen
        if self.lora:  # the starting weights freeze; only the adapters (B = 0: the same function) train
            from peft import LoraConfig, get_peft_model

            lora = opts.lora
            model = get_peft_model(model, LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                                                     target_modules=list(lora.target_modules), bias="none"))
        self.frozen = frozen
        if frozen:
            model.requires_grad_(False)
            self.engine, *_ = deepspeed.initialize(model=model, config=self.config)
            self.device = self.engine.device
            return
        params = [p for p in model.parameters() if p.requires_grad]
        decay = [p for p in params if p.ndim >= 2]
        no_decay = [p for p in params if p.ndim < 2]
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": opts.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=opts.lr, betas=tuple(opts.betas),
        )

        def schedule(opt):
            return torch.optim.lr_scheduler.LambdaLR(
                opt, lambda s: warmup_cosine(s, opts.total_steps, opts.warmup_steps, opts.min_lr_ratio))

        self.engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=schedule, config=self.config)
        self.device = self.engine.device

    # ---- training ------------------------------------------------------------------------------

    def _micro_batches(self, rows: list) -> list[list]:
        mbs = self.opts.micro_batch_size
        return [rows[i:i + mbs] for i in range(0, len(rows), mbs)]

    def _check_shard(self, shard) -> None:
        if (shard.rank, shard.world) != (self.rank, self.world_size):
            raise ValueError(f"rank {self.rank} of {self.world_size} received the shard of rank {shard.rank} of {shard.world}")

    def _forward(self, examples, name: str, num_tokens: float | None, extras: dict):
        if name == "bt":  # preference pairs: one scalar per sequence, chosen and rejected in one pass
            from rayda.algo.losses import bradley_terry_loss
            from rayda.data.pairs import collate_pairs

            batch = {k: v.to(self.device) for k, v in collate_pairs(examples, self.opts.pad_id).items()}
            scores = self.engine(**batch, use_cache=False).logits[:, 0]
            return bradley_terry_loss(scores[:len(examples)], scores[len(examples):], num_tokens)
        batch = {k: v.to(self.device) for k, v in collate(examples, self.opts.pad_id).items()}
        # Rows may carry per-row loss inputs (RL: advantages, old and reference log-probs).
        row_inputs = getattr(examples[0], "loss_inputs", None)
        if row_inputs is not None:
            width = batch["input_ids"].shape[1] - 1
            extras = {**extras, **{k: v.to(self.device) for k, v in row_inputs(examples, width).items()}}
        if extras.get("kl_kind") == "full":  # the exact KL needs the reference's whole distribution
            with torch.no_grad():
                extras = {**extras, "ref_logits": self._logits(batch, reference=True)[:, :-1]}
        out = self.engine(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
        logits, labels, mask = next_token(out.logits, batch["input_ids"], batch["loss_mask"])
        return LOSSES[name](logits, labels, mask, num_tokens, **extras)

    def train_step(self, shard, loss: str = "sft", **extras) -> dict:
        """One optimizer step on a global batch of `Example`s, of which this rank holds `shard`
        (`rayda.data.packed.Shard`: rows[rank::world]).

        Returns this rank's {"nll_sum", "tokens", "lr", "grad_norm"} plus any other `*_sum` statistic
        the loss reports (GRPO: kl_sum, pg_sum, clipped_sum); the driver sums over ranks.
        """
        self._check_shard(shard)
        expected = self.opts.rows_per_step(self.world_size)
        if shard.total_rows != expected:
            raise ValueError(f"a step needs exactly micro_batch_size x grad_accum x world_size = {expected} rows, got {shard.total_rows}")
        rows, total_tokens = shard.unpack(), shard.total_targets
        self.engine.train()
        nll, tokens, sums = 0.0, 0.0, {}
        lr = self.engine.get_lr()[0]
        for mb in self._micro_batches(rows):
            # x world: DeepSpeed averages gradients over ranks, and the divisor already counts all of them.
            value, stats = self._forward(mb, loss, total_tokens / self.world_size, extras)
            self.engine.backward(value, scale_wrt_gas=False)
            self.engine.step()
            nll += float(stats["nll_sum"])
            tokens += float(stats["tokens"])
            for k, v in stats.items():
                if k.endswith("_sum") and k != "nll_sum":
                    sums[k] = sums.get(k, 0.0) + float(v)
                elif k.endswith("_max"):
                    sums[k] = max(sums.get(k, float("-inf")), float(v))
        norm = self.engine.get_global_grad_norm()
        return {"nll_sum": nll, "tokens": tokens, "lr": lr, "grad_norm": None if norm is None else float(norm), **sums}

    @torch.no_grad()
    def logprobs(self, shard, reference: bool = False, temperature: float = 1.0) -> list[np.ndarray]:
        """log p(input_ids[t + 1] | prefix) (float32) of every row of this rank's `shard`, under the
        current policy or (`reference=True`) the frozen reference: the weights this learner started from.
        With `temperature` T, p is softmax(logits / T): the distribution rollouts sampled at T.

        The reference here is a plain copy of the starting model on every rank, loaded at first use;
        it is never trained or sharded (under ZeRO-3 each rank holds it whole: fine for small policies;
        a large one wants a reference group, `pools.reference`, whose frozen ranks answer
        `logprobs(shard)` with their own sharded weights). Every rank runs the same number of forward
        passes, as in `eval_loss`. The driver interleaves the shards back into the order of rows.
        """
        from rayda.algo.losses import token_logprobs

        self._check_shard(shard)
        self.engine.eval()
        mbs, rows = self.opts.micro_batch_size, shard.unpack()
        out: list[np.ndarray] = []
        for i in range(0, shard.per_rank, mbs):
            mb = rows[i:i + mbs]
            # a rank whose shard ran out runs a pass whose result is dropped (ZeRO-3: every rank must)
            batch = {k: v.to(self.device) for k, v in collate(mb or self._filler(rows), self.opts.pad_id).items()}
            logits = self._logits(batch, reference)
            lp = token_logprobs(logits[:, :-1], batch["input_ids"][:, 1:], temperature).float().cpu().numpy()
            out += [lp[j, : len(e.input_ids) - 1].copy() for j, e in enumerate(mb)]
        return out

    @staticmethod
    def _filler(rows: list, pairs: bool = False) -> list:
        """A row for a pass whose result is thrown away (this rank's shard ran out before the others')."""
        from rayda.data.pairs import PairRow
        from rayda.data.sft import Example

        return rows[:1] or [PairRow((0, 0), (0, 0)) if pairs else Example((0, 0), (0, 0))]

    def _logits(self, batch: dict, reference: bool = False):
        """The policy's logits, or the frozen reference's: with LoRA the same weights with the adapters
        switched off (no copy), else a whole copy of the starting model (`_reference`)."""
        kw = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
        if not reference:
            return self.engine(**kw).logits
        if self.lora:
            with self.engine.module.disable_adapter():
                return self.engine.module(**kw).logits
        return self._reference()(**kw).logits

    def _reference(self):
        if getattr(self, "reference", None) is None:
            from transformers import AutoModelForCausalLM

            dtype = getattr(torch, self.decision.dtype)
            self.reference = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=dtype).to(self.device)
            self.reference.requires_grad_(False)
        return self.reference

    @torch.no_grad()
    def eval_loss(self, shard, loss: str = "sft") -> dict:
        """Summed NLL and token count of this rank's `shard` of the held-out rows (no update), and any
        other `*_sum` the loss reports (`bt`: correct_sum, margin_sum; its tokens are pairs).

        Every rank runs the same number of forward passes (padding with a pass whose result is thrown
        away): under ZeRO-3 each forward is a collective, and a rank that stopped early would leave the
        others waiting forever.
        """
        self._check_shard(shard)
        self.engine.eval()
        mbs, rows = self.opts.micro_batch_size, shard.unpack()
        sums: dict[str, float] = {"nll_sum": 0.0, "tokens": 0.0}
        for i in range(0, shard.per_rank, mbs):
            mb = rows[i:i + mbs]
            _, stats = self._forward(mb or self._filler(rows, loss == "bt"), loss, None, {})
            if mb:
                for k, v in stats.items():
                    if k == "tokens" or k.endswith("_sum"):
                        sums[k] = sums.get(k, 0.0) + float(v)
        return sums

    # ---- checkpoints ----------------------------------------------------------------------------

    def save_checkpoint(self, directory: str, tag: str, client_state: dict) -> None:
        """DeepSpeed state (weights, optimizer, scheduler) + the driver's `client_state` + this rank's RNG."""
        self.engine.save_checkpoint(directory, tag=tag, client_state=client_state)
        torch.save(_rng_state(), Path(directory) / tag / f"rng_rank{self.rank}.pt")
        torch.distributed.barrier()

    def load_checkpoint(self, directory: str) -> dict | None:
        """Resume from the latest checkpoint in `directory`; its `client_state`, or None if there is none."""
        if not (Path(directory) / "latest").exists():
            return None
        path, client_state = self.engine.load_checkpoint(directory)
        if path is None:
            raise RuntimeError(f"rank {self.rank}: DeepSpeed could not load the checkpoint in {directory}")
        rng = Path(path) / f"rng_rank{self.rank}.pt"
        if rng.exists():
            _set_rng_state(torch.load(rng, weights_only=False))
        return client_state

    def options(self) -> dict:
        return asdict(self.opts)
