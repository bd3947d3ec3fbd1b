"""`rl.merge`: the exported policy moved back part of the way towards where RL started.

With weight w the export is `start + w * (rl - start)`, tensor by tensor (WiSE-FT's interpolation,
which WARP, arXiv 2406.16768, applies to RLHF as "interpolation towards the initialisation"). RL's
end point is one draw of a noisy trajectory; the straight line back to the start keeps most of
the reward it gained and less of the drift the reward cannot see (the reasoning's citations, which
the answer-only judge never reads). Measured on the tiny recipe: README, "What the pipeline learns".

`sft.average_last` uses the same line for checkpoint averaging: `average_into` makes SFT's export the
uniform mean of its final weights and of its last checkpoints' (the running mean is one interpolation
per checkpoint).

Pure file work, no Ray: the stage calls `merge_folder` on its export before it is published.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

ADAPTER = "adapter"
"""The subfolder where a LoRA run's export also keeps its adapter (`export_hf`)."""


def interpolate(start: torch.Tensor, end: torch.Tensor, weight: float) -> torch.Tensor:
    """start + weight * (end - start), computed in fp32 and returned in `end`'s dtype."""
    if start.shape != end.shape:
        raise ValueError(f"shapes differ: {tuple(start.shape)} against {tuple(end.shape)}")
    a, b = start.float(), end.float()
    return (a + weight * (b - a)).to(end.dtype).contiguous()


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a Hugging Face model folder (one file or the shards of an index)."""
    files = sorted(Path(folder).glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"merge: {folder} holds no *.safetensors weights")
    return files


def tensor_index(folder: Path) -> dict[str, Path]:
    """Tensor name -> the file in `folder` that holds it."""
    index = {}
    for f in weight_files(folder):
        with safe_open(str(f), framework="pt") as g:
            index.update({k: f for k in g.keys()})
    return index


def local_weights(model: str) -> Path:
    """The folder holding `model`'s weights: a local folder as it is, a hub name from the hub's cache
    (where the learner's `from_pretrained` already put it)."""
    if Path(model).is_dir():
        return Path(model)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(model, allow_patterns=["*.safetensors", "*.json"]))


def merge_folder(folder: Path, start: str, weight: float) -> int:
    """Rewrite the weights in the exported `folder` as start + weight * (folder - start), one file at
    a time (a file's tensors and their counterparts are in memory, never two whole models). A LoRA
    export's `adapter/` is scaled to match (its lora_B by `weight`: the update is linear in B).
    Returns the number of tensors merged; every tensor of the export must exist in `start`."""
    folder = Path(folder)
    index = tensor_index(local_weights(start))
    merged = 0
    for f in weight_files(folder):
        tuned = load_file(str(f))
        missing = [k for k in tuned if k not in index]
        if missing:
            raise KeyError(f"merge: {start} has no tensor {missing[0]!r} (of {f.name}); the export and the model "
                           "it is merged with must be the same architecture")
        out = {}
        for source in sorted({index[k] for k in tuned}):  # each of the start's files opened once
            with safe_open(str(source), framework="pt") as g:
                for name in (k for k in tuned if index[k] == source):
                    out[name] = interpolate(g.get_tensor(name), tuned[name], weight)
        save_file(out, str(f), metadata={"format": "pt"})
        merged += len(out)
    adapter = folder / ADAPTER
    if adapter.is_dir():
        for f in weight_files(adapter):
            tensors = load_file(str(f))
            save_file({k: (v * weight).to(v.dtype) if "lora_B" in k else v for k, v in tensors.items()}, str(f),
                      metadata={"format": "pt"})
    return merged


def average_into(folder: Path, others: list[Path]) -> int:
    """Rewrite the weights in `folder` as the uniform mean of its own and those of each of `others`:
    after i of them the folder holds the mean m of i + 1, and the next one, x, makes it
    x + i/(i+1) * (m - x). Returns how many models the mean is over."""
    for i, other in enumerate(others, start=1):
        merge_folder(folder, str(other), i / (i + 1))
    return len(others) + 1
