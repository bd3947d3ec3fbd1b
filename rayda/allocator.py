"""jemalloc for rayda's processes on Linux: Ray's own copy, preloaded (LD_PRELOAD).

PyTorch on CPU allocates and frees tensors of hundreds of kilobytes at every step; glibc's malloc hands
blocks that large back to the kernel when they are freed and faults them in again at the next step, where
jemalloc keeps them for reuse (the likely cause of the gain, not measured apart). Measured on the
development VM (2 cores): the tiny world's 200 pre-training steps 261 s -> 177 s in `make demo`, 1.09-1.14x
over 25 steps in three runs of `benchmarks/allocator.py`, the tiny recipe's RL stage 336 s -> 309 s; the same weights,
bit for bit (README). Ray ships jemalloc in its Linux wheels (`ray/core/libjemalloc.so`),
so this adds no dependency.

The `rayda` command re-executes itself once with the library preloaded (`reexec`); a local Ray cluster
it starts inherits the environment, so its workers (vLLM engines, DeepSpeed learners) run on jemalloc
too. `python -m rayda.allocator CMD ...` runs any command the same way (`make test` runs pytest so).
RAYDA_JEMALLOC=0 keeps the system allocator.
"""

from __future__ import annotations

import os
import sys
from importlib.util import find_spec
from pathlib import Path


def jemalloc_path() -> str | None:
    """Ray's bundled libjemalloc.so, found without importing Ray; None where the wheel has none (macOS)."""
    spec = find_spec("ray")
    for root in (spec.submodule_search_locations or []) if spec else []:
        lib = Path(root) / "core" / "libjemalloc.so"
        if lib.is_file():
            return str(lib)
    return None


def preloaded_env(env: dict, lib: str | None) -> dict | None:
    """`env` with `lib` first in LD_PRELOAD; None when nothing is to change: no library, not Linux,
    RAYDA_JEMALLOC=0, or the library is preloaded already (so a re-executed process stops there)."""
    if not lib or not sys.platform.startswith("linux") or env.get("RAYDA_JEMALLOC", "1") == "0":
        return None
    current = [p for p in env.get("LD_PRELOAD", "").replace(":", " ").split() if p]
    if lib in current:
        return None
    return {**env, "LD_PRELOAD": ":".join([lib, *current])}


def reexec() -> None:
    """Replace this process with the same command line under jemalloc; returns only where nothing changes."""
    env = preloaded_env(dict(os.environ), jemalloc_path())
    if env is not None:
        sys.stdout.flush()
        os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def main(argv: list[str]) -> int:
    """`python -m rayda.allocator CMD [ARGS...]`: run CMD with jemalloc preloaded where it can be."""
    if not argv:
        print("usage: python -m rayda.allocator CMD [ARGS...]", file=sys.stderr)
        return 2
    env = preloaded_env(dict(os.environ), jemalloc_path()) or dict(os.environ)
    os.execvpe(argv[0], argv, env)
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
