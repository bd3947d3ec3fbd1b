"""Overlapped RL steps (`rl.max_staleness=1`) against on-policy ones, with a judge that answers over HTTP
after a fixed latency, as a hosted judge would.

    .venv/bin/python benchmarks/async_rl.py [--steps 6] [--latency 0.2] [--prompts 8] [--samples 4]

Both runs use the real driver (`rayda.stages.rl.run`) from the tiny world's base model (built once and
cached), so most samples are well-formed and reach the judge; the judge is rayda's http judge against
a local OpenAI-compatible endpoint that sleeps `--latency` seconds per request and returns a verdict
derived from the answer. One JSON line: steps/s of each run (median step time after the first), their
ratio (goal >= 1.3), generated tokens/s per rollout actor (NeMo-RL's tokens/s/GPU, with actors for
GPUs), and the split of a step. It exits with an error, printing no figures, unless every step ran,
every probe held, no judge call failed and the endpoint saw requests.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


class LatencyJudge:
    """An OpenAI-compatible chat endpoint answering REWARD verdicts after `latency` seconds each."""

    def __init__(self, latency: float):
        self.requests = 0
        endpoint = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.requests += 1
                time.sleep(latency)
                text = body["messages"][-1]["content"]
                score = len(text) % 11  # varies with the answer, so groups have signal
                verdict = json.dumps({"behaviour": "comply", "agrees_with_label": score > 4, "compliance": score,
                                      "helpfulness": score, "correctness": score})
                payload = json.dumps({"choices": [{"index": i, "message": {"role": "assistant", "content": verdict},
                                                   "finish_reason": "stop"} for i in range(body.get("n", 1))]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/v1"


def one_run(root: Path, world, url: str, staleness: int, args) -> dict:
    from rayda.config import load_recipe
    from rayda.io import mark_success
    from rayda.stages.rl import run

    run_dir = root / f"staleness{staleness}"
    shutil.copytree(world.model_dir, run_dir / "checkpoints" / "sft")
    mark_success(run_dir / "checkpoints" / "sft")
    rows = args.prompts * args.samples
    recipe = load_recipe("tiny", [
        f"run.dir={run_dir}", "spec.token_budget=null", f"rl.steps={args.steps}", f"rl.prompts_per_step={args.prompts}",
        f"rl.samples_per_prompt={args.samples}", f"rl.max_tokens={args.max_tokens}", f"rl.micro_batch_size={min(16, rows)}",
        f"rl.grad_accum={max(1, rows // 16)}", "rl.save_every=0", "rl.members=1", "rl.eval_every=0", "rl.max_model_len=512",
        "rl.gpu_memory_utilization=0.1", f"rl.max_staleness={staleness}", "judge.kind=http", f"judge.base_url={url}",
        "judge.api_model=latency-stub", "judge.k=1", f"judge.concurrency={args.concurrency}"])
    run(recipe, progress=False)
    steps = [m for m in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if m.get("stage") == "rl"]
    return {"steps": steps, "recipe": recipe, "actors": recipe.pools.rollout.actors}


def figures(result: dict, args) -> dict:
    steps = result["steps"]
    timed = steps[1:] or steps
    med = lambda f: statistics.median(f(m) for m in timed)  # noqa: E731
    step_s = med(lambda m: m["seconds"]["step"])
    tokens = med(lambda m: m["response_tokens"] * args.prompts * args.samples)
    return {"step_s": round(step_s, 3), "steps_per_s": round(1 / step_s, 4),
            "split_s": {k: round(med(lambda m: m["seconds"].get(k, 0.0)), 3) for k in ("generate", "judge", "train", "wait", "sync")},
            "tokens_per_s_per_rollout_actor": round(tokens / step_s / result["actors"], 1),
            "staleness": sorted({m["staleness"] for m in steps})}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--latency", type=float, default=0.2, help="seconds per judge request")
    ap.add_argument("--concurrency", type=int, default=4, help="judge requests in flight per judge actor")
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=96)
    args = ap.parse_args(argv)

    from rayda.config import RunConfig, load_recipe
    from rayda.ray_utils import init_ray
    from rayda.spec import default_spec_dir, load_spec
    from rayda.tinyworld.build import build

    tiny = load_recipe("tiny")
    world = build(load_spec(default_spec_dir()), tiny.tinyworld, spec_token_budget=tiny.spec.token_budget)
    judge = LatencyJudge(args.latency)
    init_ray(RunConfig(num_cpus=4))
    with tempfile.TemporaryDirectory() as tmp:
        runs = {s: one_run(Path(tmp), world, judge.url, s, args) for s in (0, 1)}
    problems = []
    for s, r in runs.items():
        steps = r["steps"]
        if len(steps) != args.steps:
            problems.append(f"staleness {s}: {len(steps)} of {args.steps} steps ran")
        if any(m["judge_errors"] for m in steps):
            problems.append(f"staleness {s}: {sum(m['judge_errors'] for m in steps)} judge errors")
        if not all(m["probe_max_diff"] is not None and m["probe_max_diff"] <= r["recipe"].rl.probe_tolerance for m in steps):
            problems.append(f"staleness {s}: a probe failed")
    if not judge.requests:
        problems.append("the judge endpoint saw no request")
    if problems:
        sys.exit(f"async_rl: {'; '.join(problems)}; no figures")
    sync, overlap = figures(runs[0], args), figures(runs[1], args)
    print(json.dumps({"benchmark": "async_rl", "judge_latency_s": args.latency, "judge_requests": judge.requests,
                      "steps_timed": args.steps - 1, "sync": sync, "async": overlap,
                      "async_over_sync_steps_per_s": round(overlap["steps_per_s"] / sync["steps_per_s"], 2),
                      "load_avg_1m": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
