"""`rl.merge`: the export moved back along the line towards where RL started, tensor by tensor."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from rayda.check import check
from rayda.config import load_recipe
from rayda.rl.merge import average_into, interpolate, merge_folder


def _model(folder, seed: int, shards: int = 1) -> dict:
    """A folder of safetensors weights (in `shards` files) with seeded values; returns its tensors."""
    g = torch.Generator().manual_seed(seed)
    tensors = {f"layers.{i}.weight": torch.randn(4, 3, generator=g) for i in range(4)}
    tensors["embed.weight"] = torch.randn(5, 3, generator=g).to(torch.bfloat16)
    folder.mkdir(parents=True)
    names = sorted(tensors)
    for s in range(shards):
        part = {k: tensors[k] for k in names[s::shards]}
        save_file(part, str(folder / f"model-{s + 1:05d}-of-{shards:05d}.safetensors"))
    return tensors


def _loaded(folder) -> dict:
    out = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(f)))
    return out


def test_interpolate_is_the_straight_line_in_fp32_and_keeps_the_dtype():
    a, b = torch.zeros(3), torch.tensor([1.0, 2.0, 4.0])
    assert torch.equal(interpolate(a, b, 0.75), torch.tensor([0.75, 1.5, 3.0]))
    assert torch.equal(interpolate(a, b, 1.0), b) and torch.equal(interpolate(a, b, 0.0), a)
    low = interpolate(a.to(torch.bfloat16), b.to(torch.bfloat16), 0.5)
    assert low.dtype == torch.bfloat16 and torch.equal(low.float(), torch.tensor([0.5, 1.0, 2.0]))
    with pytest.raises(ValueError, match="shapes differ"):
        interpolate(torch.zeros(2), torch.zeros(3), 0.5)


def test_merge_folder_moves_every_tensor_of_every_shard_and_scales_the_adapters_b(tmp_path):
    start, end = _model(tmp_path / "start", seed=0), _model(tmp_path / "rl", seed=1, shards=2)  # sharded apart
    adapter = tmp_path / "rl" / "adapter"
    adapter.mkdir()
    lora = {"x.lora_A.weight": torch.ones(2, 3), "x.lora_B.weight": torch.full((3, 2), 2.0)}
    save_file(lora, str(adapter / "adapter_model.safetensors"))

    assert merge_folder(tmp_path / "rl", str(tmp_path / "start"), 0.25) == len(end)
    merged = _loaded(tmp_path / "rl")
    assert merged.keys() == end.keys()
    for k, v in merged.items():
        want = (start[k].float() + 0.25 * (end[k].float() - start[k].float())).to(end[k].dtype)
        assert v.dtype == end[k].dtype and torch.equal(v, want), k
        assert not torch.equal(v, end[k]), k
    scaled = load_file(str(adapter / "adapter_model.safetensors"))
    assert torch.equal(scaled["x.lora_B.weight"], torch.full((3, 2), 0.5))
    assert torch.equal(scaled["x.lora_A.weight"], lora["x.lora_A.weight"])


def test_a_tensor_the_start_lacks_is_an_error_naming_it(tmp_path):
    _model(tmp_path / "start", seed=0)
    end = _model(tmp_path / "rl", seed=1)
    save_file({**end, "extra.bias": torch.zeros(2)}, str(tmp_path / "rl" / "model-00001-of-00001.safetensors"))
    with pytest.raises(KeyError, match="has no tensor 'extra.bias'"):
        merge_folder(tmp_path / "rl", str(tmp_path / "start"), 0.5)
    with pytest.raises(FileNotFoundError, match="no \\*.safetensors"):
        merge_folder(tmp_path / "rl", str(tmp_path), 0.5)


def test_average_into_is_the_uniform_mean_of_all_the_folders(tmp_path):
    """`sft.average_last`: the export and each of its checkpoints' snapshots weigh the same."""
    models = [_model(tmp_path / f"m{i}", seed=i, shards=1 + i % 2) for i in range(4)]
    assert average_into(tmp_path / "m0", [tmp_path / "m1", tmp_path / "m2", tmp_path / "m3"]) == 4
    for k, v in _loaded(tmp_path / "m0").items():
        want = sum(m[k].float() for m in models) / 4
        tol = 1e-6 if v.dtype == torch.float32 else 2e-2  # bf16 rounds after each of the three steps
        assert v.dtype == models[0][k].dtype and (v.float() - want).abs().max().item() < tol, k
    assert average_into(tmp_path / "m1", []) == 1 and _loaded(tmp_path / "m1").keys() == models[1].keys()


@pytest.mark.parametrize("weight", [0.0, -0.5, 1.5])
def test_check_keeps_the_weight_in_the_unit_interval(weight):
    errors = check(load_recipe("tiny", [f"rl.merge={weight}"])).errors
    assert errors == [f"sizes: rl.merge must be in (0, 1] (the share of RL's update the export keeps), got {weight}"]
