"""The tiny world's tokenizer: a small byte-level BPE with a chat template.

The vocabulary is kept small on purpose (STACK.md): with whole-word tokens many held-out words map to
tokens that never occur in training, their embeddings stay at their random initialisation and the
model falls apart on held-out prompts. `unseen_share` measures this.

Roles, end of turn and pad are special tokens (dropped by `skip_special_tokens`); `<think>` and
`</think>` are single added tokens that are NOT special, so decoded completions keep them (vLLM and
`generate` decode with `skip_special_tokens=True` by default) and `rayda.reasoning.split` sees them.
"""

from __future__ import annotations

from typing import Iterable

from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

SYSTEM, USER, ASSISTANT, END, PAD = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<|pad|>"
THINK_OPEN, THINK_CLOSE = "<think>", "</think>"
SPECIAL_TOKENS = (PAD, END, SYSTEM, USER, ASSISTANT)
REASONING_TOKENS = (THINK_OPEN, THINK_CLOSE)

# One line per message, no whitespace between tokens: every character here is a token the tiny model
# must learn, and the prompt of a conversation must be an exact prefix of its full rendering.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'assistant' -%}"
    "<|assistant|>"
    "{%- if message.get('reasoning_content') -%}<think>{{ message['reasoning_content'] }}</think>{%- endif -%}"
    "{{ message['content'] }}<|end|>"
    "{%- elif message['role'] in ('system', 'user') -%}"
    "<|{{ message['role'] }}|>{{ message['content'] }}<|end|>"
    "{%- else -%}"
    "{{ raise_exception('unknown role ' ~ message['role']) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}<|assistant|>{%- endif -%}"
)


def train_tokenizer(texts: Iterable[str], vocab_size: int, max_length: int) -> PreTrainedTokenizerFast:
    """Train a byte-level BPE of `vocab_size` tokens (specials included) on `texts`."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = [AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS]
    reasoning = [AddedToken(t, special=False, normalized=False) for t in REASONING_TOKENS]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size - len(REASONING_TOKENS),
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_tokens(reasoning)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        eos_token=END,
        model_max_length=max_length,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def chat_ids(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> list[int]:
    """Token ids of `messages` rendered with the chat template (transformers 5 returns a dict otherwise)."""
    return list(
        tokenizer.apply_chat_template(
            messages, tokenize=True, add_generation_prompt=add_generation_prompt, return_dict=False
        )
    )


def unseen_share(seen_ids: set[int], ids: Iterable[list[int]]) -> float:
    """Share of token positions in `ids` whose token never occurs in `seen_ids` (the training stream)."""
    total = unseen = 0
    for seq in ids:
        total += len(seq)
        unseen += sum(1 for t in seq if t not in seen_ids)
    return unseen / total if total else 0.0
