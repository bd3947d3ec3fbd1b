"""When two Hugging Face checkpoints differ only in their weights.

An engine started for one such checkpoint can serve the other by loading its weights in place
(`VllmEngine.sync_weights`, 0.05 s for the tiny model) instead of starting again (import, load,
memory profile: 15 s here, minutes for a large model on GPU). `rayda run` evaluates base, SFT and RL,
three checkpoints of one family, in one engine this way.
"""

from __future__ import annotations

import json
from pathlib import Path

AS_JSON = ("config.json", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json")
"""Compared as dicts, without `IGNORED` keys: saving adds bookkeeping that changes nothing loaded."""
AS_BYTES = ("tokenizer.json", "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja")
IGNORED = {"_name_or_path", "name_or_path", "transformers_version", "_commit_hash", "is_local", "local_files_only"}


def _json(path: Path) -> dict | None:
    if not path.exists():
        return None
    return {k: v for k, v in json.loads(path.read_text()).items() if k not in IGNORED}


def same_family(a: str, b: str) -> bool:
    """Whether local checkpoint folders `a` and `b` have the same architecture, dtype, tokenizer, chat
    template and generation defaults, with full safetensors weights in `b` (no adapter): then only their
    weights differ. A hub name, or anything unreadable, is not the same family (the caller starts anew)."""
    pa, pb = Path(a), Path(b)
    if not (pa.is_dir() and pb.is_dir()) or (pb / "adapter_config.json").exists() or not list(pb.glob("*.safetensors")):
        return False
    try:
        if any(_json(pa / f) != _json(pb / f) for f in AS_JSON) or _json(pb / "config.json") is None:
            return False
    except (OSError, ValueError):
        return False
    return all((pa / f).exists() == (pb / f).exists() and (not (pa / f).exists() or (pa / f).read_bytes() == (pb / f).read_bytes())
               for f in AS_BYTES)
