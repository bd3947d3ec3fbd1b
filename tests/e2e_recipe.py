"""The reduced tiny recipe of the slow end-to-end tests, and the one run of it that they share.

`reduced_run` (a session fixture in conftest.py) runs `rayda run tiny` on the reduced recipe once per
test session, as a user runs it: a subprocess, killed (SIGKILL, the whole process group) while SFT
trains, then started again and run to the end. `test_run_e2e.py` checks the resumption and what the
stages learned; `test_gen_sft_tinyworld.py` checks the run's SFT rows; `test_compare.py` runs `rayda
compare` in the run's folder, as a user does after `rayda run` (it adds only `compare/`). Reading one run instead of
each test running its own pipeline is what keeps the slow tier within its time.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REDUCED_TINY = (
    "prompts.limit=160",
    "gen_sft.samples_per_prompt=8",
    "sft.max_steps=48",
    "sft.save_every=4",
    "rl.steps=12",
    "rl.prompts_per_step=8",
    "rl.grad_accum=2",
    "rl.save_every=4",
    "rl.eval_every=6",
    "eval.limit=80",
    "eval.n_resamples=200",
)
"""Overrides on top of the packaged `tiny` recipe; RL makes one update of 8 prompts per step (the
recipe makes two of 16: twice the time). The first 160 training prompts and the first 80 held-out
ones are those of the first two categories (harassment_hate, illicit_behaviour): the held-out set
asks about the subjects the run trains on, in phrasings it never saw. (With 96 and 96, a third of the
held-out prompts were about subjects no stage saw, whose answers any update reshuffles by chance.)"""

RAYDA = [sys.executable, "-m", "rayda.cli"]


def reduced_tiny(run_dir: Path | str) -> list[str]:
    """The overrides of the reduced tiny recipe, writing into `run_dir`."""
    return [f"run.dir={run_dir}", *REDUCED_TINY]


def start(run_dir: Path, log: Path) -> subprocess.Popen:
    """`rayda run tiny` on the reduced recipe, in its own process group (with the local Ray it starts)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_ADDRESS": ""}
    return subprocess.Popen([*RAYDA, "run", "tiny", *reduced_tiny(run_dir)], stdout=log.open("w"),
                            stderr=subprocess.STDOUT, env=env, start_new_session=True)


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the driver and everything in its process group: the local Ray it started with it (never
    `ray stop`, which would also stop the test session's own Ray)."""
    for _ in range(3):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            break
        time.sleep(2)
    proc.wait(timeout=60)


def run_killed_during_sft(root: Path) -> dict:
    """The shared run: start, SIGKILL once gen-sft has finished and SFT has written a checkpoint, start
    again and wait for the end. Returns what the tests check: the run folder, the second run's exit
    code and log, whether SFT was still unfinished at the kill, and the gen-sft outputs' mtimes then."""
    run_dir = root / "run"
    first = start(run_dir, root / "first.log")
    try:
        deadline = time.time() + 900
        while time.time() < deadline and first.poll() is None:
            if (run_dir / "sft_data" / "_SUCCESS").exists() and any((run_dir / "checkpoints" / "sft_state").glob("step*")):
                break
            time.sleep(0.5)
        alive_at_kill = first.poll() is None
    finally:
        kill_group(first)
    killed = {
        "alive_at_kill": alive_at_kill,
        "sft_done": (run_dir / "checkpoints" / "sft" / "_SUCCESS").exists(),
        "gen_done": (run_dir / "sft_data" / "_SUCCESS").stat().st_mtime_ns if (run_dir / "sft_data" / "_SUCCESS").exists() else None,
        "parts": {p.name: p.stat().st_mtime_ns for p in (run_dir / "sft_data" / "parts").glob("*.parquet")},
    }
    second = start(run_dir, root / "second.log")
    try:
        rc = second.wait(timeout=1500)
    finally:
        kill_group(second)  # a finished driver's group is empty; a hung one is not left behind
    return {"run_dir": run_dir, "killed": killed, "rc": rc, "log": (root / "second.log").read_text()}
