"""jemalloc (`rayda.allocator`, what the `rayda` command runs on) against the system allocator, printed as ONE
JSON line.

Times the tiny recipe's world pre-training (the longest single piece of `make demo`) for --steps steps
in fresh processes, alternating the system allocator and jemalloc --reps times each, and compares
the median seconds a step and the processes' CPU seconds. Both must end with the same weights, bit for
bit: the allocator may change the speed, not the model. It exits with an error, printing no figures,
when they differ or Ray's wheel holds no jemalloc (not Linux).

    python benchmarks/allocator.py [--steps 25] [--reps 3]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class _Stop(Exception):
    """Raised from inside the world's build once the timed pre-training has run."""


def child(steps: int) -> dict:
    """Pre-train the tiny recipe's world for `steps` steps (its transcripts, prefixes and batch size);
    the timing and a hash of the weights. The build runs up to its pre-training, which is cut short."""
    import dataclasses
    import hashlib
    import tempfile

    import rayda.tinyworld.model as model_module
    from rayda.config import load_recipe
    from rayda.spec import default_spec_dir, load_spec
    from rayda.tinyworld.build import build

    pretrain, out = model_module.pretrain, {}

    def timed(model, examples, prefixes, _steps, batch_size, lr, seed=0, progress=True):
        t = time.perf_counter()
        stats = pretrain(model, examples, prefixes, steps, batch_size, lr, seed, False)
        weights = hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in model.parameters()))
        out.update(seconds=time.perf_counter() - t, loss_last=stats["loss_last"], weights=weights.hexdigest()[:16])
        raise _Stop

    model_module.pretrain = timed  # `build` imports it at call time
    recipe = load_recipe("tiny")
    with tempfile.TemporaryDirectory() as cache:
        try:
            build(load_spec(default_spec_dir()), dataclasses.replace(recipe.tinyworld, cache_dir=cache),
                  spec_token_budget=recipe.spec.token_budget, progress=False)
        except _Stop:
            pass
    return out


def run_one(steps: int, jemalloc: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "LD_PRELOAD"}
    env["RAYDA_JEMALLOC"] = "1" if jemalloc else "0"
    cmd = [sys.executable, "-m", "rayda.allocator", sys.executable, __file__, "--child", str(steps)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"allocator: the pre-training process failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    result["cpu_seconds"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child is not None:
        print(json.dumps(child(a.child)))
        return 0

    from rayda.allocator import jemalloc_path

    if jemalloc_path() is None or not sys.platform.startswith("linux"):
        print("allocator: Ray's wheel holds no libjemalloc.so here (Linux only)", file=sys.stderr)
        return 1
    runs = {"system": [], "jemalloc": []}
    for _ in range(a.reps):  # alternating, so a slow spell of a shared machine hits both
        for name in runs:
            runs[name].append(run_one(a.steps, name == "jemalloc"))
    hashes = {r["weights"] for rs in runs.values() for r in rs}
    if len(hashes) != 1:
        print(f"allocator: the weights differ between runs: {sorted(hashes)}", file=sys.stderr)
        return 1

    def summary(rs: list[dict]) -> dict:
        per_step = [r["seconds"] / a.steps for r in rs]
        return {"s_per_step": [round(x, 3) for x in per_step], "median_s_per_step": round(statistics.median(per_step), 3),
                "median_cpu_seconds": round(statistics.median(r["cpu_seconds"] for r in rs), 1)}

    out = {"benchmark": "allocator", "steps": a.steps, "reps": a.reps, **{k: summary(v) for k, v in runs.items()}}
    out["system_over_jemalloc"] = round(out["system"]["median_s_per_step"] / out["jemalloc"]["median_s_per_step"], 2)
    out["cpu_system_over_jemalloc"] = round(out["system"]["median_cpu_seconds"] / out["jemalloc"]["median_cpu_seconds"], 2)
    out["same_weights"] = True
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
