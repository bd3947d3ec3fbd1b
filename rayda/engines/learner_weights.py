"""How a learner rank's weights leave it: a state dict, a safetensors snapshot, a broadcast to the rollout
engines (`rayda.rl.collective`), LoRA adapter files, a Hugging Face export.

`WeightsOut` is a mixin of `DeepSpeedLearner`: it reads the rank's `engine` (DeepSpeed), `rank`,
`device`, `opts`, `lora` and `model_path`. Every method that gathers parameters must be called on
all ranks at once (ZeRO-3 gathers are collectives); rank 0 writes or sends.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch


class WeightsOut:
    def _gathered(self, fn, params: list | None = None):
        """Run fn(module) with the full parameters present (ZeRO-3 gathers `params`, by default all of
        them; every rank must call)."""
        import deepspeed

        module = self.engine.module
        if self.opts.zero_stage == 3:
            params = list(module.parameters()) if params is None else [p for p in params if hasattr(p, "ds_id")]
            with deepspeed.zero.GatheredParameters(params, modifier_rank=None):
                return fn(module)
        return fn(module)

    def state_dict(self) -> dict | None:
        """The full state dict as CPU tensors on rank 0 (None on the other ranks). Tied weights stay
        one shared tensor."""
        def copy(module):
            if self.rank != 0:
                return None
            seen: dict[int, torch.Tensor] = {}
            # keep_vars: the parameters themselves, so a tied weight shows up as the same object twice.
            return {k: seen.setdefault(id(v), v.detach().to("cpu", copy=True))
                    for k, v in module.state_dict(keep_vars=True).items()}

        return self._gathered(copy)

    def save_weights(self, path: str) -> dict | None:
        """The current weights as one safetensors file `path/model.safetensors` (rank 0 writes, written
        to a temporary name and renamed, so a reader never sees half a file): the snapshot rollout
        engines reload. A tied lm_head is written once, under the embedding's name, as in `export_hf`.
        Returns {"bytes", "seconds"} on rank 0, None elsewhere."""
        import time

        t0 = time.perf_counter()
        state = self.state_dict()
        info = None
        if self.rank == 0:
            from safetensors.torch import save_file

            seen, unique = set(), {}
            for k, v in state.items():
                if id(v) not in seen:
                    seen.add(id(v))
                    unique[k] = v
            target = Path(path)
            target.mkdir(parents=True, exist_ok=True)
            tmp = target / ".model.safetensors.tmp"
            save_file(unique, str(tmp))
            os.replace(tmp, target / "model.safetensors")
            info = {"bytes": sum(v.numel() * v.element_size() for v in unique.values()),
                    "seconds": time.perf_counter() - t0}
        torch.distributed.barrier()
        return info

    # ---- weights over a collective (rayda.rl.collective) ----------------------------------------

    def _named_weights(self) -> list:
        """The state dict's tensors (parameters themselves, partitioned under ZeRO-3), each once."""
        from rayda.rl.collective import unique_tensors

        return unique_tensors(self.engine.module.state_dict(keep_vars=True).items())

    def weight_meta(self) -> list:
        """Name, dtype and full shape of every tensor `broadcast_weights` sends, in sending order."""
        from rayda.rl.collective import meta_of

        return [meta_of(n, t) for n, t in self._named_weights()]

    def open_weight_group(self, timeout_s: float) -> int:
        """Rank 0: host a new weight group's rendezvous; returns its port."""
        from rayda.rl.collective import open_store

        self.weight_group = None
        self.weight_store, port = open_store("0.0.0.0", timeout_s)
        return port

    def join_weight_group(self, host: str, port: int, world: int, timeout_s: float) -> None:
        """Rank 0: join the group it hosts as its rank 0 (returns once every engine worker has joined)."""
        from rayda.rl.collective import join

        self.weight_group = join(host, port, 0, world, self.device, timeout_s, store=self.weight_store)

    def broadcast_weights(self, buckets: list) -> dict | None:
        """Send the current weights bucket by bucket to the weight group. Every rank calls it (under
        ZeRO-3 each bucket's shards are gathered first, one bucket at a time); rank 0 sends.
        Returns {"bytes", "seconds"} on rank 0, None elsewhere."""
        import time

        from rayda.rl.collective import flatten, send

        if self.rank == 0 and getattr(self, "weight_group", None) is None:
            raise RuntimeError("broadcast_weights before join_weight_group")
        t0 = time.perf_counter()
        named = dict(self._named_weights())

        def gathered(bucket):  # the bucket flattened into one copy (all ranks gather; rank 0 keeps it)
            tensors = [named[m.name] for m in bucket]
            return self._gathered(lambda _: flatten(tensors) if self.rank == 0 else None, tensors)

        if self.rank == 0:
            send(self.weight_group, (gathered(b) for b in buckets))
            return {"bytes": sum(m.nbytes for b in buckets for m in b), "seconds": time.perf_counter() - t0}
        for b in buckets:
            gathered(b)
        return None

    def adapter_files(self) -> dict[str, bytes] | None:
        """Rank 0: the adapters in PEFT's format (`adapter_config.json`, `adapter_model.safetensors`) as
        bytes, which is what a LoRA weight sync moves; None on the other ranks."""
        import tempfile

        if not self.lora:
            raise RuntimeError("adapter_files needs a learner built with LoRA (opts.lora.rank > 0)")
        if self.rank != 0:
            return None
        with tempfile.TemporaryDirectory() as tmp:
            self.engine.module.save_pretrained(tmp)
            return {p.name: p.read_bytes() for p in Path(tmp).iterdir() if p.is_file() and p.name.startswith("adapter_")}

    def export_hf(self, path: str) -> None:
        """Write a Hugging Face folder (safetensors, config, tokenizer + chat template) from rank 0. With
        LoRA the adapters are merged into a copy of the weights (the folder is a plain model) and also
        written as they are to `path/adapter`."""
        if self.lora:
            return self._export_merged(path)
        state = self.state_dict()
        if self.rank == 0:
            from transformers import AutoTokenizer

            module = self.engine.module
            module.config.use_cache = True
            # A tied lm_head is the embedding under a second name: write it once, as transformers does.
            seen, unique = set(), {}
            for k, v in state.items():
                if id(v) not in seen:
                    seen.add(id(v))
                    unique[k] = v
            module.save_pretrained(path, state_dict=unique)
            AutoTokenizer.from_pretrained(self.model_path).save_pretrained(path)
        torch.distributed.barrier()

    def _export_merged(self, path: str) -> None:
        if self.rank == 0:
            import copy

            from transformers import AutoTokenizer

            peft_model = self.engine.module
            merged = copy.deepcopy(peft_model).merge_and_unload()
            merged.config.use_cache = True
            merged.save_pretrained(path)
            peft_model.save_pretrained(Path(path) / "adapter")
            AutoTokenizer.from_pretrained(self.model_path).save_pretrained(path)
        torch.distributed.barrier()
