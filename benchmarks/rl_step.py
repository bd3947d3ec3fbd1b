"""One RL step, taken apart: where the time goes, what a weight sync costs, what orchestration costs.

    .venv/bin/python benchmarks/rl_step.py [--steps 4] [--prompts 8] [--samples 4] [--max-tokens 64] [--sync collective]
                                           [--rollout-actors 1 2]

Runs the real driver (`rayda.stages.rl.run`: vLLM rollout actor, rubric judge actor, DeepSpeed learner,
weight sync over `--sync` + probe) on a tiny-world-sized Llama (hidden 256, 4 layers, tied embeddings, random
weights: its samples are noise, so nearly every reward is the format penalty; the judge is cheap
either way) and prints one JSON line:

- `step_s`: median seconds per step after the first (warm-up), and the split generate / judge / train / sync;
- `overhead_fraction`: (step - generate - judge - train - sync) / step: driver bookkeeping, object
  transfers and actor calls outside the timed phases;
- `sync_s_per_100mb`: seconds per 100 MB of weights to move them (broadcast and load, or save and reload), beside `memcpy_s_per_100mb`, a plain
  in-memory copy of the same bytes measured in the same run, and their ratio; the probe is reported apart.
The figures are those of the last `--rollout-actors` count (the tiny recipe's two engines by default);
with several counts the run is repeated for each and `by_rollout_actors` holds each run's step and
generate seconds, with `generate_first_over_last` and `step_first_over_last`: what the last count
saves against the first (a tiny model's decoding is one engine's Python loop on one core).
The 1-minute load average is reported too: other work on the machine skews the figures.
It exits with an error, printing no figures, unless every step ran, every probe was within
`rl.probe_tolerance` and no judge call failed.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def make_policy(out: Path, spec) -> None:
    """A random tiny-world-sized model with the tiny world's tokenizer and chat template."""
    from rayda.config import TinyWorldConfig
    from rayda.tinyworld.model import make_model
    from rayda.tinyworld.tokenizer import train_tokenizer

    texts = [spec.compile(c) for c in spec.category_ids] * 4
    tok = train_tokenizer(texts, vocab_size=640, max_length=1024)
    make_model(TinyWorldConfig(), tok, seed=0).save_pretrained(out)
    tok.save_pretrained(out)


def memcpy_seconds(nbytes: int, reps: int = 5) -> float:
    import torch

    src = torch.empty(nbytes // 4, dtype=torch.float32).uniform_()
    dst = torch.empty_like(src)
    dst.copy_(src)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t)
    return best


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--sync", choices=("collective", "files"), default="collective")
    ap.add_argument("--rollout-actors", type=int, nargs="+", default=[1, 2], metavar="N")
    args = ap.parse_args(argv)
    runs = {n: measure(args, n) for n in args.rollout_actors}
    first, last = runs[args.rollout_actors[0]], runs[args.rollout_actors[-1]]
    out = dict(last)
    if len(runs) > 1:
        out["by_rollout_actors"] = {n: {"step_s": r["step_s"], "generate_s": r["split_s"]["generate"]} for n, r in runs.items()}
        out["generate_first_over_last"] = round(first["split_s"]["generate"] / last["split_s"]["generate"], 3)
        out["step_first_over_last"] = round(first["step_s"] / last["step_s"], 3)
    print(json.dumps(out))


def measure(args, rollout_actors: int) -> dict:
    """The benchmark's figures for `args` with `rollout_actors` vLLM engines; exits with an error if the
    run did not work."""

    from rayda.config import RunConfig, load_recipe
    from rayda.io import mark_success
    from rayda.ray_utils import init_ray
    from rayda.spec import default_spec_dir, load_spec
    from rayda.stages.rl import run
    from rayda.tinyworld.prompts import make_prompts

    spec = load_spec(default_spec_dir())
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_policy(root / "checkpoints" / "sft", spec)
        mark_success(root / "checkpoints" / "sft")
        prompts = root / "prompts.jsonl"
        prompts.write_text("".join(json.dumps(r) + "\n" for r in make_prompts(spec)["train"]))
        rows = args.prompts * args.samples
        recipe = load_recipe("tiny", [
            f"run.dir={root}", f"prompts.source={prompts}", "spec.token_budget=null", f"rl.steps={args.steps}",
            f"rl.prompts_per_step={args.prompts}", f"rl.samples_per_prompt={args.samples}", f"rl.max_tokens={args.max_tokens}",
            f"rl.micro_batch_size={min(16, rows)}", f"rl.grad_accum={max(1, rows // 16)}", "rl.save_every=0", "rl.members=1",
            "rl.max_model_len=512", "rl.gpu_memory_utilization=0.1", "rl.eval_every=0", f"rl.sync={args.sync}",
            f"pools.rollout.actors={rollout_actors}"])
        init_ray(RunConfig(num_cpus=8))  # logical CPUs, as the tiny recipe: rollout, judge and learner pools on 2 cores
        t0 = time.perf_counter()
        run(recipe, progress=False)
        total = time.perf_counter() - t0
        records = [json.loads(x) for x in (root / "metrics.jsonl").read_text().splitlines()]
    metrics = [m for m in records if m.get("stage") == "rl"]  # the steps (an rl_eval record is no step)
    tolerance = recipe.rl.probe_tolerance
    probes = [m["probe_max_diff"] for m in metrics if m["probe_max_diff"] is not None]
    judge_errors = sum(m["judge_errors"] for m in metrics)
    problems = [f"{len(metrics)} of {args.steps} steps ran"] if len(metrics) != args.steps else []
    if not probes or not all(d <= tolerance for d in probes):  # `<=` is False for a NaN too
        problems.append(f"probe max diffs {probes}, tolerance {tolerance:g}")
    if judge_errors:
        problems.append(f"{judge_errors} judge errors")
    if problems:
        sys.exit(f"rl_step: {'; '.join(problems)}; no figures")
    timed = metrics[1:] or metrics
    med = lambda f: statistics.median(f(m) for m in timed)  # noqa: E731
    split = {k: round(med(lambda m: m["seconds"][k]), 4) for k in ("generate", "judge", "train", "sync")}
    step = med(lambda m: m["seconds"]["step"])
    overhead = med(lambda m: m["seconds"]["step"] - sum(m["seconds"][k] for k in split))
    nbytes = metrics[-1]["sync_bytes"]
    sync_s = med(lambda m: m["sync_seconds"]["transfer_s"])
    copy_s = memcpy_seconds(nbytes)
    per100 = 100e6 / nbytes
    return {
        "benchmark": "rl_step", "sync": args.sync, "rollout_actors": rollout_actors, "steps_timed": len(timed), "rows_per_step": rows, "max_tokens": args.max_tokens,
        "step_s": round(step, 4), "split_s": split,
        "overhead_s": round(overhead, 4), "overhead_fraction": round(overhead / step, 4),
        "sync_bytes": nbytes, "sync_s_per_100mb": round(sync_s * per100, 4),
        "memcpy_s_per_100mb": round(copy_s * per100, 5), "sync_over_memcpy": round(sync_s / copy_s, 1),
        "probe_s": round(med(lambda m: m["sync_seconds"]["probe_s"]), 4),
        "probe_max_diff": max(probes),
        "tokens_per_step": round(med(lambda m: m["response_tokens"] * rows)),
        "run_s_including_startup": round(total, 1), "load_avg_1m": round(os.getloadavg()[0], 2),
    }


if __name__ == "__main__":
    main()
