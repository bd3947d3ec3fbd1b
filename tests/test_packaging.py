"""Packaging: `rayda.actors` is this project's `actors/` folder, `import rayda` starts no engine, and the
wheel (the package, the spec, the recipes, the cluster files) works from any directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_actors_package_is_this_projects():
    import rayda
    import rayda.actors as actors

    assert Path(actors.__file__).resolve().parent == REPO / "actors"
    assert Path(rayda.__file__).resolve().parent == REPO / "rayda"


def test_import_is_cheap_and_starts_nothing():
    code = (
        "import sys, rayda, rayda.config, rayda.spec, rayda.reasoning, rayda.types, rayda.placement, rayda.cli, rayda.actors;"
        "heavy = [m for m in ('ray', 'vllm', 'deepspeed', 'torch') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == ""


def test_a_shipped_checkout_imports_its_own_actor_shells(tmp_path):
    """A checkout shipped elsewhere (a Ray job's working_dir) resolves `rayda.actors` inside itself, not
    through the editable install's mapping to this repository's `actors/`."""
    copy = tmp_path / "wd"
    for part in ("rayda", "actors"):
        shutil.copytree(REPO / part, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
    code = "import rayda.actors.judge as j; print(j.__file__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd="/", env={**os.environ, "PYTHONPATH": str(copy)})
    assert Path(out.stdout.strip()).resolve() == (copy / "actors" / "judge.py").resolve(), out.stdout


def test_console_script_help():
    exe = Path(sys.executable).parent / "rayda"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
    assert "spec" in out.stdout and "tinyworld" in out.stdout


# ---- the wheel -----------------------------------------------------------------------------------

WHEEL_ONLY = ("rayda/", "rayda-")
"""Every path in the wheel starts with one of these: the package and its .dist-info."""

INSTALLED_CHECK = r"""
import sys, types
from pathlib import Path

import rayda, rayda.actors.learner, rayda.cluster
from rayda.cli import resolve_spec_path
from rayda.config import load_recipe
from rayda.spec import default_spec_dir, load_spec

target = Path(sys.argv[1]).resolve()
for path in (rayda.__file__, rayda.actors.learner.__file__, default_spec_dir(), rayda.cluster.RUNTIME_ENV):
    assert Path(path).resolve().is_relative_to(target), f"{path} is not the installed copy under {target}"

recipe = load_recipe("tiny")
spec = load_spec(resolve_spec_path(recipe.spec.path))
assert spec.categories and resolve_spec_path("specs") == default_spec_dir()

# `rayda submit` without --runtime-env reads the shipped cluster/runtime_env.yaml (a stub Jobs client).
submitted = {}
class Client:
    def __init__(self, address):
        pass
    def submit_job(self, **job):
        submitted.update(job)
        return "job-1"
sys.modules["ray"] = types.ModuleType("ray")
sys.modules["ray.job_submission"] = types.SimpleNamespace(JobSubmissionClient=Client)
rayda.cluster.submit(recipe, "tiny", [], "http://head:8265", working_dir=".")
assert submitted["runtime_env"]["working_dir"] == "." and len(submitted["runtime_env"]) > 1, submitted
print("installed ok")
"""


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of this checkout (offline, no build isolation). A copy, because an
    in-tree build reuses build/lib, which keeps files deleted from the source."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(REPO, src, ignore=shutil.ignore_patterns(
        ".git", ".venv", "runs", "build", "*.egg-info", "__pycache__", ".cache", ".pytest_cache"))
    env = {**os.environ, "PIP_NO_INDEX": "1", "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp), str(src)],
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, f"pip wheel failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}"
    (whl,) = tmp.glob("rayda-*.whl")
    return whl


def test_wheel_holds_the_package_its_data_and_nothing_else(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for must in ("rayda/actors/learner.py", "rayda/recipes/tiny.yaml", "rayda/specs/index.yaml",
                 "rayda/cluster_files/runtime_env.yaml"):
        assert must in names
    assert {f"rayda/specs/{p.name}" for p in (REPO / "specs").glob("*.yaml")} <= names
    assert {f"rayda/recipes/{p.name}" for p in (REPO / "rayda" / "recipes").glob("*.yaml")} <= names
    stray = sorted(n for n in names if not n.startswith(WHEEL_ONLY))  # actors/, tests/, benchmarks/, specs/...
    assert not stray, f"outside the rayda package: {stray}"
    # Every python package in the source is in the wheel: pyproject.toml lists them by hand.
    inits = [f"rayda/{p.relative_to(REPO / 'rayda').as_posix()}" for p in (REPO / "rayda").rglob("__init__.py")]
    inits += [f"rayda/actors/{p.relative_to(REPO / 'actors').as_posix()}" for p in (REPO / "actors").rglob("__init__.py")]
    missing = sorted(i for i in inits if i not in names)
    assert not missing, f"packages missing from [tool.setuptools] packages in pyproject.toml: {missing}"


def test_installed_wheel_runs_from_any_directory(wheel, tmp_path):
    target, elsewhere = tmp_path / "site", tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(target), str(wheel)],
                         capture_output=True, text=True)
    assert out.returncode == 0, f"pip install failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}"
    env = {**os.environ, "PYTHONPATH": str(target)}
    run = dict(env=env, cwd=elsewhere, capture_output=True, text=True)
    out = subprocess.run([sys.executable, "-m", "rayda.cli", "spec", "check"], **run)
    assert out.returncode == 0 and out.stdout.startswith("ok: "), out.stdout + out.stderr
    out = subprocess.run([sys.executable, "-c", INSTALLED_CHECK, str(target)], **run)
    assert out.returncode == 0 and "installed ok" in out.stdout, out.stdout + out.stderr
