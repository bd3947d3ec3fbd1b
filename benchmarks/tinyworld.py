"""Tiny-world figures, printed as ONE JSON line.

Builds (or loads from the cache) the tiny recipe's world, the one `make demo` and the tests use (its
`tinyworld:` section and `spec.token_budget`), and reports its build time, size and the base
model's held-out figures from the build report (sampled at temperature 1.0, without the spec); then
measures generation throughput on the same held-out prompts and the same number of new tokens through
vLLM and through transformers `generate`, in this run, and their ratio. It exits with an error, printing
no figures, when fewer of the world's held-out completions than --min-well-formed are well formed
(`tests/test_tinyworld.py`: the full world reaches 0.9) or vLLM generated fewer tokens than it was timed for.

    python benchmarks/tinyworld.py [--prompts 64] [--max-tokens 128] [--spec-token-budget N]
                                   [--pretrain-steps N] [--cache-dir DIR] [--no-vllm] [--min-well-formed 0.9]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


def hf_tokens_per_s(world, conversations, max_tokens: int) -> float:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rayda.tinyworld.model import torch_threads
    from rayda.tinyworld.tokenizer import PAD, chat_ids

    tok = AutoTokenizer.from_pretrained(world.model_dir)
    model = AutoModelForCausalLM.from_pretrained(world.model_dir, dtype=torch.float32).eval()
    pad = tok.convert_tokens_to_ids(PAD)
    prompts = [chat_ids(tok, c, add_generation_prompt=True) for c in conversations]
    width = max(map(len, prompts))
    ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
    mask = (ids != pad).long()
    with torch_threads(), torch.no_grad():
        torch.manual_seed(0)
        t = time.time()
        out = model.generate(
            input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0,
            max_new_tokens=max_tokens, min_new_tokens=max_tokens, pad_token_id=pad,
        )
        dt = time.time() - t
    return (out.shape[1] - width) * len(prompts) / dt


def vllm_tokens_per_s(world, conversations, max_tokens: int) -> tuple[float, float]:
    import vllm

    t = time.time()
    llm = vllm.LLM(
        model=str(world.model_dir), dtype="float32", enforce_eager=True, max_model_len=1024,
        gpu_memory_utilization=0.2, seed=0,
    )
    start = time.time() - t
    params = vllm.SamplingParams(temperature=1.0, max_tokens=max_tokens, ignore_eos=True, seed=0)
    llm.chat(conversations[:2], params, use_tqdm=False)  # warm-up
    t = time.time()
    outs = llm.chat(conversations, params, use_tqdm=False)
    dt = time.time() - t
    n = sum(len(o.outputs[0].token_ids) for o in outs)
    if n != len(conversations) * max_tokens:  # ignore_eos: every prompt gets exactly max_tokens
        sys.exit(f"tinyworld: vLLM generated {n} tokens, not {len(conversations)} x {max_tokens}; no figures")
    return n / dt, start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--spec-token-budget", type=int, default=None, help="override the tiny recipe's spec.token_budget")
    ap.add_argument("--pretrain-steps", type=int, default=None, help="override the tiny recipe's tinyworld.pretrain_steps")
    ap.add_argument("--cache-dir", default=None, help="override where worlds are cached")
    ap.add_argument("--no-vllm", action="store_true")
    ap.add_argument("--min-well-formed", type=float, default=0.9, help="below this the world is broken: no figures")
    args = ap.parse_args()

    from rayda.config import load_recipe
    from rayda.spec import default_spec_dir, load_spec
    from rayda.tinyworld.build import build

    spec, recipe = load_spec(default_spec_dir()), load_recipe("tiny")
    t = time.time()
    cfg = dataclasses.replace(recipe.tinyworld, cache_dir=args.cache_dir or recipe.tinyworld.cache_dir)
    if args.pretrain_steps is not None:
        cfg = dataclasses.replace(cfg, pretrain_steps=args.pretrain_steps)
    budget = recipe.spec.token_budget if args.spec_token_budget is None else args.spec_token_budget
    world = build(spec, cfg, spec_token_budget=budget, progress=False)
    call_seconds = time.time() - t
    r = world.report
    if not r["eval"]["well_formed"] >= args.min_well_formed:
        sys.exit(f"tinyworld: held-out well-formed {r['eval']['well_formed']} < {args.min_well_formed}: "
                 f"the world at {world.model_dir} is not well formed; no figures")
    conversations = [row["messages"] for row in world.prompts("heldout")[: args.prompts]]

    out = {
        "bench": "tinyworld",
        "build_seconds": r["build_seconds"],
        "pretrain_seconds": r["pretrain_seconds"],
        "from_cache": call_seconds < 5,
        "pretrain_steps": cfg.pretrain_steps,
        "pretrain_tokens_per_s": r["pretrain_tokens_per_s"],
        "parameters": r["parameters"],
        "vocab_size": r["vocab_size"],
        "unseen_heldout_token_share": r["unseen_heldout_token_share"],
        "well_formed": r["eval"]["well_formed"],
        "consistent": r["eval"]["consistent"],
        "heldout_behaviour_accuracy": r["eval"]["behaviour_accuracy"],
        "citation_valid": r["eval"]["citation_valid"],
        "eval_temperature": r["eval"]["temperature"],
        # with spec(category) in context, on training prompts: what data generation starts from
        "with_spec_behaviour_accuracy": r["eval_with_spec"]["behaviour_accuracy"],
        "with_spec_citation_valid": r["eval_with_spec"]["citation_valid"],
        "gen_prompts": len(conversations),
        "gen_max_tokens": args.max_tokens,
        "cpus": len(os.sched_getaffinity(0)),
    }
    from rayda.tinyworld.model import default_threads

    out["hf_torch_threads"] = default_threads()
    out["hf_tokens_per_s"] = round(hf_tokens_per_s(world, conversations, args.max_tokens), 1)
    if not args.no_vllm:
        tps, start = vllm_tokens_per_s(world, conversations, args.max_tokens)
        out["vllm_tokens_per_s"] = round(tps, 1)
        out["vllm_engine_start_s"] = round(start, 1)
        out["vllm_over_hf"] = round(tps / out["hf_tokens_per_s"], 3)
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
