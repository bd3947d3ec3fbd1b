"""rayda.allocator: the `rayda` command and `python -m rayda.allocator` run on Ray's jemalloc (Linux)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from rayda.allocator import jemalloc_path, preloaded_env

LIB = "/x/ray/core/libjemalloc.so"
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux") or jemalloc_path() is None,
                                reason="Ray's wheel ships jemalloc on Linux only")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="LD_PRELOAD is Linux's")
def test_preloaded_env_prepends_once_and_respects_the_switch():
    assert preloaded_env({"PATH": "/bin"}, LIB) == {"PATH": "/bin", "LD_PRELOAD": LIB}
    # a user's own preloads stay, after ours (either separator)
    assert preloaded_env({"LD_PRELOAD": "/a.so /b.so"}, LIB)["LD_PRELOAD"] == f"{LIB}:/a.so:/b.so"
    assert preloaded_env({"LD_PRELOAD": "/a.so:/b.so"}, LIB)["LD_PRELOAD"] == f"{LIB}:/a.so:/b.so"
    # already there (the re-executed process): nothing to do, so no second exec
    assert preloaded_env({"LD_PRELOAD": f"/a.so:{LIB}"}, LIB) is None
    assert preloaded_env({"RAYDA_JEMALLOC": "0"}, LIB) is None
    assert preloaded_env({}, None) is None


def _run_probe(cmd: list[str], **env) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**_env(), **env})
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _env() -> dict:
    import os

    return {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "RAYDA_JEMALLOC")}


PROBE = "print('jemalloc:', 'libjemalloc' in open('/proc/self/maps').read())"


@linux_only
def test_launcher_runs_a_command_on_jemalloc():
    assert "jemalloc: True" in _run_probe([sys.executable, "-m", "rayda.allocator", sys.executable, "-c", PROBE])
    off = _run_probe([sys.executable, "-m", "rayda.allocator", sys.executable, "-c", PROBE], RAYDA_JEMALLOC="0")
    assert "jemalloc: False" in off


@linux_only
def test_the_rayda_command_reexecutes_itself_on_jemalloc():
    """`main()` without arguments is the console script: it re-runs its own command line once, preloaded.
    A call from Python (`main([...])`) is left alone."""
    specs = Path(__file__).resolve().parent.parent / "specs"
    code = ("import sys; from rayda.cli import main; sys.argv = ['rayda', 'spec', 'check', %r]; rc = main(); %s"
            % (str(specs), PROBE))
    out = _run_probe([sys.executable, "-c", code])
    assert out.count("jemalloc: True") == 1 and "content hash" in out, out
    code = "from rayda.cli import main; rc = main(['spec', 'check', %r]); %s" % (str(specs), PROBE)
    assert "jemalloc: False" in _run_probe([sys.executable, "-c", code])
