"""gen-sft end to end on Ray: the driver killed mid-run, then a restart on two generator actors, one killed mid-run.

These use a random tiny model (seconds to load, nearly all samples malformed): what they check is the
machinery (actor pools, parts, resumption), not acceptance. `test_gen_sft_tinyworld.py` checks that
the tiny recipe produces accepted rows.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from rayda.config import load_recipe
from rayda.stages import gen_sft

pytestmark = [pytest.mark.slow, pytest.mark.ray]

N_PROMPTS = 24


@pytest.fixture(scope="module")
def model_dir(spec):
    from gen_sft_model import cached_random_model, spec_corpus

    return cached_random_model(spec_corpus(spec))


@pytest.fixture(scope="module")
def prompts_file(spec, tmp_path_factory):
    cats = spec.category_ids
    rows = [
        {"id": f"q{i:02d}", "messages": [{"role": "user", "content": f"question number {i}"}],
         "category": cats[i % len(cats)], "label": ["comply", "refuse", "safe_complete"][i % 3]}
        for i in range(N_PROMPTS)
    ]
    path = tmp_path_factory.mktemp("prompts") / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _overrides(run_dir, model_dir, prompts_file, *extra):
    return [
        f"run.dir={run_dir}", f"model.policy={model_dir}", f"prompts.source={prompts_file}", "spec.token_budget=null",
        "gen_sft.samples_per_prompt=2", "gen_sft.max_tokens=24", "gen_sft.batch_size=2", "gen_sft.shard_size=4",
        "pools.judge.cpus_per_actor=0.5", *extra,
    ]


def _ids(out: Path) -> list[str]:
    return [*pq.read_table(out / "accepted.parquet").column("prompt_id").to_pylist(),
            *pq.read_table(out / "rejected.parquet").column("prompt_id").to_pylist()]


def _wait_for(pred, timeout, what):
    deadline = time.time() + timeout
    while not pred():
        if time.time() > deadline:
            raise TimeoutError(what)
        time.sleep(0.2)


def test_driver_killed_then_a_restart_on_two_generators_with_one_killed(ray_local, tmp_path, model_dir, prompts_file):
    """SIGKILL the driver once a part is written. The restart, on two generator actors, generates only the
    rest, nothing twice; SIGKILL one of its generators after its first new part: Ray Data restarts it
    and no row is lost. (One run checks both: each of the two used to start its own pipeline.)"""
    from ray._private.state import actors as actor_table  # the GCS table: works without the dashboard

    run_dir = tmp_path / "run"
    parts = run_dir / "sft_data" / "parts"
    log = open(tmp_path / "driver.log", "w")
    cmd = [sys.executable, "-m", "rayda.cli", "gen-sft", "tiny", *_overrides(run_dir, model_dir, prompts_file), "run.num_cpus=4"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_for(lambda: any(parts.glob("part-*.parquet")) or proc.poll() is not None, 300, "no part appeared")
        assert proc.poll() is None, f"driver ended before it could be killed; see {log.name}"
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and the local Ray it started
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
    assert not (run_dir / "sft_data" / "_SUCCESS").exists()
    first = {r["prompt_id"] for r in gen_sft.read_parts(parts)}
    first_parts = set(parts.glob("part-*.parquet"))
    assert 0 < len(first) <= N_PROMPTS // 2

    recipe = load_recipe("tiny", _overrides(run_dir, model_dir, prompts_file, "pools.rollout.actors=2"))
    killed = {}

    def killer():
        _wait_for(lambda: set(parts.glob("part-*.parquet")) - first_parts, 300, "the restart wrote no part")
        gens = [a for a in actor_table().values() if a["State"] == "ALIVE" and "Generator" in a["ActorClassName"]]
        killed["pid"] = gens[0]["Pid"]
        os.kill(killed["pid"], signal.SIGKILL)  # Ray Data gives no handles to its pool actors; a crash is the harder case

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    result = gen_sft.run(recipe, progress=False)
    t.join(5)
    assert killed.get("pid"), "the generator was never killed"
    ids = _ids(result.out_dir)
    assert sorted(ids) == [f"q{i:02d}" for i in range(N_PROMPTS)] and len(set(ids)) == len(ids)
    records = gen_sft.read_parts(parts)
    assert len(records) == N_PROMPTS  # no part holds a prompt twice
    restarted = {r["generator_actor"] for r in records if r["prompt_id"] not in first}
    assert len(restarted) == 2, restarted  # both generators served the restart; the killed one came back as itself
    metrics = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert metrics["stage"] == "gen_sft" and metrics["resumed"] == len(first)
    assert metrics["rows"] == N_PROMPTS - len(first)  # nothing regenerated
    assert sum(metrics["rejected"].values()) + metrics["accepted"] == N_PROMPTS  # the stage's totals, resumed rows too

    again = gen_sft.run(recipe, progress=False)  # _SUCCESS: nothing to do
    assert again.accepted + again.rejected == N_PROMPTS
