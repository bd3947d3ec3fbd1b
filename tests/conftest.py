"""Shared fixtures: the default spec, the default tiny world (built once, cached by content hash), one
local Ray cluster for every `ray` test in the session, and one run of the reduced tiny recipe that the
end-to-end tests read."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


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
    """The default tiny world (the same one `make demo` uses); built on first use, then cached."""
    from rayda.tinyworld.build import build

    return build(spec, tiny_recipe.tinyworld, spec_token_budget=tiny_recipe.spec.token_budget)


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
    """`rayda run tiny` on the reduced recipe, killed during SFT and run again to the end, once per session
    (`e2e_recipe.run_killed_during_sft`); a subprocess with its own local Ray."""
    from e2e_recipe import run_killed_during_sft

    return run_killed_during_sft(tmp_path_factory.mktemp("reduced-run"))
