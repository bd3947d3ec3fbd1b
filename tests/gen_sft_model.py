"""A random tiny Llama with a word-level tokenizer and a chat template, saved by path.

The gen-sft tests use it where only the mechanics matter (engines, actors, resumption): it loads in
vLLM in seconds and needs no tiny-world build. Its output is noise, so nearly every sample is
malformed; tests that need accepted rows use the tiny world instead.
"""

from __future__ import annotations

from pathlib import Path

CHAT_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}<|assistant|>"
    "{% if m.get('reasoning_content') %}<think>{{ m['reasoning_content'] }}</think>{% endif %}"
    "{{ m['content'] }}<|end|>"
    "{% else %}<|{{ m['role'] }}|>{{ m['content'] }}<|end|>{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


def build_random_model(out_dir: Path, corpus: str, hidden: int = 128, layers: int = 2, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    out_dir = Path(out_dir)
    if (out_dir / "config.json").exists():
        return out_dir
    special = ["<unk>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<think>", "</think>"]
    # Byte-level BPE: every string is encodable, which structured outputs (xgrammar) need.
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=600, special_tokens=special, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator([corpus], trainer)
    vocab = tok.get_vocab()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="<|end|>", pad_token="</s>",
        additional_special_tokens=special[3:],
    )
    fast.chat_template = CHAT_TEMPLATE
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(vocab), hidden_size=hidden, intermediate_size=hidden * 2, num_hidden_layers=layers,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=vocab["<s>"], eos_token_id=vocab["<|end|>"], pad_token_id=vocab["</s>"],
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    fast.save_pretrained(out_dir)
    return out_dir


def cached_random_model(corpus: str) -> Path:
    """`build_random_model` once per corpus per machine (in the temp folder), shared by test modules."""
    import hashlib
    import os
    import shutil
    import tempfile
    import uuid

    key = hashlib.sha256(corpus.encode()).hexdigest()[:12]
    root = Path(tempfile.gettempdir()) / f"rayda-test-model-{key}"
    if (root / "config.json").exists():
        return root
    tmp = root.parent / f".tmp-{root.name}-{uuid.uuid4().hex[:6]}"
    build_random_model(tmp, corpus)
    try:
        os.rename(tmp, root)
    except OSError:  # another process won the race
        shutil.rmtree(tmp, ignore_errors=True)
    return root


def spec_corpus(spec) -> str:
    return "\n".join(spec.compile(c) for c in spec.category_ids)
