"""What RL is doing to the policy, measured while it trains. Pure: no Ray, no engines.

Every `rl.eval_every` steps the driver answers two fixed samples of prompts greedily through the
rollout engines it already has (no spec in context), and `behaviour_figures` turns the answers into
the figures that show learning, or a collapse, the step it starts: behaviour accuracy, and the share of
answers in each style (a policy drifting towards refusing everything shows up as `share_refuse`
climbing while accuracy falls). `learner_stats` turns a step's training pass into its logged
figures: KL to the reference, entropy, clip fraction, and the train/inference mismatch.
"""

from __future__ import annotations

import random

from rayda.spec import BEHAVIOURS


def fixed_sample(prompts: list, n: int, seed: int) -> list:
    """The same n prompts at every measurement (labelled ones only, in a seeded order)."""
    labelled = [p for p in prompts if getattr(p, "label", None)]
    order = list(range(len(labelled)))
    random.Random(f"rl-watch/{seed}").shuffle(order)
    return [labelled[i] for i in sorted(order[:n])]


def behaviour_figures(completions: list, spec, classify) -> dict:
    """accuracy (a malformed completion is wrong), share of each style among all completions, and the
    share malformed. `completions`: `rayda.types.Completion`s of labelled prompts."""
    n = max(len(completions), 1)
    counts = {b: 0 for b in BEHAVIOURS}
    right = malformed = 0
    for c in completions:
        if c.malformed is not None:
            malformed += 1
            continue
        b = classify(c.answer, spec)
        counts[b] += 1
        right += b == c.prompt.label
    return {"accuracy": right / n, **{f"share_{b}": k / n for b, k in counts.items()}, "malformed": malformed / n}


def learner_stats(parts: list[dict], rows: list, completions: list, prompt_ids: dict, kl_kind: str = "k3",
                  first: list[dict] | None = None) -> dict:
    """Token-weighted figures of the update(s), the policy's KL to the reference on its own samples
    (estimated with `rl.kl_kind`, as the loss does; `full` is computed in the training pass, so it is
    the update's own KL), its entropy estimate, and the train/inference mismatch: vLLM's sampling
    log-probs against the learner's, measured in the training pass of the step's first update (`first`,
    its ranks' parts; default `parts`), where the policy is still the one that sampled."""
    import torch

    from rayda.algo.grpo import kl_estimate

    starts = [len(prompt_ids[x.prompt.id]) - 1 for x in completions]  # per-target arrays: the first completion token
    completion_part = lambda field: torch.cat([torch.tensor(getattr(row, field)[s:], dtype=torch.float64)  # noqa: E731
                                               for row, s in zip(rows, starts)])
    policy, tokens = completion_part("old_logprobs"), max(sum(r["tokens"] for r in parts), 1.0)
    n = max(policy.numel(), 1)
    first = parts if first is None else first
    mismatch_mean = sum(r.get("old_gap_sum", 0.0) for r in first) / max(sum(r["tokens"] for r in first), 1.0)
    mismatch_max = max(r.get("old_gap_max", 0.0) for r in first)
    update_kl = sum(r.get("kl_sum", 0.0) for r in parts) / tokens
    return {
        # `full`: the rows carry no reference log-probs; the training pass summed the exact KL
        "kl": update_kl if kl_kind == "full" else float(kl_estimate(policy, completion_part("ref_logprobs"), kl_kind).sum()) / n,
        "entropy": float(-policy.sum()) / n,
        "update_kl": update_kl,
        "pg_loss": sum(r.get("pg_sum", 0.0) for r in parts) / tokens,
        "clip_frac": sum(r.get("clipped_sum", 0.0) for r in parts) / tokens,
        "grad_norm": parts[-1]["grad_norm"],
        "lr": parts[-1]["lr"],
        "logprob_mismatch_mean": mismatch_mean,
        "logprob_mismatch_max": mismatch_max,
    }
