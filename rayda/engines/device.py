"""Device decisions, made in the process that does the work, never on the driver.

A driver often sits on a CPU head node while its learners and engines run on GPU workers, so what the
driver sees says nothing about them. The learner rank (`rayda.engines.deepspeed_engine`) and the RL
rollout engines (`rayda.engines.vllm_engine`, `EngineConfig.learner_dtype`) each collect their own
device facts and apply the one rule, `decide`, so a rollout engine samples in the dtype its learner
trains in (fp32 on CPU matters: vLLM's own `auto` there differs from the learner's fp32). Every other
engine on CPU also runs in fp32 (`engine_dtype`), and on CPU an engine's core runs in the process that
holds it (`engine_in_process`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

DTYPES = ("bfloat16", "float16", "float32")


@dataclass(frozen=True)
class Decision:
    accelerator: str
    """DeepSpeed's accelerator: "cuda" or "cpu" (the value `DS_ACCELERATOR` takes on a CPU process)."""
    backend: str
    """torch.distributed backend: "nccl" with CUDA, "gloo" without."""
    dtype: str
    """bfloat16, float16 or float32."""


def decide(cuda_available: bool, bf16_supported: bool, dtype: str = "auto") -> Decision:
    """The rule, a pure function of one process's device facts.

    `auto` -> bfloat16 on a CUDA device that supports it, else float32. DeepSpeed's CPU accelerator
    accepts bf16, but on a CPU without AMX it trains slower than fp32 and the tiny model's exports
    would then differ from the fp32 reference in tests; ask for `bfloat16` explicitly to get it on CPU.
    An explicit dtype is kept as it is.
    """
    if dtype == "auto":
        dtype = "bfloat16" if cuda_available and bf16_supported else "float32"
    elif dtype not in DTYPES:
        raise ValueError(f"dtype must be auto, bfloat16, float16 or float32, got {dtype!r}")
    if cuda_available:
        return Decision("cuda", "nccl", dtype)
    return Decision("cpu", "gloo", dtype)


def engine_dtype(dtype: str, follow_learner: bool, cuda_available: bool, bf16_supported: bool) -> str:
    """The dtype a vLLM engine starts with, a pure function of its process's device facts.

    - An explicit dtype is kept.
    - `auto` for an engine that samples for a learner (RL rollouts): the learner's rule, `decide`.
    - `auto` for any other engine: vLLM's own `auto` on CUDA, float32 on CPU. On CPU vLLM's `auto` runs
      an fp32 checkpoint in bfloat16, and a CPU without native bf16 (AVX2: no AVX512-BF16 or AMX)
      computes its GEMMs through an emulated bf16 dot product: measured on 2 AVX2 cores, fp32 makes
      2.9x-3.1x the tokens/s with the spec in context, 4.1x-4.2x without (benchmarks/engine_dtype.py).
      fp32 is also the precision the CPU learner trains in, so an evaluation reads the model it trained.
    """
    if dtype != "auto":
        return dtype
    if follow_learner or not cuda_available:
        return decide(cuda_available, bf16_supported, dtype).dtype
    return dtype


def engine_in_process(cuda_available: bool, env: dict) -> bool:
    """Whether a vLLM engine runs its engine core in the calling process, a pure rule: on CPU, unless
    `VLLM_ENABLE_V1_MULTIPROCESSING` is already in `env` (the user's choice, kept).

    vLLM's default spawns an engine-core process and, from it, a worker process, each importing torch
    and vLLM again. Measured on 2 cores with the tiny model: 18 s to start against 3 s in process, and
    the engine core's busy wait no longer takes half of the second core while the worker generates.
    An engine of one worker then runs it in process too (vLLM's `uni` executor); one of several still
    spawns its workers. On CUDA, vLLM's default: an engine core of its own overlaps scheduling with the
    GPU's work."""
    return not cuda_available and "VLLM_ENABLE_V1_MULTIPROCESSING" not in env


def local_facts(dtype: str = "auto") -> tuple[bool, bool]:
    """(cuda_available, bf16_supported) of this process. bf16 support is asked only when `dtype` is
    `auto` (the only case that needs it): the question creates a CUDA context on the current device."""
    import torch

    cuda = torch.cuda.is_available()
    return cuda, bool(cuda and dtype == "auto" and torch.cuda.is_bf16_supported())


def local_decision(dtype: str = "auto") -> Decision:
    """`decide` applied to this process's own device facts."""
    return decide(*local_facts(dtype), dtype)


def prepare_deepspeed(dtype: str = "auto") -> Decision:
    """This process's decision; on a process without CUDA also point DeepSpeed at its CPU accelerator.

    Call it before `import deepspeed`: DeepSpeed picks its accelerator once, at import. A value of
    `DS_ACCELERATOR` already in the environment is left alone (an explicit choice), and a process
    with CUDA gets nothing set (DeepSpeed detects CUDA itself).
    """
    decision = local_decision(dtype)
    if decision.accelerator == "cpu":
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    return decision
