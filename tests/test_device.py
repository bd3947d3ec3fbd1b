"""Device decisions made where the work runs (`rayda.engines.device`): the pure rule, and the helpers
that apply it to one process's own facts (no Ray, no DeepSpeed, no vLLM: their imports are faked)."""

from __future__ import annotations

import builtins
import logging
import os
import sys
import types

import pytest
import torch

from rayda.engines.device import Decision, decide, local_decision, prepare_deepspeed


@pytest.mark.parametrize("cuda, bf16, dtype, expected", [
    (False, False, "auto", Decision("cpu", "gloo", "float32")),
    (True, True, "auto", Decision("cuda", "nccl", "bfloat16")),
    (True, False, "auto", Decision("cuda", "nccl", "float32")),     # a GPU without bf16
    (False, True, "auto", Decision("cpu", "gloo", "float32")),      # bf16 counts only on CUDA
    (False, False, "bfloat16", Decision("cpu", "gloo", "bfloat16")),  # explicit dtypes are kept
    (True, True, "float32", Decision("cuda", "nccl", "float32")),
    (True, False, "float16", Decision("cuda", "nccl", "float16")),
])
def test_decide(cuda, bf16, dtype, expected):
    assert decide(cuda, bf16, dtype) == expected


def test_decide_rejects_unknown_dtypes():
    with pytest.raises(ValueError, match="dtype must be"):
        decide(True, True, "fp8")


def _device(monkeypatch, cuda: bool, bf16: bool = True):
    """Pretend this process has (or lacks) CUDA."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: bf16)
    monkeypatch.setattr(torch.cuda, "set_device", lambda *a, **k: None)
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)


def test_prepare_deepspeed_sets_the_cpu_accelerator_only_without_cuda(monkeypatch):
    import os

    _device(monkeypatch, cuda=False)
    assert prepare_deepspeed("auto") == Decision("cpu", "gloo", "float32")
    assert os.environ["DS_ACCELERATOR"] == "cpu"

    _device(monkeypatch, cuda=True, bf16=True)
    assert prepare_deepspeed("auto") == Decision("cuda", "nccl", "bfloat16")
    assert "DS_ACCELERATOR" not in os.environ

    _device(monkeypatch, cuda=False)
    monkeypatch.setenv("DS_ACCELERATOR", "xpu")  # an explicit choice stays
    prepare_deepspeed("auto")
    assert os.environ["DS_ACCELERATOR"] == "xpu"


def test_an_explicit_dtype_does_not_ask_cuda_about_bf16(monkeypatch):
    _device(monkeypatch, cuda=True)

    def ask(*a, **k):
        raise AssertionError("is_bf16_supported opens a CUDA context: only `auto` needs it")

    monkeypatch.setattr(torch.cuda, "is_bf16_supported", ask)
    assert local_decision("float32") == Decision("cuda", "nccl", "float32")


def test_ds_config_follows_the_process_decision(monkeypatch):
    from rayda.engines.deepspeed_engine import LearnerOptions, ds_config, resolve_dtype

    opts = LearnerOptions(zero_stage=2, offload_optimizer=True)
    _device(monkeypatch, cuda=True, bf16=True)
    cfg = ds_config(opts, 1)
    assert cfg["bf16"]["enabled"] and cfg["zero_optimization"]["offload_optimizer"]["pin_memory"]
    assert resolve_dtype("auto") == "bfloat16"
    _device(monkeypatch, cuda=True, bf16=False)
    assert not ds_config(opts, 1)["bf16"]["enabled"]
    cfg = ds_config(opts, 1, Decision("cpu", "gloo", "float32"))  # an explicit decision wins
    assert not cfg["bf16"]["enabled"] and not cfg["zero_optimization"]["offload_optimizer"]["pin_memory"]


class _Stop(Exception):
    pass


@pytest.mark.parametrize("cuda, accelerator, backend", [(False, "cpu", "gloo"), (True, None, "nccl")])
def test_learner_rank_decides_before_importing_deepspeed(monkeypatch, cuda, accelerator, backend):
    """DeepSpeedLearner: DS_ACCELERATOR is in place when `import deepspeed` runs, and the process group
    uses the backend this process chose."""
    from rayda.engines.deepspeed_engine import DeepSpeedLearner, LearnerOptions

    _device(monkeypatch, cuda=cuda)
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    seen = {}
    fake = types.ModuleType("deepspeed")

    def init_distributed(dist_backend):
        seen["backend"] = dist_backend
        raise _Stop

    fake.init_distributed = init_distributed
    fake.utils = types.SimpleNamespace(logger=logging.getLogger("fake-deepspeed"))
    monkeypatch.setitem(sys.modules, "deepspeed.comm.torch", types.ModuleType("deepspeed.comm.torch"))
    real_import = builtins.__import__

    def spy(name, *args, **kwargs):
        if name.partition(".")[0] == "deepspeed":  # deepspeed, deepspeed.utils, ...
            seen.setdefault("env_at_import", __import__("os").environ.get("DS_ACCELERATOR"))
            fromlist = args[2] if len(args) > 2 else kwargs.get("fromlist")
            module = fake
            for part in name.split(".")[1:] if fromlist else ():  # `from a.b import c` gets a.b
                module = getattr(module, part)
            return module
        if name == "transformers":  # not needed before the stop, and 10 s to import
            return types.SimpleNamespace(AutoModelForCausalLM=None)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", spy)
    with pytest.raises(_Stop):
        DeepSpeedLearner("unused", LearnerOptions())
    assert seen == {"env_at_import": accelerator, "backend": backend}


def _fake_vllm(monkeypatch) -> dict:
    """A `vllm` module whose LLM records its keyword arguments; the environment variables a `VllmEngine`
    sets are cleared now and restored after the test."""
    for name in ("VLLM_LOGGING_LEVEL", "VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CPU_OMP_THREADS_BIND"):
        monkeypatch.delenv(name, raising=False)
    seen: dict = {}

    class LLM:
        def __init__(self, **kwargs):
            seen.update(kwargs)
            self.llm_engine = types.SimpleNamespace(model_config=types.SimpleNamespace(max_model_len=64))

        def get_tokenizer(self):
            return None

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=LLM))
    return seen


@pytest.mark.parametrize("cuda, bf16, learner_dtype, expected", [
    (False, True, True, "float32"),    # an RL rollout engine on CPU: the learner's fp32
    (True, True, True, "bfloat16"),    # on a bf16 GPU: the learner's bf16
    (True, False, True, "float32"),
    (False, False, False, "float32"),  # other engines on CPU: fp32, not vLLM's auto (bf16, emulated on AVX2)
    (True, True, False, "auto"),       # other engines on a GPU: vLLM's own auto
])
def test_vllm_engine_resolves_the_dtype_in_its_own_process(monkeypatch, cuda, bf16, learner_dtype, expected):
    from rayda.engines.vllm_engine import EngineConfig, VllmEngine

    seen = _fake_vllm(monkeypatch)
    _device(monkeypatch, cuda=cuda, bf16=bf16)
    engine = VllmEngine(EngineConfig(model="unused", dtype="auto", learner_dtype=learner_dtype))
    assert seen["dtype"] == expected == engine.dtype


@pytest.mark.parametrize("dtype, follow_learner, cuda, bf16, expected", [
    ("bfloat16", False, False, False, "bfloat16"),  # explicit: kept, even where it is slow
    ("float16", True, True, True, "float16"),
    ("auto", False, False, True, "float32"),
    ("auto", False, True, False, "auto"),
    ("auto", True, True, False, "float32"),
])
def test_engine_dtype_rule(dtype, follow_learner, cuda, bf16, expected):
    from rayda.engines.device import engine_dtype

    assert engine_dtype(dtype, follow_learner, cuda, bf16) == expected


@pytest.mark.parametrize("cuda, env, expected", [
    (False, {}, True),                                        # CPU: the engine core in this process
    (True, {}, False),                                        # CUDA: vLLM's own engine-core process
    (False, {"VLLM_ENABLE_V1_MULTIPROCESSING": "1"}, False),  # the user's choice is kept
])
def test_engine_in_process_rule(cuda, env, expected):
    from rayda.engines.device import engine_in_process

    assert engine_in_process(cuda, env) is expected


@pytest.mark.parametrize("cuda, mp, bind", [(False, "0", "nobind"), (True, None, None)])
def test_vllm_engine_on_cpu_starts_its_core_in_process_unbound(monkeypatch, cuda, mp, bind):
    from rayda.engines.vllm_engine import EngineConfig, VllmEngine

    _fake_vllm(monkeypatch)
    _device(monkeypatch, cuda=cuda, bf16=True)
    VllmEngine(EngineConfig(model="unused"))
    assert os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == mp
    assert os.environ.get("VLLM_CPU_OMP_THREADS_BIND") == bind
    monkeypatch.setenv("VLLM_CPU_OMP_THREADS_BIND", "0")  # the user's own binding is kept
    VllmEngine(EngineConfig(model="unused"))
    assert os.environ["VLLM_CPU_OMP_THREADS_BIND"] == "0"


def test_rl_engine_config_leaves_the_dtype_to_the_engines(tiny_recipe):
    from types import SimpleNamespace

    from rayda.stages.rl import engine_config

    cfg = engine_config(tiny_recipe, SimpleNamespace(sft_path="unused"))
    assert cfg.dtype == tiny_recipe.model.dtype and cfg.learner_dtype


def test_init_ray_sets_nothing_device_dependent(monkeypatch):
    import ray

    from rayda.config import RunConfig
    from rayda.ray_utils import init_ray

    seen = {}
    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", lambda **kw: seen.update(kw))
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.delenv("RAY_JOB_CONFIG_JSON_ENV_VAR", raising=False)
    _device(monkeypatch, cuda=False)
    init_ray(RunConfig(num_cpus=1))
    assert seen["runtime_env"]["env_vars"] == {"TOKENIZERS_PARALLELISM": "false"}


def test_kv_cache_bytes_holds_every_sequence_at_full_length_up_to_the_cap():
    from rayda.engines.vllm_engine import kv_cache_bytes

    # the tiny world's model: 4 layers, 4 KV heads of 64, fp32; 256 sequences of 1,024 tokens: 2 GiB
    assert kv_cache_bytes(4, 4, 64, 4, 1024, 256, cap=1e12) == 2 << 30
    assert kv_cache_bytes(4, 4, 64, 2, 1024, 256, cap=1e12) == 1 << 30  # bf16: half
    assert kv_cache_bytes(4, 4, 64, 4, 1024, 256, cap=5e8) == 500_000_000


@pytest.mark.parametrize("cuda, extra, expected", [
    (False, {}, 2 * 3 * 1 * 64 * 4 * 512 * 256),          # K and V x layers x KV heads x head_dim x fp32 x length x seqs
    (False, {"max_num_seqs": 8}, 2 * 3 * 1 * 64 * 4 * 512 * 8),
    (False, {"kv_cache_memory_bytes": 123}, 123),          # the user's own size is kept
    (True, {}, None),                                      # CUDA: vLLM's fraction of the GPU
])
def test_vllm_engine_on_cpu_sizes_its_kv_cache_from_the_model(monkeypatch, tmp_path, cuda, extra, expected):
    from transformers import LlamaConfig

    from rayda.engines.vllm_engine import EngineConfig, VllmEngine

    LlamaConfig(hidden_size=128, num_attention_heads=2, num_key_value_heads=1, num_hidden_layers=3,
                max_position_embeddings=512).save_pretrained(tmp_path)
    seen = _fake_vllm(monkeypatch)
    _device(monkeypatch, cuda=cuda, bf16=False)
    VllmEngine(EngineConfig(model=str(tmp_path), extra=extra))
    assert seen.get("kv_cache_memory_bytes") == expected
    assert seen["gpu_memory_utilization"] == 0.2


def test_vllm_engine_without_a_readable_config_leaves_the_kv_cache_to_vllm(monkeypatch):
    from rayda.engines.vllm_engine import EngineConfig, VllmEngine

    seen = _fake_vllm(monkeypatch)
    _device(monkeypatch, cuda=False, bf16=False)
    VllmEngine(EngineConfig(model="not-a-local-model-or-a-cached-name"))
    assert "kv_cache_memory_bytes" not in seen
