"""A vLLM engine on CPU with its engine core in the calling process (rayda's rule) against vLLM's default,
an engine-core process and a worker process of their own.

    python benchmarks/engine_process.py [--prompts 16] [--model PATH]

`rayda.engines.device.engine_in_process`: on CPU rayda sets `VLLM_ENABLE_V1_MULTIPROCESSING=0` unless
the user set it. vLLM reads that variable once per process, so each mode runs in a fresh Python process
of its own (this script, with `--mode`); the baseline sets the variable to 1, which rayda keeps. Each
measures the seconds to build `VllmEngine` (vLLM's import included: what an actor pays) and tokens/s on
gen-sft's requests with the spec in context (`engine_dtype.requests`: N tiny-world training prompts,
gen-sft's samples per prompt, temperature and max_tokens), once to warm up, then once timed.

Prints one JSON line: per mode `start_s` and `tokens_per_s`, `start_multiprocess_over_in_process` and
`tokens_per_s_in_process_over_multiprocess`. Exits with an error, printing no figures, when a mode fails
or any timed sample came back empty.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

MODES = {"in_process": None, "multiprocess": "1"}
"""The value of VLLM_ENABLE_V1_MULTIPROCESSING each mode starts with (None: unset, rayda decides)."""


def measure(n_prompts: int, model: str | None) -> dict:
    """One engine in this process: start seconds, then timed tokens/s."""
    from engine_dtype import requests, timed

    from rayda.config import load_recipe
    from rayda.context import RunContext
    from rayda.engines.vllm_engine import EngineConfig, VllmEngine

    recipe = load_recipe("tiny")
    model = model or RunContext(recipe).policy
    chats = requests(recipe, n_prompts, model)["with_spec"]
    t0 = time.perf_counter()
    engine = VllmEngine(EngineConfig(model, seed=0))
    start_s = time.perf_counter() - t0
    timed(engine, chats, recipe.gen_sft)
    seconds, tokens, empty = timed(engine, chats, recipe.gen_sft)
    return {"start_s": round(start_s, 2), "tokens_per_s": round(tokens / seconds, 1), "empty": empty, "tokens": tokens,
            "multiprocessing_env": os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--model", default=None, help="model path (default: the tiny world's)")
    ap.add_argument("--mode", choices=list(MODES), default=None, help=argparse.SUPPRESS)  # a child: one mode
    args = ap.parse_args()
    from run import last_json_object

    if args.mode:
        print(json.dumps(measure(args.prompts, args.model)))
        return 0

    line: dict = {"benchmark": "engine_process", "prompts": args.prompts}
    for mode, value in MODES.items():
        env = {k: v for k, v in os.environ.items() if k != "VLLM_ENABLE_V1_MULTIPROCESSING"}
        if value is not None:
            env["VLLM_ENABLE_V1_MULTIPROCESSING"] = value
        cmd = [sys.executable, __file__, "--mode", mode, "--prompts", str(args.prompts)]
        cmd += ["--model", args.model] if args.model else []
        r = subprocess.run(cmd, env=env, capture_output=True, text=True)
        child = last_json_object(r.stdout)  # vLLM's engine processes also write to stdout as they shut down
        if r.returncode or child is None:
            sys.exit(f"engine_process: the {mode} engine failed (exit {r.returncode}); no figures\n{r.stderr[-2000:]}")
        if child["empty"] or not child["tokens"]:
            sys.exit(f"engine_process: {child['empty']} empty samples ({mode}); no figures")
        line[mode] = {k: child[k] for k in ("start_s", "tokens_per_s", "multiprocessing_env")}
    line["start_multiprocess_over_in_process"] = round(line["multiprocess"]["start_s"] / line["in_process"]["start_s"], 3)
    line["tokens_per_s_in_process_over_multiprocess"] = round(
        line["in_process"]["tokens_per_s"] / line["multiprocess"]["tokens_per_s"], 3)
    print(json.dumps(line, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
