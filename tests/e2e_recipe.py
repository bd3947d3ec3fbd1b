"""The reduced tiny recipe of the slow end-to-end tests, and the one run of it that they share.

`reduced_run` (a session fixture in conftest.py) runs the reduced recipe once per test session, as a
user runs it on a cluster: on a two-node Ray cluster started on this machine (cluster/local-multinode.sh),
`rayda plan` first, then `rayda submit --follow` through the Jobs API with the rollout and judge pools
pinned to the head and the learner to the worker. The job's driver is killed (SIGKILL, its whole
process group) while SFT trains, and the same command is submitted again and runs to the end while
the test scrapes Ray's Prometheus endpoints. The cluster is stopped before the fixture returns, so no
later test's local Ray can find it.

`test_run_e2e.py` checks the resumption and what the stages learned; `test_multinode.py` the plan,
the placement, the weight sync across nodes, the metrics and the job's secrets; `test_gen_sft_tinyworld.py`
the run's SFT rows; `test_compare.py` runs `rayda compare` in the run's folder, as a user does after
`rayda run` (it adds only `compare/`). Reading one run instead of each test running its own pipeline is
what keeps the slow tier within its time.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

REDUCED_TINY = (
    "prompts.limit=160",
    "pools.rollout.actors=1",
    "gen_sft.samples_per_prompt=8",
    "sft.max_steps=48",
    "sft.save_every=4",
    "rl.prompts=tinyworld:train",
    "rl.steps=4",
    "rl.members=1",
    "rl.prompts_per_step=8",
    "rl.grad_accum=2",
    "rl.save_every=2",
    "rl.eval_every=4",
    "eval.limit=80",
    "eval.n_resamples=200",
    "cai.rounds=2",
    "pm.epochs=1",
)
"""Overrides on top of the packaged `tiny` recipe. One rollout engine, not the recipe's two: these runs
sample little, so a second engine's start costs more than it saves (the suite took 19.1 minutes with two,
the shared run and the compare test 870 s of it). RL makes one run of 4 steps of two updates of 4 prompts
(the recipe makes two members of 15 steps of two updates of 8; tests/test_rl_stage.py trains members):
the runs exercise every part of RL (saves, the watch before and after), what RL learns is
`benchmarks/outcome.py`'s to measure. RL draws from the training prompts, not the
recipe's `tinyworld:rl`: under `prompts.limit=160` that set's first rows are 13 subjects of one category,
all refuse or safe-complete. `rayda compare`'s cai arm revises in 2
rounds (the recipe: 4) and trains its preference model for 1 epoch (3): every part runs, in less time. The first 160 training prompts and the first 80 held-out
ones are those of the first two categories (illicit_behaviour, violent_extremism): the held-out set
asks about the subjects the run trains on, in phrasings it never saw. (With 96 and 96, a third of the
held-out prompts were about subjects no stage saw, whose answers any update reshuffles by chance.)"""

RAYDA = [sys.executable, "-m", "rayda.cli"]
REPO = Path(__file__).resolve().parent.parent
SCRIPT = REPO / "cluster" / "local-multinode.sh"
GCS, DASH, METRICS = "127.0.0.1:6390", "http://127.0.0.1:8275", (8290, 8291)
PINS = ("pools.rollout.resources={head_node: 1}", "pools.judge.resources={head_node: 1}",
        "pools.learner.resources={worker_node: 1}")
SECRET = "sk-rayda-test-not-a-real-key"
"""In the submitting shell's environment as the judge's API key: it must reach neither the job's
runtime_env, its logs nor the metrics."""


def reduced_tiny(run_dir: Path | str) -> list[str]:
    """The overrides of the reduced tiny recipe, writing into `run_dir`."""
    return [f"run.dir={run_dir}", *REDUCED_TINY]


@contextmanager
def two_nodes():
    """The two-node cluster for the duration of the block; yields the environment its clients use."""
    state = tempfile.mkdtemp(prefix="rmn", dir="/tmp")  # short: Ray's socket paths live under it
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    env.update(RAYDA_MN_DIR=state, RAYDA_JUDGE_API_KEY=SECRET, PYTHONUNBUFFERED="1")
    try:
        subprocess.run(["bash", str(SCRIPT), "start"], env=env, check=True, timeout=300)
        yield env
    finally:
        subprocess.run(["bash", str(SCRIPT), "stop"], env=env, timeout=120)
        shutil.rmtree(state, ignore_errors=True)


def rayda(*args, env, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*RAYDA, *args], env=env, cwd=REPO, capture_output=True, text=True, **kw)


def submit(run_dir: Path, log: Path, env: dict) -> subprocess.Popen:
    """`rayda submit --follow` of the reduced recipe, pinned; the job's logs go to `log` (a pipe nobody
    reads until the end fills up and blocks `--follow`)."""
    return subprocess.Popen([*RAYDA, "submit", "tiny", "--address", DASH, "--follow", *reduced_tiny(run_dir), *PINS],
                            env=env, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT, text=True)


def kill_driver(run_dir: Path) -> bool:
    """SIGKILL the job's driver (`rayda run tiny run.dir=RUN_DIR ...`) and its process group: the Jobs
    API starts the entrypoint in a session of its own. Whether there was one to kill."""
    wanted, found = f"rayda run tiny run.dir={run_dir} ", []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and wanted in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:  # a process that ended while we looked
            pass
    for pid in found:
        try:
            os.killpg(os.getpgid(pid), signal.SIGKILL)
        except ProcessLookupError:
            pass
    return bool(found)


def scrape() -> str:
    text = ""
    for port in METRICS:
        try:
            text += urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        except OSError:
            pass
    return text


def follow(job: subprocess.Popen, log: Path, timeout: float, until=None) -> dict:
    """Wait for `rayda submit --follow` to return (or, with `until`, for `until()` to hold), scraping
    the metrics every 10 s. Returns the metric names seen and rayda's scraped lines."""
    seen: set[str] = set()
    scraped, deadline, last = "", time.time() + timeout, 0.0
    while job.poll() is None and not (until and until()):
        if time.time() > deadline:
            job.kill()
            raise TimeoutError(f"rayda submit --follow did not return in {timeout:.0f} s; last log lines: {log.read_text()[-2000:]}")
        if time.time() - last >= 10:
            text, last = scrape(), time.time()
            scraped += "\n".join(line for line in text.splitlines() if "rayda" in line)
            seen |= set(re.findall(r"^ray_(rayda_\w+?)(?:_total|_bucket|_count|_sum)?\{", text, re.M))
        time.sleep(0.5)
    return {"seen": seen, "scraped": scraped}


def run_killed_during_sft(root: Path) -> dict:
    """The shared run (module docstring). Returns what the tests check: the run folder; the second
    job's exit code and log; whether SFT was still unfinished at the kill and the gen-sft outputs' mtimes
    then; and `cluster`: the two plans, the metrics seen, the jobs' runtime_envs."""
    run_dir = root / "run"
    with two_nodes() as env:
        cluster = {"plan": rayda("plan", "tiny", "--address", GCS, *PINS, env=env, timeout=120)}
        t0 = time.perf_counter()
        cluster["too_big"] = rayda("plan", "tiny", "--address", GCS, "pools.learner.gpus_per_actor=3", env=env, timeout=120)
        cluster["too_big_seconds"] = time.perf_counter() - t0

        first = submit(run_dir, root / "first.log", env)
        try:
            # `latest` is written once a checkpoint is whole; a `step*` folder appears when its save starts.
            follow(first, root / "first.log", 900, until=lambda: (run_dir / "sft_data" / "_SUCCESS").exists()
                   and (run_dir / "checkpoints" / "sft_state" / "latest").exists())
            alive_at_kill = first.poll() is None and kill_driver(run_dir)
            first.wait(timeout=120)  # the job fails with its driver; --follow returns
        finally:
            first.kill()
        killed = {
            "alive_at_kill": alive_at_kill,
            "sft_done": (run_dir / "checkpoints" / "sft" / "_SUCCESS").exists(),
            "gen_done": (run_dir / "sft_data" / "_SUCCESS").stat().st_mtime_ns if (run_dir / "sft_data" / "_SUCCESS").exists() else None,
            "parts": {p.name: p.stat().st_mtime_ns for p in (run_dir / "sft_data" / "parts").glob("*.parquet")},
        }

        second = submit(run_dir, root / "second.log", env)
        try:
            cluster.update(follow(second, root / "second.log", 1500))
        finally:
            second.kill()
        cluster["jobs"] = subprocess.run(
            [sys.executable, "-c", "import sys; from ray.job_submission import JobSubmissionClient as C; "
             "c = C(sys.argv[1]); print([j.runtime_env for j in c.list_jobs()])", DASH],
            env={**env, "RAY_AUTH_MODE": "token"}, capture_output=True, text=True, timeout=120)
    return {"run_dir": run_dir, "killed": killed, "rc": second.returncode, "log": (root / "second.log").read_text(),
            "first_log": (root / "first.log").read_text(), "cluster": cluster}
