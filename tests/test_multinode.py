"""On a two-node cluster on this machine (cluster/local-multinode.sh), from the session's shared run
(`reduced_run`, `e2e_recipe.py`): `rayda plan` pins pools to the nodes with their resources and rejects
a pool the cluster cannot hold in seconds; the reduced tiny recipe submitted through the Jobs API (killed
during SFT, submitted again) succeeds, writes every stage's `_SUCCESS`, syncs RL's weights across the
nodes over the collective and shows rayda's metrics on Ray's Prometheus export; the judge key in the
submitting shell reaches neither the job's runtime_env, its logs nor the metrics."""

from __future__ import annotations

import json
import re

import pytest

from e2e_recipe import DASH, SECRET

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2400)]  # the shared run, if no test started it before


def test_plan_then_submit_the_reduced_tiny_recipe(reduced_run):
    cluster, run_dir, logs = reduced_run["cluster"], reduced_run["run_dir"], reduced_run["log"]
    # 1. the plan puts each pool on the node with its resources
    out = cluster["plan"]
    assert out.returncode == 0, out.stderr
    pools = {m[0]: m[1] for m in re.findall(r"^  (\w+) .*-> (.*)$", out.stdout, re.M)}
    assert pools["rollout"].startswith("head ") and pools["judge"].startswith("head "), out.stdout
    assert not pools["learner"].startswith("head "), out.stdout
    # 2. more GPUs than the cluster has: fails in seconds, naming the pool and the resource
    out, took = cluster["too_big"], cluster["too_big_seconds"]
    assert out.returncode == 2 and "GPU: need 3 (learner 1x3), cluster has 2" in out.stderr, out.stderr
    assert took < 60, took  # the failure this guards against is a placement group waiting out its 120 s timeout
    print(f"too-big plan rejected in {took:.1f}s")
    # 3. the reduced tiny recipe through the Jobs API (the second submission, after the kill)
    assert reduced_run["rc"] == 0 and "SUCCEEDED" in logs, logs[-3000:]
    assert re.search(r"^job: raysubmit_\w+", logs, re.M) and f"dashboard: {DASH}/#/jobs/" in logs
    for marker in ("sft_data", "checkpoints/sft", "checkpoints/rl", "eval"):
        assert (run_dir / marker / "_SUCCESS").exists(), marker
    # RL's weights went from the learner on the worker node to the engines on the head over the
    # collective (rl.sync's default), verified by the probe, and never through a snapshot folder
    steps = [m for m in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if m["stage"] == "rl"]
    assert steps and all(m["sync"] == "collective" and m["probe_max_diff"] <= 1e-3 for m in steps), steps[-1]
    assert not (run_dir / "checkpoints" / "rl_sync").exists()
    seen, scraped = cluster["seen"], cluster["scraped"]
    assert {"rayda_tokens_generated", "rayda_judge_verdicts", "rayda_reward_mean", "rayda_kl",
            "rayda_judge_error_rate", "rayda_step_seconds"} <= seen, seen
    assert 'actor="rollout-0"' in scraped and 'pool="judge"' in scraped
    # 4. the judge key in the submitting shell reaches neither the jobs' runtime_env, their logs nor metrics
    info = cluster["jobs"]
    assert info.returncode == 0 and "working_dir" in info.stdout, info.stderr
    assert SECRET not in info.stdout + logs + reduced_run["first_log"] + scraped
