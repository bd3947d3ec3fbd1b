"""Starting or joining Ray, with the environment every rayda actor needs."""

from __future__ import annotations

import json
import os

from rayda.config import RunConfig

# Variables every worker process inherits: quiet tokenizers. Nothing device-dependent: the driver may sit
# on a CPU head node, so each learner and engine decides its accelerator and dtype in its own process
# (`rayda.engines.device`; DS_ACCELERATOR=cpu is set there, only in a process without CUDA).
WORKER_ENV = {"TOKENIZERS_PARALLELISM": "false"}


def init_ray(run: RunConfig, extra_env: dict | None = None):
    """Join `run.ray_address` if set (a cluster, e.g. inside `ray job submit`), else start a local Ray."""
    import ray

    _quiet_data(run.verbose)
    if ray.is_initialized():
        return ray
    env = dict(WORKER_ENV)
    env.update(extra_env or {})
    job = os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR")
    if job:  # inside a Ray job: Ray refuses a key that the job's runtime_env sets too; the job's value wins
        taken = (json.loads(job).get("runtime_env") or {}).get("env_vars") or {}
        env = {k: v for k, v in env.items() if k not in taken}
    address = run.ray_address or os.environ.get("RAY_ADDRESS")
    kwargs = dict(runtime_env={"env_vars": env}, log_to_driver=True)
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=run.num_cpus, num_gpus=run.num_gpus, include_dashboard=False, **kwargs)
    return ray


def _quiet_data(verbose: bool) -> None:
    """Ray Data's own progress display (a bar per operator, or a status block every few seconds when
    the output is not a terminal) only with `run.verbose`: each stage draws its own one bar."""
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = verbose
    ctx.enable_operator_progress_bars = verbose
