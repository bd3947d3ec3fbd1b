"""scripts/gpu_check.py in its CPU smoke mode: one JSON line, the torch steps and the DeepSpeed ZeRO-2
child both ran (about 15 s on 2 idle cores, most of it imports)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.py"


def _run(*args: str) -> dict:
    p = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=180)
    assert p.returncode == 0, p.stderr[-3000:]
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1, p.stdout  # one JSON line, nothing else on stdout
    return json.loads(lines[0])


def test_cpu_smoke_runs_torch_and_deepspeed_steps():
    out = _run("--cpu", "--steps", "2")
    assert out["ran"] and out["mode"] == "cpu" and out["dtype"] == "float32"
    assert out["decision"] == {"accelerator": "cpu", "backend": "gloo", "dtype": "float32"}
    assert out["rayda"]["loss"] == "rayda.algo.losses.sft_loss"
    assert out["loss_decreased"] and out["tokens_per_s"] > 0
    ds = out["deepspeed"]
    pytest.importorskip("deepspeed")
    assert ds["ok"], ds
    assert ds["zero_stage"] == 2 and ds["config"] == "rayda.engines.deepspeed_engine.ds_config"
    # Same initial weights, same batch, fp32: the first loss is the torch part's.
    assert ds["loss_first"] == pytest.approx(out["loss_first"], abs=1e-3) and ds["loss_decreased"]


def test_without_cuda_it_says_so_and_exits_0():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the check would run")
    out = _run("--no-deepspeed")
    assert out["ran"] is False and out["cuda_available"] is False and "cuda unavailable" in out["reason"]
