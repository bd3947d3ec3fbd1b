#!/usr/bin/env python
"""One-GPU check of the learner's CUDA, bf16 and ZeRO path, on a machine with only torch and
transformers (DeepSpeed optional). Prints ONE JSON line on stdout; everything else goes to stderr.

    python scripts/gpu_check.py                 # CUDA: a few bf16 steps in torch, then DeepSpeed ZeRO-2
    python scripts/gpu_check.py --cpu --steps 2 # the same steps on CPU in fp32 (a smoke check)

What runs: a tiny Llama-like model built from a config (no download) trains for `--steps` optimizer
steps on one fixed batch (so the loss must fall) with rayda's own SFT loss (`rayda.algo.losses`), in
the dtype rayda's learner would choose on this device (`rayda.engines.device.decide`: bf16 on a CUDA
device that supports it). Then, in a child process (so a DeepSpeed that fails to import, to build an
op or even crashes cannot take the first part down), a single-process DeepSpeed ZeRO-2 engine with
rayda's config builder (`rayda.engines.deepspeed_engine.ds_config`) does the same steps. DeepSpeed
that is missing or broken is reported as `"deepspeed": {"ok": false, "error": ...}`, not a failure.

Without CUDA (and without --cpu) it prints `"ran": false` and exits 0. Exit status 1 only when the
torch part itself failed. rayda is taken from this checkout (no install needed); if a rayda module
does not import, the script falls back to an inline copy and says so under "rayda".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


SIZES = {  # the model and batch: small on CPU, so the smoke check takes seconds
    "cuda": {"batch": 8, "seq": 256, "hidden": 512, "layers": 4, "vocab": 4096},
    "cpu": {"batch": 4, "seq": 32, "hidden": 64, "layers": 2, "vocab": 256},
}


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cpu", action="store_true", help="run the same steps on CPU in fp32 (smoke check)")
    ap.add_argument("--steps", type=int, default=20)
    for name in SIZES["cuda"]:
        ap.add_argument(f"--{name}", type=int, default=None, help=f"default {SIZES['cuda'][name]} ({SIZES['cpu'][name]} with --cpu)")
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--no-deepspeed", action="store_true", help="skip the DeepSpeed ZeRO-2 part")
    ap.add_argument("--deepspeed-timeout", type=float, default=900.0,
                    help="seconds the DeepSpeed child may take (a JIT op build can be slow)")
    ap.add_argument("--part", choices=("all", "deepspeed"), default="all", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    for name, value in SIZES["cpu" if args.cpu else "cuda"].items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    return args


# ---- rayda pieces, with inline fallbacks ---------------------------------------------------------

def rayda_decide():
    try:
        from rayda.engines.device import decide

        return decide, "rayda.engines.device.decide"
    except Exception as e:  # noqa: BLE001 - report, do not fail
        def decide(cuda, bf16, dtype="auto"):
            from types import SimpleNamespace

            dtype = ("bfloat16" if cuda and bf16 else "float32") if dtype == "auto" else dtype
            return SimpleNamespace(accelerator="cuda" if cuda else "cpu", backend="nccl" if cuda else "gloo", dtype=dtype)

        return decide, f"inline ({type(e).__name__}: {e})"


def rayda_loss():
    """loss(logits, input_ids, loss_mask) -> scalar: the learner's `sft` loss."""
    try:
        from rayda.algo.losses import LOSSES, next_token

        def loss(logits, input_ids, loss_mask):
            return LOSSES["sft"](*next_token(logits, input_ids, loss_mask), None)[0]

        return loss, "rayda.algo.losses.sft_loss"
    except Exception as e:  # noqa: BLE001
        import torch.nn.functional as F

        def loss(logits, input_ids, loss_mask):
            lg, lb, m = logits[:, :-1].float(), input_ids[:, 1:], loss_mask[:, 1:].float()
            nll = F.cross_entropy(lg.reshape(-1, lg.shape[-1]), lb.reshape(-1), reduction="none")
            return (nll * m.reshape(-1)).sum() / m.sum().clamp(min=1)

        return loss, f"inline ({type(e).__name__}: {e})"


def ds_config_for(args, decision) -> tuple[dict, str]:
    try:
        from rayda.engines.deepspeed_engine import LearnerOptions, ds_config

        opts = LearnerOptions(zero_stage=2, micro_batch_size=args.batch, grad_accum=1, lr=args.lr, warmup_steps=0,
                              total_steps=args.steps, dtype=decision.dtype)
        return ds_config(opts, 1, decision), "rayda.engines.deepspeed_engine.ds_config"
    except Exception as e:  # noqa: BLE001
        return {"train_micro_batch_size_per_gpu": args.batch, "gradient_accumulation_steps": 1,
                "train_batch_size": args.batch, "gradient_clipping": 1.0, "zero_optimization": {"stage": 2},
                "bf16": {"enabled": decision.dtype == "bfloat16"}, "fp16": {"enabled": decision.dtype == "float16"},
                "zero_allow_untested_optimizer": True, "zero_force_ds_cpu_optimizer": False,
                "steps_per_print": 10**9}, f"inline ({type(e).__name__}: {e})"


# ---- the model and the data ----------------------------------------------------------------------

def tiny_model(args, dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=2 * args.hidden,
                      num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=args.seq, tie_word_embeddings=False, use_cache=False)
    torch.manual_seed(0)
    return LlamaForCausalLM(cfg).to(dtype)


def fixed_batch(args, device):
    """One batch of random tokens; the first quarter of every row is 'prompt' (mask 0)."""
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=g)
    mask = torch.ones_like(ids)
    mask[:, : args.seq // 4] = 0
    return {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device), "loss_mask": mask.to(device)}


def peak_mb(device) -> float | None:
    import torch

    if device == "cuda":
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    try:
        import resource

        return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)  # peak RSS (Linux: KiB)
    except Exception:  # noqa: BLE001
        return None


def train(args, step_fn, device) -> dict:
    """Run `step_fn()` (one optimizer step, returning the loss) `args.steps` times; tokens/s leaves out
    the first step (allocation, kernel selection) when there is more than one."""
    import torch

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    losses, t_first = [], None
    sync()
    t0 = time.perf_counter()
    for i in range(args.steps):
        losses.append(float(step_fn()))
        if i == 0:
            sync()
            t_first = time.perf_counter()
    sync()
    t1 = time.perf_counter()
    timed_steps, seconds = (args.steps - 1, t1 - t_first) if args.steps > 1 else (1, t1 - t0)
    return {"loss_first": round(losses[0], 4), "loss_last": round(losses[-1], 4),
            "loss_decreased": losses[-1] < losses[0],
            "tokens_per_s": round(timed_steps * args.batch * args.seq / max(seconds, 1e-9), 1),
            "peak_memory_mb": peak_mb(device)}


# ---- the two parts -------------------------------------------------------------------------------

def torch_part(args, device, decision) -> dict:
    import torch

    loss_fn, loss_name = rayda_loss()
    model = tiny_model(args, getattr(torch, decision.dtype)).to(device)
    model.train()
    batch = fixed_batch(args, device)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95))
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    def step():
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
        loss = loss_fn(out.logits, batch["input_ids"], batch["loss_mask"])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()

    result = train(args, step, device)
    result["params"] = sum(p.numel() for p in model.parameters())
    return result, loss_name


def deepspeed_part(args) -> dict:
    """Single-process DeepSpeed ZeRO-2 (runs in the child)."""
    import torch

    cuda = not args.cpu
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK="0", WORLD_SIZE="1", LOCAL_RANK="0")
    decide, _ = rayda_decide()
    decision = decide(cuda, bool(cuda and torch.cuda.is_bf16_supported()), "auto")
    if decision.accelerator == "cpu":  # before deepspeed is imported, as the learner does
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    out: dict = {"ok": False}
    t0 = time.perf_counter()
    try:
        import deepspeed

        out["version"] = deepspeed.__version__
        if not cuda:
            try:  # the learner's CPU shortcut: no JIT build of the shared-memory op
                from rayda.engines.deepspeed_engine import _skip_cpu_shm_op

                _skip_cpu_shm_op()
            except Exception:  # noqa: BLE001
                pass
        from deepspeed.accelerator import get_accelerator

        out["accelerator"] = get_accelerator().device_name()
        deepspeed.init_distributed(dist_backend=decision.backend)
        config, out["config"] = ds_config_for(args, decision)
        loss_fn, _ = rayda_loss()
        model = tiny_model(args, getattr(torch, decision.dtype))
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95))
        engine, *_ = deepspeed.initialize(model=model, optimizer=opt, config=config)
        device = "cuda" if cuda else "cpu"
        batch = fixed_batch(args, engine.device)
        if cuda:
            torch.cuda.reset_peak_memory_stats()

        def step():
            o = engine(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
            loss = loss_fn(o.logits, batch["input_ids"], batch["loss_mask"])
            engine.backward(loss)
            engine.step()
            return loss.detach()

        out.update(train(args, step, device), zero_stage=config["zero_optimization"]["stage"], dtype=decision.dtype,
                   bf16_enabled=bool(config.get("bf16", {}).get("enabled")), ok=True)
    except BaseException as e:  # noqa: BLE001 - ImportError, op build failures, ...: all reported
        out["error"] = f"{type(e).__name__}: {e}"[:2000]
    finally:
        with contextlib.suppress(Exception):
            if torch.distributed.is_initialized():
                torch.distributed.destroy_process_group()
    out["seconds"] = round(time.perf_counter() - t0, 2)
    return out


def deepspeed_child(args, argv) -> dict:
    """The DeepSpeed part in its own process: an import error, an op that fails to build, or a crash
    there is reported, and the first part's result still comes back."""
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--part", "deepspeed"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=args.deepspeed_timeout)
    except subprocess.TimeoutExpired as e:
        err = e.stderr or ""
        err = err.decode(errors="replace") if isinstance(err, bytes) else err
        return {"ok": False, "error": f"timed out after {args.deepspeed_timeout:.0f} s", "stderr_tail": err[-1500:]}
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                return json.loads(line)
    return {"ok": False, "error": f"the DeepSpeed child exited {p.returncode} without a result",
            "stderr_tail": p.stderr[-1500:]}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse(argv)
    t0 = time.perf_counter()
    real_stdout = sys.stdout
    result: dict = {}
    code = 0
    with contextlib.redirect_stdout(sys.stderr):  # library chatter (DeepSpeed logs to stdout) off the JSON line
        if args.part == "deepspeed":
            result = deepspeed_part(args)
        else:
            code = run(args, argv, result)
            result["seconds"] = round(time.perf_counter() - t0, 2)
    print(json.dumps(result), file=real_stdout, flush=True)
    return code


def run(args, argv, result: dict) -> int:
    import torch

    cuda = torch.cuda.is_available()
    result.update(torch=torch.__version__, cuda=torch.version.cuda, cuda_available=cuda)
    if not cuda and not args.cpu:
        result.update(ran=False, reason="cuda unavailable: nothing checked (--cpu runs the same steps on CPU in fp32)")
        return 0
    device = "cpu" if args.cpu else "cuda"
    bf16 = bool(cuda and torch.cuda.is_bf16_supported())
    decide, decide_from = rayda_decide()
    decision = decide(device == "cuda", bf16 and device == "cuda", "auto")
    result.update(ran=True, mode=device, bf16_supported=bf16, dtype=decision.dtype,
                  decision={"accelerator": decision.accelerator, "backend": decision.backend, "dtype": decision.dtype})
    if cuda:
        props = torch.cuda.get_device_properties(0)
        result.update(device_name=props.name, capability=f"{props.major}.{props.minor}",
                      memory_gb=round(props.total_memory / 2**30, 1))
    else:
        result["device_name"] = "cpu"
    try:
        import transformers

        result["transformers"] = transformers.__version__
        part, loss_name = torch_part(args, device, decision)
        result.update(steps=args.steps, model={"params": part.pop("params"), "layers": args.layers,
                      "hidden": args.hidden, "vocab": args.vocab, "seq": args.seq, "batch": args.batch}, **part)
        result["rayda"] = {"loss": loss_name, "decide": decide_from}
        ok = True
    except Exception as e:  # noqa: BLE001
        result["error"] = f"{type(e).__name__}: {e}"[:2000]
        ok = False
    if cuda:
        torch.cuda.empty_cache()  # the torch part's blocks, before the DeepSpeed child needs the device
    if args.no_deepspeed:
        result["deepspeed"] = {"ok": False, "error": "skipped (--no-deepspeed)"}
    else:
        result["deepspeed"] = deepspeed_child(args, argv)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
