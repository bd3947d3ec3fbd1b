"""The tiny base model: a small Llama pre-trained on policy-free synthetic transcripts.

Pre-training teaches the format (`<think>` reasoning that cites a clause and states a decision, then an
answer in that decision's style) but not the policy: behaviour and clause are random. The loss is on
the assistant tokens only (the chain of thought, the answer and the end-of-turn token): the base model's
job is to write responses, the prompt and the spec are inputs it must read, and it is the masking SFT
uses later. Measured at 100 steps of 32: 0.67 well-formed with this loss, 0.51 with the user turn as a
target too (`build.ASSISTANT_ONLY_LOSS`), so the capacity is better spent on the response.

Transcripts that carry `spec(category)` in a system message are expensive (the spec is several hundred
tokens, a plain transcript about a hundred). All spec-carrying rows of one category in a step share the
same system prefix, so its keys and values are computed once per step without gradient and the rows are
trained as suffixes attending to that cached prefix. The forward pass is exactly the full-sequence one;
only the gradient through the prefix's keys and values is dropped (the prefix is never a loss target).
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from transformers import DynamicCache, GenerationConfig, LlamaConfig, LlamaForCausalLM

from rayda.tinyworld.tokenizer import END, PAD, chat_ids

IGNORE = -100


@dataclass
class Example:
    """One tokenised transcript: `ids` after the (optional) shared system prefix, loss from `start`."""

    ids: list[int]
    start: int
    """Index in `ids` of the first target token (the first assistant token)."""
    prefix: str | None = None
    """Key of the shared system prefix these ids follow (the category), or None for no system message."""


def make_model(cfg, tokenizer, seed: int = 0) -> LlamaForCausalLM:
    """A Llama with tied embeddings sized by `cfg` (a TinyWorldConfig), randomly initialised."""
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=_round_up(cfg.hidden_size * 8 // 3, 8),
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_position,
        tie_word_embeddings=True,
        rms_norm_eps=1e-5,
        bos_token_id=None,
        eos_token_id=tokenizer.convert_tokens_to_ids(END),
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD),
    )
    model = LlamaForCausalLM(config)
    model.generation_config = generation_config(tokenizer)
    return model


def generation_config(tokenizer) -> GenerationConfig:
    return GenerationConfig(
        eos_token_id=tokenizer.convert_tokens_to_ids(END),
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD),
        bos_token_id=None,
    )


def _round_up(n: int, k: int) -> int:
    return (n + k - 1) // k * k


def encode(tokenizer, messages: list[dict], cot: str, answer: str) -> tuple[list[int], int]:
    """(ids of the whole conversation with the assistant turn, index of the first assistant token).

    Checks that the prompt's ids (with the generation prompt) are an exact prefix of the full ids, so
    the loss mask falls exactly on the assistant's tokens.
    """
    prompt = chat_ids(tokenizer, messages, add_generation_prompt=True)
    full = chat_ids(tokenizer, [*messages, {"role": "assistant", "content": answer, "reasoning_content": cot}])
    if full[: len(prompt)] != prompt:
        raise ValueError("chat template: the prompt's ids are not a prefix of the full transcript's ids")
    return full, len(prompt)


def default_threads() -> int:
    """Torch threads for the tiny world: $RAYDA_TORCH_THREADS if set; else every core this process may
    use while the machine is otherwise idle, and 1 when other work already loads it.

    Measured on a shared 2-core machine: with another busy process, 2 torch threads spin against each
    other and ran `generate` 16x and pre-training about 20x slower than 1 thread did. On an idle one, 2
    threads pre-train 1.46x faster than 1 (the same weights, bit for bit).
    """
    if os.environ.get("RAYDA_TORCH_THREADS"):
        return max(1, int(os.environ["RAYDA_TORCH_THREADS"]))
    cores = len(os.sched_getaffinity(0))
    return cores if busy_cores() < 0.5 * cores else 1


def busy_cores(window: float = 0.5) -> float:
    """How many cores other work keeps busy now: from /proc/stat over `window` seconds, else the 1-minute
    load average. Not the load average where /proc/stat exists: it lags by about a minute, so right
    after `pip install` (the demo's first minutes) it reported a busy machine and the world's
    pre-training ran on one thread of two: 341 s, against 244 s on two."""

    def ticks() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
        return sum(fields[:8]) - idle, sum(fields[:8])

    before = ticks()
    if before is None:
        try:
            return os.getloadavg()[0]
        except OSError:
            return 0.0
    time.sleep(window)
    after = ticks()
    busy, total = after[0] - before[0], after[1] - before[1]
    return os.cpu_count() * busy / total if total > 0 else 0.0


@contextlib.contextmanager
def torch_threads(n: int | None = None):
    """Use `n` torch threads (default: `default_threads()`), then restore the previous number."""
    before = torch.get_num_threads()
    torch.set_num_threads(n or default_threads())
    try:
        yield
    finally:
        torch.set_num_threads(before)


def fast_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AMX or AVX512-BF16): then training autocasts to bf16,
    about 1.4x faster on two cores. Weights, optimizer state and the loss stay fp32."""
    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:
        return False


def pretrain(
    model: LlamaForCausalLM,
    examples: list[Example],
    prefixes: dict[str, list[int]],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int = 0,
    progress: bool = True,
) -> dict:
    """Train on `examples` for `steps` steps of `batch_size` (cosine schedule, short warm-up).

    `prefixes` maps an example's `prefix` key to the ids of its shared system message. Returns
    {"loss_first", "loss_last", "tokens", "steps"}; `tokens` counts every token a step processed.
    """
    from tqdm.auto import tqdm

    rng = random.Random(seed)
    bf16 = fast_bf16()
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.98), weight_decay=0.01)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
    )
    order: list[int] = []
    losses, tokens = [], 0
    bar = tqdm(range(steps), desc="tinyworld pre-train", disable=not progress, mininterval=2)
    for _ in bar:
        batch = []
        while len(batch) < batch_size:
            if not order:
                order = list(range(len(examples)))
                rng.shuffle(order)
            batch.append(examples[order.pop()])
        groups: dict[str | None, list[Example]] = {}
        for ex in batch:
            groups.setdefault(ex.prefix, []).append(ex)
        n_targets = sum(len(ex.ids) - ex.start for ex in batch)
        total = 0.0
        for key, rows in groups.items():
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss, n_tok = _group_loss(model, rows, prefixes.get(key) if key else None)
            (loss / n_targets).backward()
            total += loss.item()
            tokens += n_tok
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(total / n_targets)
        bar.set_postfix(loss=f"{losses[-1]:.3f}", refresh=False)
    model.eval()
    tail = losses[-10:] or [float("nan")]
    return {
        "loss_first": losses[0] if losses else None,
        "loss_last": sum(tail) / len(tail),
        "tokens": tokens,
        "steps": steps,
        "bf16_autocast": bf16,
    }


def _group_loss(model, rows: list[Example], prefix: list[int] | None) -> tuple[torch.Tensor, int]:
    """Summed next-token loss over the target tokens of `rows`, which all follow `prefix` (or nothing)."""
    width = max(len(ex.ids) for ex in rows)
    ids = torch.full((len(rows), width), model.config.pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, ex in enumerate(rows):
        ids[i, : len(ex.ids)] = torch.tensor(ex.ids)
        labels[i, ex.start : len(ex.ids)] = torch.tensor(ex.ids[ex.start :])
        mask[i, : len(ex.ids)] = 1
    kwargs: dict = {}
    n_tok = int(mask.sum())
    if prefix:
        p = len(prefix)
        with torch.no_grad():
            cache = model(input_ids=torch.tensor([prefix]), use_cache=True).past_key_values
        b = len(rows)
        kv = [(layer.keys.expand(b, -1, -1, -1), layer.values.expand(b, -1, -1, -1)) for layer in cache.layers]
        kwargs = dict(
            past_key_values=DynamicCache(ddp_cache_data=kv, config=model.config),
            position_ids=torch.arange(p, p + width).expand(b, -1),
        )
        mask = torch.cat([torch.ones((b, p), dtype=torch.long), mask], dim=1)
        n_tok += p
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False, **kwargs).logits
    loss = F.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)).float(), labels[:, 1:].reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
    return loss, n_tok


@torch.no_grad()
def generate(
    model,
    tokenizer,
    conversations: list[list[dict]],
    max_new_tokens: int = 160,
    temperature: float = 1.0,
    batch_size: int = 80,
    seed: int = 0,
    progress: bool = False,
) -> list[str]:
    """Complete each conversation with transformers `generate` (temperature 0: greedy); decoded text
    keeps `<think>`/`</think>` and drops the special tokens."""
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    model.eval()
    pad = tokenizer.convert_tokens_to_ids(PAD)
    out: list[str] = []
    starts = range(0, len(conversations), batch_size)
    for s in tqdm(starts, desc="tinyworld generate", disable=not progress):
        prompts = [chat_ids(tokenizer, c, add_generation_prompt=True) for c in conversations[s : s + batch_size]]
        width = max(map(len, prompts))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        sampling = dict(do_sample=True, temperature=temperature, top_k=0, top_p=1.0) if temperature > 0 else dict(do_sample=False)
        gen = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            eos_token_id=tokenizer.convert_tokens_to_ids(END),
            pad_token_id=pad,
            **sampling,
        )
        out += tokenizer.batch_decode(gen[:, width:], skip_special_tokens=True)
    return out
