"""Packaging: `rayda.actors` is this project's `actors/` folder, and `import rayda` starts no engine."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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


def test_console_script_help():
    exe = Path(sys.executable).parent / "rayda"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True)
    assert "spec" in out.stdout and "tinyworld" in out.stdout
