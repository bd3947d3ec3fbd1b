"""Tokens per second of one vLLM engine in the dtype rayda starts it with (`auto`) against bfloat16.

    python benchmarks/engine_dtype.py [--prompts 16] [--model PATH]

On CPU, vLLM's own `auto` runs an fp32 checkpoint in bfloat16; rayda's `auto` there is float32
(`rayda.engines.device.engine_dtype`). This measures what that choice is worth, in one process, on
gen-sft's requests (N of the tiny world's training prompts, spread over its categories, with the spec
in context; `gen_sft`'s samples per prompt, temperature and max_tokens), and on the same prompts
without the spec (RL's and evaluation's requests). Each engine runs every batch once to warm up, then once timed.

Prints one JSON line: per dtype and request kind, tokens/s, and `auto_over_bfloat16` for each kind.
Exits with an error, printing no figures, when any timed sample came back empty.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


KV_BYTES = 1 << 30
"""Each engine's KV cache: the same for both dtypes' engines, and more than 16 prompts x 8 samples need."""


def requests(recipe, n_prompts: int, model: str) -> dict[str, list[list[dict]]]:
    from rayda import templates
    from rayda.context import RunContext

    ctx = RunContext(recipe)
    every = ctx.prompts()
    prompts = every[:: max(1, len(every) // n_prompts)][:n_prompts]  # spread over the categories
    texts = ctx.spec_texts(sorted({p.category for p in prompts}), model)
    return {
        "with_spec": [templates.generation_messages(p.messages, texts[p.category]) for p in prompts],
        "without_spec": [list(p.messages) for p in prompts],
    }


def timed(engine, chats, gen) -> tuple[float, int, int]:
    """(seconds, tokens generated, empty samples) of one batch."""
    t0 = time.perf_counter()
    out = engine.chat(chats, n=gen.samples_per_prompt, temperature=gen.temperature, max_tokens=gen.max_tokens)
    seconds = time.perf_counter() - t0
    samples = [s for per_prompt in out for s in per_prompt]
    return seconds, sum(len(s.token_ids) for s in samples), sum(not s.token_ids for s in samples)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--model", default=None, help="model path (default: the tiny world's)")
    args = ap.parse_args()

    from rayda.config import load_recipe
    from rayda.context import RunContext
    from rayda.engines.vllm_engine import EngineConfig, VllmEngine

    recipe = load_recipe("tiny")
    model = args.model or RunContext(recipe).policy
    chats = requests(recipe, args.prompts, model)
    line: dict = {"benchmark": "engine_dtype", "prompts": args.prompts, "samples_per_prompt": recipe.gen_sft.samples_per_prompt}
    for dtype in ("auto", "bfloat16"):
        # An explicit KV cache: with the engine core in this process, vLLM-CPU would size it as the
        # memory fraction minus this process's RSS, which still holds the first engine's cache.
        engine = VllmEngine(EngineConfig(model, dtype=dtype, seed=0, extra={"kv_cache_memory_bytes": KV_BYTES}))
        line[f"resolved_{dtype}"] = engine.dtype
        for kind, batch in chats.items():
            timed(engine, batch, recipe.gen_sft)
            seconds, tokens, empty = timed(engine, batch, recipe.gen_sft)
            if empty or not tokens:
                sys.exit(f"engine_dtype: {empty} empty samples of {len(batch) * recipe.gen_sft.samples_per_prompt} "
                         f"({dtype}, {kind}); no figures")
            line[f"tokens_per_s_{dtype}_{kind}"] = round(tokens / seconds, 1)
        del engine
    for kind in chats:
        line[f"auto_over_bfloat16_{kind}"] = round(line[f"tokens_per_s_auto_{kind}"] / line[f"tokens_per_s_bfloat16_{kind}"], 3)
    print(json.dumps(line, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
