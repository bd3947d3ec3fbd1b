"""A CPU rehearsal of the GPU recipe: `rayda run qwen-gpu` end to end with the tiny world's models in
place of its hub names and 8 logical GPUs on a local Ray.

It keeps the recipe's judge kind (llm: a vLLM judge engine per judge actor), its pool layout (2 rollout
engines, 2 judge engines, 4 DeepSpeed ranks, one logical GPU each), its dtype and its batch arithmetic
(micro x accum x ranks). Scaled down, because 2 cores and 24 GiB force it: prompt counts, steps, token
lengths, vLLM memory fractions (of CPU memory here), graph compilation off, the spec's token budget (the
tiny model reads 1024 positions) and the acceptance threshold (the tiny judge scores low). What it cannot check is listed in the README's GPU section.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.rehearsal]

REHEARSAL = (
    "run.ray_address=null", "run.num_cpus=32", "run.num_gpus=8",
    "model.policy=tinyworld", "model.judge=tinyworld", "spec.token_budget=700",
    "prompts.limit=48",
    "gen_sft.max_tokens=96", "gen_sft.gpu_memory_utilization=0.04", "gen_sft.enforce_eager=true",
    "gen_sft.threshold=0.3",  # the tiny model is a harsher judge than a 7B one: at 0.8 it accepts nothing
    "judge.max_model_len=2048", "judge.gpu_memory_utilization=0.04",
    "sft.max_length=384", "sft.max_steps=3", "sft.save_every=0",
    "rl.steps=2", "rl.prompts_per_step=16", "rl.max_tokens=96", "rl.max_model_len=1024",
    "rl.gpu_memory_utilization=0.04", "rl.enforce_eager=true", "rl.eval_every=2", "rl.eval_prompts=8",
    "eval.limit=24", "eval.max_tokens=96", "eval.gpu_memory_utilization=0.04", "eval.n_resamples=100",
)


@pytest.mark.timeout(2400)
def test_gpu_recipe_rehearsed_on_cpu(tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_ADDRESS": ""}
    cmd = [sys.executable, "-m", "rayda.cli", "run", "qwen-gpu", f"run.dir={run_dir}", *REHEARSAL]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=2300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    recipe = json.loads(json.dumps(__import__("yaml").safe_load((run_dir / "recipe.yaml").read_text())))
    assert recipe["judge"]["kind"] == "llm" and recipe["model"]["dtype"] == "bfloat16"
    assert [recipe["pools"][p]["actors"] for p in ("rollout", "judge", "learner")] == [2, 2, 4]
    assert all(recipe["pools"][p]["gpus_per_actor"] == 1 for p in ("rollout", "judge", "learner"))

    # gen-sft: every llm verdict parses (structured output); accepted rows keep the min over k
    steps = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    gen = [s for s in steps if s.get("stage") == "gen_sft"][-1]
    assert gen["judge_verdicts"] > 0 and gen["judge_errors"] == 0, gen
    rows = pq.read_table(run_dir / "sft_data" / "accepted.parquet").to_pylist()
    assert rows and all(r["judge_kind"] == "llm" and r["judge_model"] and len(r["scores"]) == recipe["judge"]["k"]
                        and r["score"] == min(r["scores"]) >= recipe["gen_sft"]["threshold"] for r in rows)
    # SFT and RL on the 4 learner ranks; every RL weight sync passed the bf16 probe (else the run fails)
    assert json.loads((run_dir / "checkpoints" / "sft" / "train_report.json").read_text())["ranks"] == 4
    rl = [s for s in steps if s.get("stage") == "rl"]
    assert [s["step"] for s in rl] == [1, 2]
    assert any(s.get("stage") == "rl_eval" for s in steps)
    # eval: three models, graded by the llm judge on the judge pool
    for model in ("base", "sft", "rl"):
        summary = json.loads((run_dir / "eval" / f"{model}-heldout.json").read_text())
        assert summary["meta"]["judge"] == "llm" and summary["overall"]["behaviour_accuracy"]["n"] == 24
    assert (run_dir / "report.md").exists()
