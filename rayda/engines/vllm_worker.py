"""A vLLM worker extension for weight sync (`LLM(worker_extension_cls=...)`), called by name through
`collective_rpc`, so no code has to be pickled across the engine's process boundary.

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
        model = self.model_runner.get_model()
        head = getattr(model, "lm_head", None)
        embed = getattr(getattr(model, "model", None), "embed_tokens", None)
        tied = head is not None and embed is not None and getattr(head, "weight", None) is getattr(embed, "weight", 0)
        if tied and hasattr(head, "quant_method"):
            head.quant_method.process_weights_after_loading(head)
        return tied
