"""The preference-model judge: RL's reward from `rayda pm`'s model (`reward.kind=pm`).

It serves a Hugging Face sequence classifier (num_labels=1) loaded once per judge actor, in the REWARD
view only: it scores the prompt + final answer (`RewardRequest` has no chain of thought), rendered with
the model's chat template by `rayda.data.pairs.answer_ids`, exactly as the pairs it was trained on.
The score is sigmoid(logit), in [0, 1] like the rubric's; the logit is kept as the part `pm_logit`.
The model is deterministic, so the k verdicts of a request are one verdict repeated.
"""

from __future__ import annotations

from rayda import templates
from rayda.judges.base import Judge
from rayda.types import Verdict


class PreferenceModelJudge(Judge):
    kind = "pm"
    needs_label = False

    def __init__(self, spec, spec_texts: dict[str, str], model: str, batch_size: int = 16):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        super().__init__(spec, spec_texts, model)
        self.tokenizer = AutoTokenizer.from_pretrained(model)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"  # the judge pool's GPU, where it has one
        self.net = AutoModelForSequenceClassification.from_pretrained(model, dtype=torch.float32).to(self.device).eval()
        pad = self.net.config.pad_token_id
        self.pad_id = pad if pad is not None else (self.tokenizer.pad_token_id or 0)
        self.net.config.pad_token_id = self.pad_id
        self.batch_size = batch_size

    def scores(self, requests: list) -> list[float]:
        """The model's logit for each request's prompt + final answer."""
        import torch

        from rayda.data.pairs import pad

        ids = [self._ids(r) for r in requests]
        out: list[float] = []
        with torch.no_grad():
            for i in range(0, len(ids), self.batch_size):
                batch = {k: v.to(self.device) for k, v in pad(ids[i:i + self.batch_size], self.pad_id).items()}
                out += [float(x) for x in self.net(**batch).logits[:, 0]]
        return out

    def _ids(self, req) -> tuple[int, ...]:
        from rayda.data.pairs import answer_ids

        return tuple(answer_ids(self.tokenizer, req.prompt.messages, req.answer))

    def _judge(self, view, requests, k, seeds):
        import math

        if view != templates.REWARD:
            raise ValueError("the pm judge scores final answers only (the REWARD view), not the FILTER view")
        return [[Verdict(1.0 / (1.0 + math.exp(-x)), scores={"pm_logit": x})] * k for x in self.scores(requests)]
