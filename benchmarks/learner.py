"""Learner throughput: DeepSpeed on 1 and 2 ranks against a plain PyTorch loop, and model-FLOPs use.

    .venv/bin/python benchmarks/learner.py [--steps 4] [--rounds 3] [--seq 256] [--zero-stage 2]

Prints one JSON line. Every configuration trains the same model (tiny-world sized Llama, random
weights) on the same batches. Other work on the machine skews single measurements, so each
configuration is measured in several interleaved rounds (both learner groups stay up) and its best
round counts; the 1-minute load average is reported beside the figures. one optimizer step = 16 rows of `--seq` tokens in micro-batches of 8
(plain loop: 2 accumulated micro-batches; 1 rank: grad_accum 2; 2 ranks: one micro-batch each). Each
configuration gets the whole machine (1 rank: all CPUs; 2 ranks: half each). A CPU "MFU" is the
achieved model FLOP/s (6 x matmul parameters + attention, per token) over the FLOP/s of a large
matrix product measured in the same run with the same threads. Runs unchanged on a GPU machine.
It prints no figures (exits with an error) unless every configuration's loss was finite and fell by
LOSS_DROP nats from its first step to its last: figures from steps that did not train mean nothing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

ROWS, MICRO = 16, 8
LEARNABLE_VOCAB = 64
"""Batches draw their tokens from the first 64 ids of 640. Uniform over all 640, the random model is
already near the best prediction and the loss cannot show training (the plain loop, 13 steps: 6.52 ->
6.50); over 64 it falls (6.52 -> 5.05). Throughput does not depend on which ids the tokens are."""
LOSS_DROP = 0.1
"""Nats the loss must fall from a configuration's first step to its last."""


def make_model_dir(out: Path, seq: int) -> tuple[Path, dict]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=640, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=max(seq, 512),
                      tie_word_embeddings=True)
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out)
    body = sum(p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n and p.ndim == 2)
    matmul_params = body + cfg.vocab_size * cfg.hidden_size  # the tied lm_head is a matmul too
    # Per trained token: 6 FLOPs per matmul parameter (forward 2, backward 4), plus attention scores
    # and values, 12 x layers x width x (mean context = seq/2) with the causal mask.
    flops_per_token = 6 * matmul_params + 12 * cfg.num_hidden_layers * cfg.hidden_size * seq // 2
    return out, {"params": sum(p.numel() for p in model.parameters()), "flops_per_token": flops_per_token}


def batches(steps: int, seq: int):
    import random

    from rayda.data.sft import Example

    rng = random.Random(0)
    half = seq // 2
    return [[Example(tuple(rng.randrange(LEARNABLE_VOCAB) for _ in range(seq)), (0,) * half + (1,) * (seq - half))
             for _ in range(ROWS)] for _ in range(steps)]


def matmul_flops(threads: int, device: str, dtype) -> float:
    import torch

    torch.set_num_threads(threads)
    n = 2048 if device == "cpu" else 8192
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    reps = 6 if device == "cpu" else 50
    if device == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(reps):
        a @ b
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - t)


class PlainTorch:
    """The reference: the same loss, micro-batches and clipping in one process, no DeepSpeed."""

    def __init__(self, model_dir: Path, threads: int, device: str, dtype):
        import torch
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(threads)
        self.device = device
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to(device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=3e-4, betas=(0.9, 0.95))

    def step(self, rows) -> float:
        """One optimizer step; returns its mean loss per target token."""
        import torch

        from rayda.algo.losses import next_token, sft_loss
        from rayda.data.sft import collate

        total, nll = sum(e.num_targets for e in rows), 0.0
        for i in range(0, ROWS, MICRO):
            b = {k: v.to(self.device) for k, v in collate(rows[i:i + MICRO], 0).items()}
            logits = self.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            loss, stats = sft_loss(*next_token(logits, b["input_ids"], b["loss_mask"]), num_tokens=total)
            loss.backward()
            nll += float(stats["nll_sum"])
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        if self.device == "cuda":
            torch.cuda.synchronize()
        return nll / total


def group_step(group, rows) -> float:
    """One optimizer step on every rank; the mean loss per target token over all ranks."""
    parts = group.run_sharded("train_step", rows)
    return sum(p["nll_sum"] for p in parts) / sum(p["tokens"] for p in parts)


def learner_group(model_dir: Path, ranks: int, cpus: int, gpus: int, steps: int, stage: int):
    from rayda.actors.group import ActorGroup
    from rayda.actors.learner import Learner
    from rayda.config import PoolConfig
    from rayda.engines.deepspeed_engine import LearnerOptions

    opts = LearnerOptions(zero_stage=stage, micro_batch_size=MICRO, grad_accum=ROWS // (MICRO * ranks),
                          total_steps=steps, warmup_steps=0)
    pool = PoolConfig(actors=ranks, cpus_per_actor=max(1, cpus // ranks), gpus_per_actor=1 if gpus else 0)
    return ActorGroup(Learner, pool, f"bench-learner{ranks}", setup_args=(str(model_dir), opts))


def tokens_per_s(step_fn, data, losses: list) -> float:
    t0 = time.perf_counter()
    for rows in data:
        losses.append(step_fn(rows))
    return len(data) * ROWS * len(data[0][0].input_ids) / (time.perf_counter() - t0)


def training_failures(losses: dict) -> list[str]:
    """Configurations whose loss was not finite or did not fall by LOSS_DROP from first step to last."""
    return [f"{k}: losses {[round(x, 3) for x in v]}" for k, v in losses.items()
            if v and not (all(math.isfinite(x) for x in v) and v[-1] < v[0] - LOSS_DROP)]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4, help="optimizer steps per configuration and round")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds (the best counts)")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--zero-stage", type=int, default=2)
    args = ap.parse_args(argv)

    import ray
    import torch

    from rayda.config import RunConfig
    from rayda.engines.deepspeed_engine import resolve_dtype
    from rayda.ray_utils import init_ray

    device = "cuda" if torch.cuda.is_available() else "cpu"
    gpus = torch.cuda.device_count()
    cpus = len(os.sched_getaffinity(0))
    dtype = getattr(torch, resolve_dtype("auto"))
    results: dict = {"torch": [], 1: [], 2: []}
    losses: dict = {"torch": [], 1: [], 2: []}
    peaks = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, info = make_model_dir(Path(tmp) / "model", args.seq)
        data = batches(1 + args.rounds * args.steps, args.seq)
        init_ray(RunConfig(num_cpus=2 * cpus))  # both groups stay up; only one trains at a time
        plain = PlainTorch(model_dir, cpus, device, dtype)
        groups = {r: learner_group(model_dir, r, cpus, gpus, len(data), args.zero_stage)
                  for r in (1, 2) if device == "cpu" or gpus >= r}
        try:
            losses["torch"].append(plain.step(data[0]))  # warm-up
            for r, g in groups.items():
                losses[r].append(group_step(g, data[0]))
            for k in range(args.rounds):
                chunk = data[1 + k * args.steps: 1 + (k + 1) * args.steps]
                peaks.append(matmul_flops(cpus, device, dtype))
                results["torch"].append(tokens_per_s(plain.step, chunk, losses["torch"]))
                for r, g in groups.items():
                    results[r].append(tokens_per_s(lambda rows, g=g: group_step(g, rows), chunk, losses[r]))
        finally:
            for g in groups.values():
                g.shutdown()
            ray.shutdown()
    failed = training_failures(losses)
    if failed:
        sys.exit(f"learner: the loss did not fall by {LOSS_DROP} or was not finite; no figures: {'; '.join(failed)}")
    peak = max(peaks)
    torch_tps = max(results["torch"])
    ds = {r: max(results[r]) if results[r] else None for r in (1, 2)}

    def mfu(tps):
        return None if tps is None else round(tps * info["flops_per_token"] / peak, 4)

    def ratio(a, b):
        return None if a is None or b is None else round(a / b, 3)

    print(json.dumps({
        "benchmark": "learner", "device": torch.cuda.get_device_name() if device == "cuda" else f"cpu x{cpus}",
        "dtype": str(dtype).replace("torch.", ""), "zero_stage": args.zero_stage, "params": info["params"],
        "seq": args.seq, "rows_per_step": ROWS, "steps_per_round": args.steps, "rounds": args.rounds,
        "load_avg_1m": round(os.getloadavg()[0], 2),
        "tokens_per_s": {"torch": round(torch_tps, 1), "deepspeed_1": ds[1] and round(ds[1], 1),
                         "deepspeed_2": ds[2] and round(ds[2], 1)},
        "ratio_deepspeed_1_vs_torch": ratio(ds[1], torch_tps),
        "ratio_deepspeed_2_vs_torch": ratio(ds[2], torch_tps),
        "scaling_2_vs_1_rank": ratio(ds[2], ds[1]),
        "matmul_flops_per_s": round(peak, 1),
        "mfu": {"torch": mfu(torch_tps), "deepspeed_1": mfu(ds[1]), "deepspeed_2": mfu(ds[2])},
        "tokens_per_s_rounds": {str(k): [round(x, 1) for x in v] for k, v in results.items()},
        "loss_first_last": {str(k): [round(v[0], 3), round(v[-1], 3)] for k, v in losses.items() if v},
    }))


if __name__ == "__main__":
    main()
