"""`rayda run [RECIPE]`: every stage in order, then the report.

    check -> gen-sft -> sft -> rl -> eval(base, sft, rl) on the held-out prompts -> report.md

Every stage marks its folder done with `_SUCCESS`: `sft_data/`, `checkpoints/sft/`, `checkpoints/rl/`, `eval/`.

Each stage skips itself when its `_SUCCESS` (or its eval JSON) exists and resumes when it does not,
so a killed run started again redoes nothing that finished. The resolved recipe is written to
`<run.dir>/recipe.yaml`; a later run in the same folder whose recipe computes something different is
an error rather than a silent mix of two configurations (where it runs, `pools`, the Ray address, the
CPU and GPU counts and `run.verbose`, may change; so may RL's watch, `rl.eval_every` and `rl.eval_prompts`,
unless `rl.select=best` chooses from it).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import yaml

from rayda import io
from rayda.config import ConfigError, Recipe
from rayda.typed_config import build


MODELS = ("base", "sft", "rl")
"""The models `rayda run` evaluates on the held-out prompts; `eval/_SUCCESS` marks all three done."""
PLACEMENT_ONLY = {"run": ("ray_address", "num_cpus", "num_gpus", "verbose"), "pools": None}
"""Keys that say where (and how loudly) a run happens, not what it computes: they may change between resumes."""
RL_WATCH = ("eval_every", "eval_prompts")
"""RL's watch (greedy figures on fixed samples every `rl.eval_every` steps) only measures, unless
`rl.select=best` chooses the export from it: with `select: last` these may change between resumes too,
and `rayda compare` may run its RL arms with `rl.eval_every=0` after a `rayda run` that watched."""


def _what_it_computes(recipe_dict: dict) -> dict:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in recipe_dict.items()}
    for section, keys in PLACEMENT_ONLY.items():
        if keys is None:
            out.pop(section, None)
        else:
            for k in keys:
                out.get(section, {}).pop(k, None)
    if out.get("rl", {}).get("select", "last") != "best":
        for k in RL_WATCH:
            out["rl"].pop(k, None)
    return out


def pinned_by(recipe: Recipe, run_dir: Path) -> bool:
    """Whether `run_dir` is pinned to a recipe that computes what `recipe` computes (placement aside)."""
    path = run_dir / "recipe.yaml"
    if not path.exists():
        return False
    current = _what_it_computes(yaml.safe_load(yaml.safe_dump(recipe.to_dict(), sort_keys=False)))
    pinned = _what_it_computes(_pinned(path))
    # A whole section the pinned file lacks (`cai:`, `pm:`) came with a later rayda, with stages of its
    # own: no stage that ran in this folder read it.
    added = set(current) - set(yaml.safe_load(path.read_text()) or {})
    return {k: v for k, v in pinned.items() if k not in added} == {k: v for k, v in current.items() if k not in added}


def _pin_recipe(recipe: Recipe, run_dir: Path) -> None:
    path = run_dir / "recipe.yaml"
    if path.exists() and not pinned_by(recipe, run_dir):
        raise ConfigError(f"{path} holds a different recipe: use another run.dir, or delete {run_dir} to start over")
    recipe.save(path)


def _pinned(path: Path) -> dict:
    """A pinned recipe as this rayda reads it: keys a later version added take their defaults, so a
    run started before an upgrade resumes when every value it pinned is unchanged (`pinned_by` leaves
    out the sections a later version added whole). A pinned key this version no longer knows keeps the
    file as written (and so differs)."""
    data = yaml.safe_load(path.read_text()) or {}
    try:
        data = build(Recipe, data, str(path)).to_dict()
    except ConfigError:
        pass
    return yaml.safe_load(yaml.safe_dump(data, sort_keys=False))


def _timed(run_dir: Path, stage: str, done: Path, fn) -> None:
    """Run one stage unless `done` exists; record its wall time in timings.json."""
    if done.exists():
        print(f"run: {stage} finished earlier ({done}); skipping")
        return
    t0 = time.time()
    fn()
    path = run_dir / "timings.json"
    timings = json.loads(path.read_text()) if path.exists() else {}
    timings[stage] = round(time.time() - t0, 1)
    io.atomic_write_json(path, timings)


def run(recipe: Recipe, progress: bool = True) -> Path:
    from rayda.check import check
    from rayda.report import write_report
    from rayda.stages import evaluate, gen_sft, rl, sft

    d = Path(recipe.run.dir)
    # `rayda check` first: a mistake in a later stage's settings stops the run before the first stage.
    check(recipe).raise_if_errors()
    d.mkdir(parents=True, exist_ok=True)
    _pin_recipe(recipe, d)
    _timed(d, "gen_sft", d / "sft_data" / io.SUCCESS, lambda: gen_sft.run(recipe, progress=progress))
    _timed(d, "sft", d / "checkpoints" / "sft" / io.SUCCESS, lambda: sft.run(recipe, progress=progress))
    _timed(d, "rl", d / "checkpoints" / "rl" / io.SUCCESS, lambda: rl.run(recipe))
    # The three evaluations share one engine (`evaluate.run_many`): their timing is one entry.
    reports = {m: d / "eval" / f"{m}-heldout.json" for m in MODELS}
    todo = [m for m in MODELS if not reports[m].exists()]
    for m in MODELS:
        if m not in todo:
            _timed(d, f"eval_{m}", reports[m], lambda: None)  # finished earlier: says so, runs nothing
    if todo:
        _timed(d, "eval_" + "+".join(todo), reports[todo[-1]],
               lambda: evaluate.run_many([evaluate.Job(recipe, m, name=f"{m}-heldout") for m in todo], progress))
    io.mark_success(d / "eval", {"stage": "eval", "reports": [f"{m}-heldout.json" for m in MODELS]})
    report = write_report(d)
    print(f"report: {report}")
    return report
