"""Weight sync, learner -> rollout engine: the collective broadcast against snapshot files and memcpy.

    .venv/bin/python benchmarks/weight_sync.py [--sizes 256x4 512x8 768x12] [--reps 3] [--rl-steps 4]

For each model size (hidden x layers of a tiny-world Llama, random weights), one DeepSpeed learner rank
and one vLLM rollout engine (the real actors); the learner takes one large step so that its weights
differ from the engine's, then each transport publishes them `--reps` times, interleaved, every
publish verified by the log-prob probe. Per size it reports seconds per 100 MB (best of the reps) for
`collective` (group formed once, then broadcast + in-place load), `files` (safetensors save + reload)
and `memcpy` (one in-memory copy of the same bytes, measured in the same run), and their ratios.
Then it runs the RL step benchmark (`benchmarks/rl_step.py`) with each transport and reports the
step's phases with files over with the collective. One JSON line; it exits with an error, printing no
figures, if a probe failed or a run did not complete.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.rl_step import memcpy_seconds  # noqa: E402

TOLERANCE = 1e-3


def make_model(out: Path, hidden: int, layers: int) -> None:
    from rayda.config import TinyWorldConfig
    from rayda.spec import default_spec_dir, load_spec
    from rayda.tinyworld.model import make_model as tiny_model
    from rayda.tinyworld.tokenizer import train_tokenizer

    spec = load_spec(default_spec_dir())
    tok = train_tokenizer([spec.compile(c) for c in spec.category_ids] * 4, vocab_size=640, max_length=1024)
    cfg = TinyWorldConfig(hidden_size=hidden, num_layers=layers, num_heads=max(1, hidden // 64))
    tiny_model(cfg, tok, seed=0).save_pretrained(out)
    tok.save_pretrained(out)


def one_size(root: Path, hidden: int, layers: int, reps: int) -> dict:
    from transformers import AutoTokenizer

    from rayda.actors.group import ActorGroup
    from rayda.actors.learner import Learner
    from rayda.actors.rollout import Generator
    from rayda.config import PoolConfig
    from rayda.engines.deepspeed_engine import LearnerOptions
    from rayda.engines.vllm_engine import EngineConfig
    from rayda.rl.pools import RolloutPool
    from rayda.rl.sync import probe_example, sync, transport

    name = f"h{hidden}l{layers}"
    model = root / name
    make_model(model, hidden, layers)
    tok = AutoTokenizer.from_pretrained(model)
    cfg = EngineConfig(model=str(model), dtype="float32", max_model_len=256, weight_sync=True)
    pool = RolloutPool(Generator, cfg, PoolConfig(actors=1, cpus_per_actor=1), f"bench-rollout-{name}")
    learners = None
    try:
        opts = LearnerOptions(micro_batch_size=2, lr=1e-2, warmup_steps=0, min_lr_ratio=1.0, total_steps=1, pad_id=tok.pad_token_id or 0)
        learners = ActorGroup(Learner, PoolConfig(actors=1, cpus_per_actor=1), f"bench-learner-{name}", setup_args=(str(model), opts))
        probe = probe_example(tok)
        learners.run_sharded("train_step", [probe, probe])  # the learner's weights now differ from the engine's
        pool.wait_ready()
        kinds = {k: transport(k, learners, root / f"sync-{name}", 64 << 20, 300.0) for k in ("collective", "files")}
        seconds: dict[str, list[float]] = {k: [] for k in kinds}
        probes, nbytes, split = [], 0, []
        for rep in range(reps + 1):  # the first round forms the group and warms both paths up
            for kind, t in kinds.items():
                pool.attach(t)
                info = sync(learners, pool, pool.version + 1, probe, TOLERANCE)
                probes.append(info["probe_max_diff"])
                nbytes = info["bytes"]
                if rep:
                    seconds[kind].append(info["transfer_s"])
                    if kind == "collective":
                        split.append({k: info[k] for k in ("send_s", "engine_wait_s", "engine_load_s")})
        kinds["files"].close()
    finally:
        if learners is not None:
            learners.shutdown()
        pool.shutdown()
    per100 = 100e6 / nbytes
    best = {k: min(v) * per100 for k, v in seconds.items()}
    copy = memcpy_seconds(nbytes) * per100
    return {"size": name, "bytes": nbytes, "probe_max_diff": max(probes), "probes_ok": all(d <= TOLERANCE for d in probes),
            "collective_s_per_100mb": round(best["collective"], 4), "files_s_per_100mb": round(best["files"], 4),
            "memcpy_s_per_100mb": round(copy, 4), "collective_over_memcpy": round(best["collective"] / copy, 2),
            "files_over_collective": round(best["files"] / best["collective"], 2),
            # where a collective sync's time goes, per 100 MB (median over the reps): the learner's side
            # (gather, flatten, send), the engine waiting for bytes, and the engine loading them
            "collective_split_s_per_100mb": {k: round(sorted(x[k] for x in split)[len(split) // 2] * per100, 4) for k in split[0]}}


def rl_steps(steps: int) -> dict:
    """The RL step benchmark with each transport (separate local Rays, one after the other)."""
    import subprocess

    out = {}
    for kind in ("files", "collective"):
        proc = subprocess.run([sys.executable, str(Path(__file__).with_name("rl_step.py")), "--steps", str(steps), "--sync", kind,
                               "--rollout-actors", "1"],
                              capture_output=True, text=True, env={**os.environ, "RAY_ADDRESS": ""})
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode or not lines:
            sys.exit(f"weight_sync: rl_step --sync {kind} failed ({proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}")
        out[kind] = json.loads(lines[-1])
    f, c = out["files"], out["collective"]
    ratio = lambda a, b: round(a / b, 2) if b else None  # noqa: E731
    return {"rl_step_files_over_collective": {"step": ratio(f["step_s"], c["step_s"]),
                                              **{k: ratio(f["split_s"][k], c["split_s"][k]) for k in f["split_s"]}},
            "rl_step_s": {"files": f["step_s"], "collective": c["step_s"]},
            "rl_sync_s": {"files": f["split_s"]["sync"], "collective": c["split_s"]["sync"]}}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["256x4", "512x8", "768x12"], help="hidden x layers")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rl-steps", type=int, default=4, help="steps of each RL step run (0: skip)")
    args = ap.parse_args(argv)

    from rayda.config import RunConfig
    from rayda.ray_utils import init_ray

    t0 = time.perf_counter()
    init_ray(RunConfig(num_cpus=4))
    with tempfile.TemporaryDirectory() as tmp:
        sizes = [one_size(Path(tmp), *map(int, s.split("x")), args.reps) for s in args.sizes]
    import ray

    ray.shutdown()
    bad = [s["size"] for s in sizes if not s["probes_ok"]]
    if bad:
        sys.exit(f"weight_sync: the probe failed after a sync for {bad}; no figures")
    result = {"benchmark": "weight_sync", "sizes": sizes, **(rl_steps(args.rl_steps) if args.rl_steps else {}),
              "seconds": round(time.perf_counter() - t0, 1), "load_avg_1m": round(os.getloadavg()[0], 2)}
    print(json.dumps(result))


if __name__ == "__main__":
    main()
