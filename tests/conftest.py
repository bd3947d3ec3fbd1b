"""Shared fixtures: the default spec, the default tiny world (built once, cached by content hash), one
local Ray cluster for every `ray` test in the session, and one run of the reduced tiny recipe (a Ray job
on a two-node cluster) that the end-to-end tests read."""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHARED = ("reduced_run", "vllm_server")
"""Session fixtures that must start once however many pytest-xdist workers run (`make test WORKERS=N`):
every module that reads one goes to the worker that holds it."""


@lru_cache(maxsize=None)
def _unit(module: str) -> str:
    """The unit of work of a test module under `pytest -n N --dist loadscope`: the first `SHARED` fixture
    its source names, else the module itself (its module fixtures, a learner group, an engine, an
    interrupted RL run, are then built once, as in a serial run)."""
    path = Path(module)
    text = path.read_text() if path.is_file() else ""
    return next((name for name in SHARED if name in text), module)


def pytest_configure(config):
    """On an xdist worker, one OpenMP thread per process (torch, DeepSpeed, vLLM; Ray's actors and the
    clusters the tests start inherit it). Measured on 2 cores with two workers: with each learner
    taking as many threads as its actor has CPUs, the two workers' threads oversubscribed the cores,
    `test_sft_tinyworld` took 610 s against 87 s alone and the suite 28.5 min; with one thread (and the
    engines unbound), 279 s and 26.7 min."""
    if hasattr(config, "workerinput"):
        os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_xdist_make_scheduler(config, log):
    """xdist's `loadscope` with `_unit` as the scope. (`loadgroup`'s `xdist_group` marks do nothing
    under pytest 9: xdist 3.8 renames `item._nodeid`, which pytest 9 no longer reads.)"""
    if config.getoption("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleUnits(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _unit(str(config.rootpath / nodeid.split("::")[0]))

    config.option.loadscopereorder = False  # keep the order the workers collected (below)
    return ModuleUnits(config, log)


def pytest_collection_modifyitems(config, items):
    """On an xdist worker, order the collection so that the longest units are handed out first: the
    shared fixtures' modules, then modules with slow tests, then the rest (each in its usual order)."""
    if not hasattr(config, "workerinput"):
        return
    slow = {_unit(str(item.path)) for item in items if item.get_closest_marker("slow")}

    def rank(item) -> int:
        unit = _unit(str(item.path))
        return 0 if unit in SHARED else 1 if unit in slow else 2

    items.sort(key=rank)


@pytest.fixture(scope="session")
def spec():
    from rayda.spec import default_spec_dir, load_spec

    return load_spec(default_spec_dir())


@pytest.fixture(scope="session")
def tiny_recipe():
    from rayda.config import load_recipe

    return load_recipe("tiny")


@pytest.fixture(scope="session")
def tiny_world(spec, tiny_recipe):
    """The default tiny world (the same one `make demo` uses); built on first use, then cached. A build
    runs in a process of its own (`rayda tinyworld build`): pre-training leaves about 2 GB in the process
    that ran it (a 20-step build of the default world: 2.0 GB resident after, 3.2 at the peak), which
    the test worker would otherwise keep for the whole session, beside the other worker's engines (a
    fresh clone's two-worker run hit Ray's memory kill at 22.4 of 23.5 GB)."""
    import subprocess
    import sys

    from rayda.io import is_done
    from rayda.tinyworld.build import build, cached_path

    budget = tiny_recipe.spec.token_budget
    if not is_done(cached_path(spec, tiny_recipe.tinyworld, budget)):
        subprocess.run([sys.executable, "-m", "rayda.cli", "tinyworld", "build", "tiny"], check=True,
                       cwd=Path(__file__).resolve().parent.parent, stdout=subprocess.DEVNULL)
    return build(spec, tiny_recipe.tinyworld, spec_token_budget=budget)


@pytest.fixture(scope="session")
def ray_local():
    """One local Ray for the session, with more logical CPUs than cores so several pools fit."""
    import ray

    from rayda.ray_utils import init_ray
    from rayda.config import RunConfig

    init_ray(RunConfig(num_cpus=8))
    yield ray
    ray.shutdown()


@pytest.fixture(scope="session")
def reduced_run(tiny_world, tmp_path_factory):
    """The reduced tiny recipe submitted as a Ray job to a two-node cluster on this machine, killed during
    SFT and submitted again to the end, once per session (`e2e_recipe.run_killed_during_sft`)."""
    from e2e_recipe import run_killed_during_sft

    return run_killed_during_sft(tmp_path_factory.mktemp("reduced-run"))


@pytest.fixture(scope="session")
def spec_texts(spec):
    return {c: spec.compile(c) for c in spec.category_ids}


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory, spec_texts):
    """vLLM's OpenAI-compatible server on 127.0.0.1, serving a tiny random model as "tiny"; started once
    per session for the http judge's and the http grader's tests."""
    import json
    import socket
    import subprocess
    import sys
    import time

    from gen_sft_model import build_random_model
    from rayda.engines.vllm_engine import kv_cache_bytes
    from test_judges_http import GOOD

    model = build_random_model(tmp_path_factory.mktemp("model"), "\n".join(spec_texts.values()) + GOOD)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log = open(tmp_path_factory.mktemp("log") / "server.log", "w")
    # The KV cache for 16 sequences of the model's 2,048 tokens (64 MiB), not vLLM-CPU's share of the
    # machine's memory: at --gpu-memory-utilization 0.2 the server's worker held 4.4 GB for the rest of the
    # session, and with two pytest-xdist workers a fresh clone's suite peaked at 22.4 of 23.5 GB used.
    seqs, hf = 16, json.loads((model / "config.json").read_text())
    kv = kv_cache_bytes(hf["num_hidden_layers"], hf["num_key_value_heads"], hf["hidden_size"] // hf["num_attention_heads"],
                        4, hf["max_position_embeddings"], seqs, cap=1 << 30)
    cmd = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model), "--served-model-name", "tiny",
        "--host", "127.0.0.1", "--port", str(port), "--enforce-eager",
        "--max-num-seqs", str(seqs), "--kv-cache-memory-bytes", str(kv),
        # vllm-cpu 0.32 crashes on seeded requests whose prefill is chunked (see EngineConfig.chunked_prefill)
        "--no-enable-chunked-prefill",
        "--structured-outputs-config", json.dumps({"backend": "xgrammar", "disable_any_whitespace": True}),
    ]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, TOKENIZERS_PARALLELISM="false"))
    import httpx

    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 240
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited: see {log.name}")
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"vLLM server did not start in 240 s: see {log.name}")
            time.sleep(1)
        yield url + "/v1"
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
