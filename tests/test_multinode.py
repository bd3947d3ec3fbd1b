"""On a two-node cluster on this machine (cluster/local-multinode.sh): `rayda plan` pins pools to the
nodes with their resources, and the reduced tiny recipe submitted through the Jobs API succeeds,
writes every stage's `_SUCCESS` and shows rayda's metrics on Ray's Prometheus export."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from e2e_recipe import reduced_tiny

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "cluster" / "local-multinode.sh"
GCS, DASH, METRICS = "127.0.0.1:6390", "http://127.0.0.1:8275", (8290, 8291)
PINS = ["pools.rollout.resources={head_node: 1}", "pools.judge.resources={head_node: 1}",
        "pools.learner.resources={worker_node: 1}"]
SECRET = "sk-rayda-test-not-a-real-key"
SMALLER = ["prompts.limit=32", "gen_sft.samples_per_prompt=4", "sft.max_steps=6", "rl.steps=2", "eval.limit=32"]
"""On top of the reduced tiny recipe: this test is about placement and the Jobs API, not learning, so every
stage runs, on less (`test_run_e2e.py` checks what the stages learn)."""


@pytest.fixture(scope="module")
def two_nodes():
    state = tempfile.mkdtemp(prefix="rmn", dir="/tmp")  # short: Ray's socket paths live under it
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    env.update(RAYDA_MN_DIR=state, RAYDA_JUDGE_API_KEY=SECRET)
    try:
        subprocess.run(["bash", str(SCRIPT), "start"], env=env, check=True, timeout=300)
        yield env
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, timeout=120)
        shutil.rmtree(state, ignore_errors=True)


def rayda(*args, env, **kw):
    return subprocess.run([sys.executable, "-m", "rayda.cli", *args], env=env, cwd=REPO, capture_output=True, text=True, **kw)


def scrape() -> str:
    text = ""
    for port in METRICS:
        try:
            text += urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        except OSError:
            pass
    return text


def test_plan_then_submit_the_reduced_tiny_recipe(two_nodes, tmp_path):
    env = two_nodes
    # 1. the plan puts each pool on the node with its resources
    out = rayda("plan", "tiny", "--address", GCS, *PINS, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    pools = {m[0]: m[1] for m in re.findall(r"^  (\w+) .*-> (.*)$", out.stdout, re.M)}
    assert pools["rollout"].startswith("head ") and pools["judge"].startswith("head "), out.stdout
    assert not pools["learner"].startswith("head "), out.stdout
    # 2. more GPUs than the cluster has: fails in seconds, naming the pool and the resource
    t0 = time.perf_counter()
    out = rayda("plan", "tiny", "--address", GCS, "pools.learner.gpus_per_actor=3", env=env, timeout=120)
    took = time.perf_counter() - t0
    assert out.returncode == 2 and "GPU: need 3 (learner 1x3), cluster has 2" in out.stderr, out.stderr
    assert took < 60, took  # the failure this guards against is a placement group waiting out its 120 s timeout
    print(f"too-big plan rejected in {took:.1f}s")
    # 3. the reduced tiny recipe through the Jobs API, scraping the metrics while it runs
    run_dir = tmp_path / "run"
    # the job's logs go to a file: a pipe nobody reads until the end fills up and blocks `--follow`
    log = tmp_path / "submit.log"
    with log.open("w") as out:
        job = subprocess.Popen([sys.executable, "-m", "rayda.cli", "submit", "tiny", "--address", DASH, "--follow",
                                *reduced_tiny(run_dir), *SMALLER, *PINS], env=env, cwd=REPO, stdout=out,
                               stderr=subprocess.STDOUT, text=True)
    seen: set[str] = set()
    scraped = ""
    deadline = time.time() + 1500
    while job.poll() is None:
        if time.time() > deadline:
            job.kill()
            pytest.fail(f"rayda submit --follow did not return; last log lines: {log.read_text()[-2000:]}")
        text = scrape()
        scraped += "\n".join(line for line in text.splitlines() if "rayda" in line)
        seen |= set(re.findall(r"^ray_(rayda_\w+?)(?:_total|_bucket|_count|_sum)?\{", text, re.M))
        time.sleep(10)
    logs = log.read_text()
    assert job.returncode == 0 and "SUCCEEDED" in logs, logs[-3000:]
    assert re.search(r"^job: raysubmit_\w+", logs, re.M) and f"dashboard: {DASH}/#/jobs/" in logs
    for marker in ("sft_data", "checkpoints/sft", "checkpoints/rl", "eval"):
        assert (run_dir / marker / "_SUCCESS").exists(), marker
    # RL's weights went from the learner on the worker node to the engines on the head over the
    # collective (rl.sync's default), verified by the probe, and never through a snapshot folder
    steps = [m for m in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if m["stage"] == "rl"]
    assert steps and all(m["sync"] == "collective" and m["probe_max_diff"] <= 1e-3 for m in steps), steps[-1]
    assert not (run_dir / "checkpoints" / "rl_sync").exists()
    assert {"rayda_tokens_generated", "rayda_judge_verdicts", "rayda_reward_mean", "rayda_kl",
            "rayda_judge_error_rate", "rayda_step_seconds"} <= seen, seen
    assert 'actor="rollout-0"' in scraped and 'pool="judge"' in scraped
    # 4. the judge key in the submitting shell reaches neither the job's runtime_env, its logs nor metrics
    info = subprocess.run([sys.executable, "-c", "import sys; from ray.job_submission import JobSubmissionClient as C; "
                           "c = C(sys.argv[1]); print([j.runtime_env for j in c.list_jobs()])", DASH],
                          env={**env, "RAY_AUTH_MODE": "token"}, capture_output=True, text=True, timeout=120)
    assert info.returncode == 0 and "working_dir" in info.stdout, info.stderr
    assert SECRET not in info.stdout + logs + scraped
