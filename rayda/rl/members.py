"""`rl.members`: several independent RL runs from the same start, their weights averaged.

WARP (arXiv 2406.16768) merges RL policies trained independently from one initialisation: each run's
end point carries its own sampling luck, and the mean keeps what the runs share. On the tiny recipe a
run's held-out errors are mostly its own (README, "What the pipeline learns"), which is what a mean
of runs removes. Each member costs a whole RL run; the members train one after the other on the same
pools, so on a cluster they cost time, not GPUs.

    <run.dir>/checkpoints/rl_members/m{i}/         member i's export (before `rl.merge`), `_SUCCESS`
    <run.dir>/checkpoints/rl_members/m{i}_state/   its DeepSpeed checkpoints (resume points)
    <run.dir>/checkpoints/rl_members/m{i}_best/    with rl.select=best: its choice so far
    <run.dir>/checkpoints/rl/                      the members' mean, then `rl.merge` towards the start

Member 0 trains with the run's seed, so it is the run `rl.members=1` would make, logged as stage `rl`;
member i > 0 draws its own prompts, samples and judge seeds, logged as stage `rl_m{i}` (and
`rl_eval_m{i}`). Every member is watched on the run's samples (`rl.eval_every`), so their curves compare;
before step 1 they hold the same weights, and the stage logs the first member's watch for the others.
A killed run resumes: finished members are skipped, the unfinished one resumes from its checkpoint.
Recipes and file work only, no Ray: the stage passes in the function that trains one.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

from rayda.io import SUCCESS, atomic_path, atomic_write_json, mark_success


def member_seed(seed: int, member: int) -> int:
    """Member 0 trains with the run's seed; member i > 0 with a seed of its own, derived from it."""
    from rayda.data.gen_rows import stable_seed

    return seed if member == 0 else stable_seed(seed, "rl-member", member)


def member_recipe(recipe, member: int):
    """The recipe a member trains under: its seed, one member, its export left unmerged (the mean is
    merged once, `start + merge * (mean - start)`, the same as the mean of merged members)."""
    return replace(recipe, run=replace(recipe.run, seed=member_seed(recipe.run.seed, member)),
                   rl=replace(recipe.rl, members=1, merge=1.0))


def member_paths(paths: dict, member: int) -> dict:
    """The stage's paths (`rayda.stages.rl.paths`) with a member's own export, checkpoints and choice."""
    folder = Path(paths["out"]).parent / "rl_members"
    return {**paths, "out": folder / f"m{member}", "state": folder / f"m{member}_state", "best": folder / f"m{member}_best"}


def tag(member: int) -> str:
    """The suffix of a member's metric stages: '' for member 0, `_m{i}` for the others."""
    return f"_m{member}" if member else ""


def member_of(name: str, stage: str) -> int | None:
    """The member whose metrics lines carry stage `name` under `stage` (`rl` -> 0, `rl_m1` -> 1, as
    `tag` names them); None for another stage's lines."""
    if name == stage:
        return 0
    rest = name.removeprefix(stage + "_m")
    return int(rest) if rest != name and rest.isdigit() else None


def of_stage(name: str, stage: str) -> bool:
    """Whether a metrics line's stage `name` is `stage` or one of its members' (`rl_m1` for `rl`)."""
    return member_of(name, stage) is not None


def run_members(recipe, paths: dict, train) -> Path:
    """Train each member with `train(member_recipe, member_paths, tag)` (skipped when finished), then
    write the mean of their exports, merged towards the start by `rl.merge`, to `paths["out"]`."""
    from rayda.check import require_sizes
    from rayda.rl.merge import average_into, merge_folder

    require_sizes(recipe, "rl")
    c, folders = recipe.rl, []
    for m in range(c.members):
        folders.append(Path(train(member_recipe(recipe, m), member_paths(paths, m), tag(m))))
    first = json.loads((folders[0] / "train_report.json").read_text())
    with atomic_path(paths["out"]) as tmp:
        shutil.copytree(folders[0], tmp)
        (tmp / SUCCESS).unlink()
        average_into(tmp, folders[1:])
        if c.merge != 1.0:
            merge_folder(tmp, first["model"], c.merge)
        report = {"steps": c.steps, "model": first["model"], "merge": c.merge, "members": [str(f) for f in folders],
                  "seeds": [member_seed(recipe.run.seed, m) for m in range(c.members)]}
        atomic_write_json(tmp / "train_report.json", report)
    mark_success(paths["out"], {"stage": "rl", **report})
    print(f"rl: {paths['out']} holds the mean of {c.members} members, merged {c.merge} of the way from {first['model']}")
    return Path(paths["out"])
