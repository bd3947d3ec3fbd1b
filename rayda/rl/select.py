"""`rl.select=best`: early stopping on a validation set. Each `rl.eval_every` watch answers a fixed
sample of validation prompts greedily; a new best is exported to `checkpoints/rl_best` with its
`selection.json`, and the RL stage's export is a copy of that folder. No Ray, no engines here: the
learner group comes in as an argument.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from rayda.data.prompts import load_prompts
from rayda.io import atomic_path, atomic_write_json
from rayda.rl.watch import fixed_sample


def validation_sample(c, spec, prompts: list, seed: int) -> list:
    """`rl.select=best`'s validation sample: labelled prompts of `rl.select_prompts` in the training
    prompts' categories (`prompts.limit` does not apply), none of them a training prompt."""
    text = lambda q: repr(q.messages)  # noqa: E731
    categories, trained = {q.category for q in prompts}, {text(q) for q in prompts}
    candidates = [q for q in load_prompts(c.select_prompts, spec) if q.label and q.category in categories]
    shared = [q.id for q in candidates if text(q) in trained]
    if shared:
        raise ValueError(f"rl.select_prompts {c.select_prompts!r} shares {len(shared)} prompts with RL's training "
                         f"prompts (e.g. {shared[0]!r}): a validation set must not be trained on")
    if not candidates:
        raise ValueError(f"rl.select_prompts {c.select_prompts!r} has no labelled prompt in the training prompts' "
                         f"categories ({', '.join(sorted(categories))})")
    return fixed_sample(candidates, c.select_n, seed)


SELECTION = "selection.json"
"""In `checkpoints/rl_best`: the step whose weights the folder holds and their validation figures."""


def selected(folder: Path) -> dict | None:
    """`rl.select=best`'s choice so far ({"step", "accuracy", "n"}), None before the first measurement.
    A resumed run keeps it even when it is newer than the checkpoint it resumes from: its weights
    were measured, and the replayed steps reach the same ones again."""
    path = Path(folder) / SELECTION
    return json.loads(path.read_text()) if path.exists() else None


def keep_if_best(learners, folder: Path, record: dict, best: dict | None) -> dict | None:
    """Export the policy to `folder` if its validation accuracy in the watch `record` beats `best`
    (ties keep the earlier checkpoint: less drift from SFT for the same score). Returns the choice."""
    figures = record["valid"]
    if best is not None and figures["accuracy"] <= best["accuracy"]:
        return best
    choice = {"step": record["step"], "accuracy": figures["accuracy"], "n": figures["n"]}
    with atomic_path(folder) as tmp:
        learners.run_all("export_hf", str(tmp))
        atomic_write_json(tmp / SELECTION, choice)
    print(f"rl: step {record['step']}: validation accuracy {figures['accuracy']:.3f}, the best so far; exported to {folder}")
    return choice


def export(learners, folder: Path, best_folder: Path, best: dict | None, merge: float, start: str) -> None:
    """Write RL's export into `folder`: the checkpoint `rl.select=best` chose (in `best_folder`), or the
    learners' last weights; then moved back towards `start` by `rl.merge` (`rayda.rl.merge`)."""
    if best is not None:
        shutil.copytree(best_folder, folder)
        (Path(folder) / SELECTION).unlink()
    else:
        learners.run_all("export_hf", str(folder))
    if merge != 1.0:
        from rayda.rl.merge import merge_folder  # torch and safetensors: not needed to prepare a run

        merge_folder(folder, start, merge)
