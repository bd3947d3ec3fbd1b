"""The tests' own model fixture: an untied model really saves its own lm_head."""

from __future__ import annotations

from safetensors import safe_open
from transformers import AutoConfig

from sft_fixtures import make_tiny_model


def test_untied_tiny_model_saves_its_own_lm_head(tmp_path):
    out = make_tiny_model(tmp_path / "untied", tied=False)
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" in f.keys()
        head, embed = f.get_tensor("lm_head.weight"), f.get_tensor("model.embed_tokens.weight")
    assert head.shape == embed.shape and not head.equal(embed)
    assert AutoConfig.from_pretrained(out).tie_word_embeddings is False
