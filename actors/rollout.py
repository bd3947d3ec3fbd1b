"""The generator actor: one vLLM engine, started once, serving batches.

Used as a Ray Data callable class in gen-sft (`map_batches(Generator, ...)`, Ray Data makes the actor
pool) and wrapped with `ray.remote` as the RL rollout actor, which calls the engine methods directly.
All logic lives in `rayda.data.gen_pipeline` and `rayda.engines.vllm_engine`.
"""

from __future__ import annotations

import time

import pyarrow as pa

from rayda import metrics
from rayda.data import gen_pipeline
from rayda.engines.vllm_engine import EngineConfig, VllmEngine
from rayda.types import RolloutBatch


class Generator:
    def __init__(self, engine_cfg: EngineConfig, gen=None, spec_texts: dict | None = None, run_seed: int = 0):
        self.engine = VllmEngine(engine_cfg)
        self.policy_version = 0  # the weights `engine_cfg.model` holds; RL syncs move it forward
        self.ready_at = time.time()  # the driver measures busy time against the time since this
        self.gen, self.spec_texts, self.run_seed = gen, spec_texts or {}, run_seed

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = gen_pipeline.generate_batch(self.engine, batch.to_pylist(), self.gen, self.spec_texts, self.run_seed)
        metrics.tokens_generated(sum(r.get("gen_tokens", 0) for r in rows))
        return pa.Table.from_pylist([dict(r, gen_ready_at=self.ready_at) for r in rows])

    # RL and probes reach the engine through these.
    def generate(self, prompts, **kw):
        return self.engine.generate(prompts, **kw)

    def prompt_logprobs(self, sequences):
        return self.engine.prompt_logprobs(sequences)

    def reload_weights(self, weights_path: str) -> None:
        self.engine.reload_weights(weights_path)

    # RL rollouts: every batch of samples is stamped with the version of the weights that produced it.
    def rollout(self, prompts, **kw) -> RolloutBatch:
        samples = self.engine.generate(prompts, logprobs=True, **kw)
        metrics.tokens_generated(sum(len(s.token_ids) for per_prompt in samples for s in per_prompt))
        return RolloutBatch(self.policy_version, tuple(tuple(s) for s in samples))

    def sync_weights(self, weights_path: str, version: int) -> int:
        self.engine.sync_weights(weights_path)
        self.policy_version = version
        return version

    # LoRA (rl.lora): the adapter's files arrive as bytes and are written to this actor's own folder,
    # so no storage is shared with the learner.
    def load_adapter(self, files: dict, version: int) -> int:
        import tempfile
        from pathlib import Path

        if getattr(self, "adapter_root", None) is None:
            self.adapter_root = Path(tempfile.mkdtemp(prefix="rayda-adapter-"))
        folder = self.adapter_root / f"v{version:06d}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            (folder / Path(name).name).write_bytes(data)
        self.engine.set_adapter(str(folder), version)
        for old in self.adapter_root.iterdir():  # vLLM has loaded it: older folders can go
            if old != folder:
                import shutil

                shutil.rmtree(old, ignore_errors=True)
        self.policy_version = version
        return version

    # Weights over the learner's process group (rayda.rl.collective).
    def engine_world_size(self) -> int:
        return self.engine.world_size()

    def join_weight_group(self, host: str, port: int, rank_offset: int, world: int, timeout_s: float) -> list[int]:
        return self.engine.join_weight_group(host, port, rank_offset, world, timeout_s)

    def receive_weights(self, wire_buckets: list, version: int) -> dict:
        """Seconds per worker: waiting for the broadcast, and in all (`VllmEngine.receive_weights`)."""
        timings = self.engine.receive_weights(wire_buckets)
        self.policy_version = version
        return {"wait_s": max(t["wait_s"] for t in timings), "total_s": max(t["total_s"] for t in timings)}

    def version(self) -> int:
        return self.policy_version
