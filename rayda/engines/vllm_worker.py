"""A vLLM worker extension for weight sync (`LLM(worker_extension_cls=...)`), called by name through
`collective_rpc`, so no code has to be pickled across the engine's process boundary. Weights arrive
from a snapshot folder (`rayda_reload_weights`) or over the learner's process group
(`rayda_join_weight_group`, then `rayda_receive_weights` per sync; `rayda.rl.collective`).

Why it exists: vLLM's CPU backend prepacks each linear layer's weight for its GEMM kernels when a
model loads. `reload_weights` reloads the checkpoint in place and re-packs every layer it loaded, but a
model with tied embeddings has no `lm_head.weight` in its checkpoint, so the output projection keeps
the packing of the *old* embedding: after a sync its logits are stale (measured: log-prob error of
30 nats on a random tiny model). Re-running the lm_head's post-load processing fixes it (error 1.5e-5).
On GPU the output projection reads the (shared, reloaded) weight directly and the repack is harmless.
"""

from __future__ import annotations


class WeightSyncExtension:
    """Methods added to every vLLM worker. `self` is the worker."""

    def rayda_reload_weights(self, weights_path: str) -> bool:
        """Reload weights in place from a Hugging Face safetensors folder; re-pack a tied lm_head."""
        self.model_runner.reload_weights(weights_path=weights_path)
        return self._rayda_repack_tied_head()

    def rayda_join_weight_group(self, host: str, port: int, rank_offset: int, world: int, timeout_s: float) -> int:
        """Join the learner's weight group (`rayda.rl.collective`) as rank `rank_offset` + this worker's
        rank; an earlier group is dropped first. Returns the rank taken."""
        from rayda.rl.collective import join

        self.rayda_weight_group = None
        rank = rank_offset + self.rank
        self.rayda_weight_group = join(host, port, rank, world, self._rayda_device(), timeout_s)
        return rank

    def rayda_receive_weights(self, wire_buckets: list) -> dict:
        """Receive the learner's broadcast and load it in place as it arrives (vLLM's reload, fed from
        the stream instead of a folder); re-pack a tied lm_head. Returns seconds waiting for the
        broadcast (`wait_s`) and in all (`total_s`)."""
        import time

        from rayda.rl.collective import from_wire, receive

        group = getattr(self, "rayda_weight_group", None)
        if group is None:
            raise RuntimeError("rayda_receive_weights: this worker has not joined a weight group")
        t0, timing = time.perf_counter(), {"wait_s": 0.0}
        stream = receive(group, from_wire(wire_buckets), self._rayda_device(), timing)
        self.model_runner.reload_weights(weights_iterator=stream)
        self._rayda_repack_tied_head()
        return {**timing, "total_s": time.perf_counter() - t0}

    def _rayda_device(self):
        return next(self.model_runner.get_model().parameters()).device

    def _rayda_repack_tied_head(self) -> bool:
        model = self.model_runner.get_model()
        head = getattr(model, "lm_head", None)
        embed = getattr(getattr(model, "model", None), "embed_tokens", None)
        tied = head is not None and embed is not None and getattr(head, "weight", None) is getattr(embed, "weight", 0)
        if tied and hasattr(head, "quant_method"):
            head.quant_method.process_weights_after_loading(head)
        return tied
