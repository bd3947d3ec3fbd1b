"""Thin adapters around inference and training engines, imported lazily (`import rayda` stays cheap).

- `vllm_engine`: `VllmEngine(EngineConfig)` for generation, judging, RL rollouts and log-prob probes.
- `deepspeed_engine`: the learner's DeepSpeed wrapper.

Model names are resolved here too: `resolve_model` turns a recipe's model string into something an
engine can load, failing before any actor starts when a path does not exist.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


class ModelNotFound(ValueError):
    """A recipe names a model path that does not exist (or a hub name that is not available offline)."""


def resolve_model(name: str, what: str = "model") -> str:
    """A local folder as an absolute path, or a hub name as given; fails early on a missing path.

    A string that looks like a path (absolute, `./`, `../`, `~`, or a folder that exists) must be a
    folder with a `config.json`. Anything else is a hub name; when the hub is offline
    (`HF_HUB_OFFLINE=1`) it must already be in the local cache.
    """
    p = Path(name).expanduser()
    looks_like_path = name.startswith(("/", "./", "../", "~")) or p.exists()
    if looks_like_path:
        if not p.is_dir():
            raise ModelNotFound(f"{what} path {name!r} does not exist")
        if not (p / "config.json").exists():
            raise ModelNotFound(f"{what} path {name!r} has no config.json (not a Hugging Face model folder)")
        return str(p.resolve())
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        try:
            from huggingface_hub import try_to_load_from_cache

            if not isinstance(try_to_load_from_cache(name, "config.json"), str):
                raise ModelNotFound(f"{what} {name!r} is not a local folder and not in the offline hub cache")
        except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
            pass
    return name


def weights_hash(model: str) -> str:
    """sha256 over a local model's weight files (names and bytes); `hub:<name>` for a hub name."""
    p = Path(model)
    if not p.is_dir():
        return f"hub:{model}"
    files = sorted(f for f in p.iterdir() if f.suffix in (".safetensors", ".bin", ".pt") and f.is_file())
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    return h.hexdigest()[:16]
