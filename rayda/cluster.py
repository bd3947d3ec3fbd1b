"""Running rayda on a Ray cluster: `rayda plan` and `rayda submit` (Ray Jobs), and Ray 2.60 token auth.

    rayda plan qwen-gpu --address HEAD:6379                    the plan per pool and per node, or an error
    rayda submit qwen-gpu --address http://HEAD:8265 --follow   `rayda run qwen-gpu` as a Ray job

Token auth: Ray 2.60 turns it on for `ray start --head` and writes the token to ~/.ray/auth_token; a
client presents it only when RAY_AUTH_MODE=token, which `use_token_auth` sets when a token can be found
(RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token). The token is never printed.

Secrets (a judge API key) never travel in the runtime_env: the job would show them in its dashboard
page and in `ray job list`. Set them in the environment of the cluster's nodes (a Kubernetes secret,
the launcher's setup commands); `job_runtime_env` refuses an env var whose name looks like a secret.
"""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import yaml

from rayda import shipped_path
from rayda.config import ConfigError, Recipe

RUNTIME_ENV = shipped_path("cluster/runtime_env.yaml")
"""`rayda submit`'s default runtime_env: the checkout's cluster/, or rayda/cluster_files in a wheel."""
SECRET_NAME = re.compile(r"(^|_)(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)(_|$)", re.IGNORECASE)
"""Names treated as secrets: RAYDA_JUDGE_API_KEY, HF_TOKEN, AWS_SECRET_ACCESS_KEY (not TOKENIZERS_PARALLELISM)."""


def use_token_auth(environ=os.environ) -> bool:
    """Set RAY_AUTH_MODE=token (unless the user set a mode) when a Ray token is available; True if on."""
    if "RAY_AUTH_MODE" not in environ:
        path = environ.get("RAY_AUTH_TOKEN_PATH") or str(Path.home() / ".ray" / "auth_token")
        if environ.get("RAY_AUTH_TOKEN") or Path(path).is_file():
            environ["RAY_AUTH_MODE"] = "token"
    return environ.get("RAY_AUTH_MODE", "").lower() == "token"


def secret_names(recipe: Recipe) -> set[str]:
    """Environment variables the recipe reads secrets from."""
    return {recipe.judge.api_key_env}


def job_runtime_env(base: dict, working_dir: str, secrets: set[str] = frozenset()) -> dict:
    """`base` (cluster/runtime_env.yaml) plus the working dir; raises ConfigError on a secret env var."""
    env = dict(base or {})
    bad = sorted(k for k in (env.get("env_vars") or {}) if k in secrets or SECRET_NAME.search(k))
    if bad:
        raise ConfigError(f"runtime_env env_vars {bad} look like secrets: a job's runtime_env is shown in the dashboard "
                          "and `ray job list`; set them in the cluster nodes' environment instead")
    env["working_dir"] = working_dir
    return env


def redact(obj, secrets: set[str] = frozenset()):
    """A copy of `obj` whose values under secret-looking keys read `***` (for printing)."""
    if isinstance(obj, dict):
        return {k: "***" if isinstance(k, str) and (k in secrets or SECRET_NAME.search(k)) else redact(v, secrets)
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v, secrets) for v in obj]
    return obj


def entrypoint(recipe: str, overrides: list[str], working_dir: str) -> str:
    """The job's shell command: `rayda run RECIPE overrides...`, a recipe file relative to the working dir."""
    if recipe.endswith((".yaml", ".yml")) or os.sep in recipe:
        path, wd = Path(recipe).resolve(), Path(working_dir).resolve()
        if not path.is_relative_to(wd):
            raise ConfigError(f"recipe file {recipe} is outside the working dir {working_dir}: the job would not find it")
        recipe = str(path.relative_to(wd))
    return shlex.join(["rayda", "run", recipe, *overrides])


def job_url(address: str, job_id: str) -> str:
    return f"{address.rstrip('/')}/#/jobs/{job_id}"


# ---- Ray -----------------------------------------------------------------------------------------


def local_node(recipe: Recipe) -> dict[str, dict[str, float]]:
    """The one node of the local Ray that `rayda run` would start (run.num_cpus, run.num_gpus or the visible GPUs)."""
    gpus = recipe.run.num_gpus
    if gpus is None:
        import torch

        gpus = torch.cuda.device_count()
    return {"local": {"CPU": float(recipe.run.num_cpus or os.cpu_count() or 1), "GPU": float(gpus)}}


def cluster_nodes(address: str | None, recipe: Recipe) -> dict[str, dict[str, float]]:
    """Nodes of the cluster at `address` (GCS `HOST:6379` or `auto`; default run.ray_address, then
    $RAY_ADDRESS); with none, the local Ray `rayda run` would start, without starting it."""
    address = address or recipe.run.ray_address or os.environ.get("RAY_ADDRESS")
    if not address:
        return local_node(recipe)
    use_token_auth()
    import ray

    from rayda.placement import cluster_nodes as alive_nodes

    try:
        ray.init(address=address, log_to_driver=False, logging_level="ERROR")
    except (ConnectionError, RuntimeError, ValueError) as e:
        from rayda.placement import PlacementError

        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise PlacementError(f"no Ray cluster at {address!r} ({first}): start one (`ray start --head`), pass --address "
                             "HOST:6379, or check against a described shape with --cluster 1x8gpu") from None
    try:
        return alive_nodes()
    finally:
        ray.shutdown()


def submit(recipe: Recipe, recipe_arg: str, overrides: list[str], address: str, working_dir: str = ".",
           runtime_env_file: str | Path | None = None) -> tuple[object, str]:
    """Submit `rayda run` as a Ray job; returns (client, job id)."""
    base = yaml.safe_load(Path(runtime_env_file or RUNTIME_ENV).read_text()) or {}
    runtime_env = job_runtime_env(base, working_dir, secret_names(recipe))
    command = entrypoint(recipe_arg, overrides, working_dir)
    use_token_auth()
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    job_id = client.submit_job(entrypoint=command, runtime_env=runtime_env, metadata={"rayda_recipe": recipe_arg})
    return client, job_id


def follow(client, job_id: str) -> str:
    """Stream the job's logs to stdout until it ends; returns its final status (e.g. SUCCEEDED)."""
    import asyncio
    import sys

    async def tail():
        async for lines in client.tail_job_logs(job_id):
            sys.stdout.write(lines)
            sys.stdout.flush()

    async def run():
        # The log stream does not always close when the job ends (seen with Ray 2.60): poll the status too.
        task = asyncio.create_task(tail())
        while not (await asyncio.to_thread(client.get_job_status, job_id)).is_terminal():
            await asyncio.wait([task], timeout=2)
        try:
            await asyncio.wait_for(task, timeout=10)  # the last lines
        except asyncio.TimeoutError:
            pass

    asyncio.run(run())
    return str(client.get_job_status(job_id).value)
