"""What RL is doing to the policy, measured while it trains. Pure: no Ray, no engines.

Every `rl.eval_every` steps the driver answers two fixed samples of prompts greedily through the
rollout engines it already has (no spec in context), and `behaviour_figures` turns the answers into
the figures that show learning, or a collapse, the step it starts: behaviour accuracy, and the share of
answers in each style (a policy drifting towards refusing everything shows up as `share_refuse`
climbing while accuracy falls).
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
