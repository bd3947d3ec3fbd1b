"""`rayda compare [RECIPE]`: Deliberative Alignment, its ablations and the prompting baseline, from one
base model and one prompt set, side by side in one table.

    rayda compare                                    every arm, on the tiny recipe
    rayda compare tiny --arms da,sft_only rl.steps=10

The arms, and the steps each needs (a step is one stage run in one folder, with its overrides):

    da         gen-sft -> sft -> rl           in <run.dir>/, exactly what `rayda run` writes there
    sft_only   gen-sft -> sft                 the same steps as da's first two: computed once
    rl_only    rl with rl.init=base           in <run.dir>/compare/rl_only/
    cai_sft_only  cai-sft                     CAI's supervised stage: the same step as cai's first
    cai        cai-sft -> pm -> rl            in <run.dir>/compare/cai/: Constitutional AI, the spec's
               with reward.kind=pm            clauses as its principles, never the spec in context
    prompting  (nothing to train)             the base, answering with spec(category) in its system
                                              message (eval.spec_in_context=true)

Two arms that name the same step share it, so it runs once; `da` and `sft_only` use the run's own
folders, so a compare after `rayda run` trains nothing again. A step whose `_SUCCESS` marker exists is
skipped and one without resumes, as in `rayda run`, so a killed compare started again redoes nothing
that finished. Each arm's model then answers `eval.prompts` (the same held-out prompts for every arm):
`<run.dir>/compare/eval/<arm>.json` and `.parquet`; a model `rayda run` already evaluated in the same
folder and recipe (da's, sft_only's) is not evaluated again, its report is copied. Last, the table (`rayda.compare_report`):
`<run.dir>/compare/compare.md`, `compare.json` and `compare.png`, every figure with its 95% interval
and its paired interval against full DA.

A new arm is one more entry in `ARMS`, and its stages are entries in `STEPS` (as `cai`'s are):
a runner `module:function` called as `fn(recipe, progress=...)`, its `_SUCCESS` marker, the folder it
writes in and its overrides (`reward.kind=pm`, `rl.init={run_dir}/compare/cai/checkpoints/cai_sft`). Nothing
else changes: stage outputs are shared by name, and the table reads each step's tokens from the
`metrics.jsonl` lines it logs under its `stage` name (`tokens_generated`, `learner_tokens`).
"""

from __future__ import annotations

import importlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from rayda import io
from rayda.config import ConfigError, Recipe

COMPARE_DIR = "compare"
"""The compare's own folder under `run.dir`: the arms that do not share `rayda run`'s folders, the
evaluations and the table."""


@dataclass(frozen=True)
class Step:
    """One stage run in one folder: what arms share, computed once."""

    stage: str
    """The stage's name in `metrics.jsonl` lines and `timings.json` (gen_sft, sft, rl, ...)."""
    runner: str
    """`module:function`, called as `function(recipe, progress=bool)` with `run.dir` set to `folder`."""
    done: str
    """Its `_SUCCESS` marker, relative to `folder`: present means finished (skipped), absent means run or resume."""
    folder: str = ""
    """Where it runs, relative to `run.dir` ("" is `run.dir` itself, `rayda run`'s folder)."""
    overrides: tuple[str, ...] = ()
    """`key=value` overrides on the recipe for this step (`rl.init=base`); `{run_dir}` in one stands for
    `run.dir` (`rl.init={run_dir}/compare/cai/checkpoints/cai_sft`)."""


@dataclass(frozen=True)
class Arm:
    """One row of the table: the steps that make its model, and how that model is evaluated."""

    doc: str
    steps: tuple[str, ...]
    """Keys of `STEPS`, in the order they run."""
    model: str
    """The model evaluated: `base` (the recipe's policy) or a checkpoint folder relative to `run.dir`."""
    eval_overrides: tuple[str, ...] = ()
    """`key=value` overrides on the recipe for its evaluation (`eval.spec_in_context=true`)."""


CAI_DIR = f"{COMPARE_DIR}/cai"
CAI = ("pm.init={run_dir}/" + CAI_DIR + "/checkpoints/cai_sft", "rl.init={run_dir}/" + CAI_DIR + "/checkpoints/cai_sft",
       "reward.kind=pm", "reward.model={run_dir}/" + CAI_DIR + "/checkpoints/pm")
"""The CAI arm's overrides, the same for its three steps (one folder pins one recipe): the preference
model's pairs are sampled from, and RL starts from, the CAI SFT model; RL is rewarded by the preference model."""

STEPS: dict[str, Step] = {
    "gen_sft": Step("gen_sft", "rayda.stages.gen_sft:run", "sft_data/_SUCCESS"),
    "sft": Step("sft", "rayda.stages.sft:run", "checkpoints/sft/_SUCCESS"),
    "rl": Step("rl", "rayda.stages.rl:run", "checkpoints/rl/_SUCCESS"),
    "rl_from_base": Step("rl", "rayda.stages.rl:run", "checkpoints/rl/_SUCCESS", f"{COMPARE_DIR}/rl_only", ("rl.init=base",)),
    "cai_sft": Step("cai_sft", "rayda.stages.cai_sft:run", "checkpoints/cai_sft/_SUCCESS", CAI_DIR, CAI),
    "cai_pm": Step("pm", "rayda.stages.pm:run", "checkpoints/pm/_SUCCESS", CAI_DIR, CAI),
    "cai_rl": Step("rl", "rayda.stages.rl:run", "checkpoints/rl/_SUCCESS", CAI_DIR, CAI),
}

ARMS: dict[str, Arm] = {
    "da": Arm("Deliberative Alignment: SFT on spec-grounded reasoning, then RL", ("gen_sft", "sft", "rl"), "checkpoints/rl"),
    "sft_only": Arm("DA's SFT stage alone (its checkpoint)", ("gen_sft", "sft"), "checkpoints/sft"),
    "rl_only": Arm("DA's RL stage alone, from the base policy", ("rl_from_base",), f"{COMPARE_DIR}/rl_only/checkpoints/rl"),
    "cai_sft_only": Arm("CAI's supervised stage alone (critique -> revision SFT; its checkpoint)", ("cai_sft",),
                        f"{CAI_DIR}/checkpoints/cai_sft"),
    "cai": Arm("Constitutional AI: critique -> revision SFT, a preference model, RL against it; never the spec in context",
               ("cai_sft", "cai_pm", "cai_rl"), f"{CAI_DIR}/checkpoints/rl"),
    "prompting": Arm("the base policy with spec(category) in its system message", (), "base", ("eval.spec_in_context=true",)),
}
"""The arms `rayda compare` knows, in table order. `da` is the reference every paired interval is taken against."""

REFERENCE = "da"


def arm_problems(arms) -> list[str]:
    """What is wrong with a list of arm names (empty: nothing); `rayda check` reports these."""
    unknown = [a for a in arms if a not in ARMS]
    if unknown:
        return [f"unknown arm{'s' * (len(unknown) > 1)} {', '.join(map(repr, unknown))}; known arms: {', '.join(ARMS)}"]
    if not arms:
        return [f"no arm given; known arms: {', '.join(ARMS)}"]
    if len(set(arms)) < len(arms):
        return [f"an arm is named twice in {', '.join(arms)}"]
    return []


def parse_arms(text: str | None) -> list[str]:
    """`--arms da,sft_only` -> ["da", "sft_only"]; None or `all` -> every arm."""
    return list(ARMS) if text in (None, "all") else [a.strip() for a in text.split(",") if a.strip()]


def steps_of(arms) -> list[str]:
    """The steps the arms need, each once, in the order the arms list them."""
    return list(dict.fromkeys(s for a in arms for s in ARMS[a].steps))


def step_recipe(recipe: Recipe, key: str) -> Recipe:
    """The recipe `key` runs with: its folder as `run.dir`, its overrides applied."""
    step = STEPS[key]
    folder = (f"run.dir={Path(recipe.run.dir) / step.folder}",) if step.folder else ()  # "" keeps run.dir as written
    overrides = tuple(o.format(run_dir=recipe.run.dir) for o in step.overrides)
    return recipe.with_overrides((*folder, *overrides), "rayda compare") if folder or overrides else recipe


def step_problems(recipe: Recipe, arms) -> list[tuple[str, str]]:
    """(where, message) for each error `rayda check` finds in a step's own recipe (`rl.init=base`, ...);
    an override that names a folder of this compare (`{run_dir}` in it) points at what an earlier step
    writes, so its absence is expected, not an error."""
    from rayda.check import check

    out = []
    for key in steps_of(arms):
        r = step_recipe(recipe, key)
        if r == recipe:
            continue
        later = {o.split("=", 1)[0] for o in STEPS[key].overrides if "{run_dir}" in o}
        out += [(f"compare.{key}: {where}", msg) for level, where, msg in check(r).findings
                if level == "error" and where not in later]
    return out


def run_step(recipe: Recipe, key: str, progress: bool = True) -> None:
    """One step, unless its marker exists; its folder pins its recipe (`rayda run`'s rule) and its
    seconds go to that folder's `timings.json`."""
    from rayda.stages.run import _pin_recipe, _timed

    step, r = STEPS[key], step_recipe(recipe, key)
    folder = Path(r.run.dir)
    folder.mkdir(parents=True, exist_ok=True)
    _pin_recipe(r, folder)
    module, _, name = step.runner.partition(":")
    fn = getattr(importlib.import_module(module), name)
    _timed(folder, step.stage, folder / step.done, lambda: fn(r, progress=progress))


def model_of(recipe: Recipe, arm: str) -> str:
    model = ARMS[arm].model
    return model if model == "base" else str((Path(recipe.run.dir) / model).resolve())


def run_eval_of(recipe: Recipe, arm: str) -> Path | None:
    """The evaluation `rayda run` already made of `arm`'s model (`<run.dir>/eval/<model>-heldout.json`), when
    it is the one the compare would make: the folder is pinned to this recipe, the arm changes no eval
    setting, and the report names the same model. Greedy answers to the same prompts with the same seed:
    evaluating again would write the same rows. None when there is none to reuse."""
    from rayda.stages.run import MODELS, pinned_by

    run_dir = Path(recipe.run.dir)
    if ARMS[arm].eval_overrides or not pinned_by(recipe, run_dir):
        return None
    want = model_of(recipe, arm)
    for m in MODELS:
        report = run_dir / "eval" / f"{m}-heldout.json"
        if not report.exists():
            continue
        meta = json.loads(report.read_text()).get("meta", {})
        same = meta.get("model") == "base" if want == "base" else Path(meta.get("model_path", "")).resolve() == Path(want)
        if same and meta.get("prompts") == recipe.eval.prompts and not meta.get("spec_in_context"):
            return report
    return None


def evaluate_arm(recipe: Recipe, arm: str, progress: bool = True) -> Path:
    """`arm`'s model on `eval.prompts`: `<run.dir>/compare/eval/<arm>.json` (skipped when it exists; a copy
    of `rayda run`'s own evaluation of the same model when `run_eval_of` finds one)."""
    from rayda.stages import evaluate
    from rayda.stages.run import _timed

    out = Path(recipe.run.dir) / COMPARE_DIR
    report = out / "eval" / f"{arm}.json"

    def evaluate_or_copy():
        done = run_eval_of(recipe, arm)
        if done is None:
            return evaluate.run(eval_recipe(recipe, arm), model=model_of(recipe, arm), name=arm, progress=progress)
        print(f"compare: {arm} is the model {done} evaluated; copying that evaluation")
        with io.atomic_path(report.with_suffix(".parquet")) as tmp:
            shutil.copyfile(done.with_suffix(".parquet"), tmp)
        io.atomic_write_text(report, done.read_text())  # last: its presence means "done"

    _timed(out, f"eval_{arm}", report, evaluate_or_copy)
    return report


def evaluate_arms(recipe: Recipe, arms, progress: bool = True) -> list[Path]:
    """Every arm's evaluation by `evaluate_arm`'s rules, except that those still to make share one
    pipeline and one engine (`evaluate.run_many`), with one entry in `timings.json`."""
    from rayda.stages import evaluate
    from rayda.stages.run import _timed

    out = Path(recipe.run.dir) / COMPARE_DIR
    reports = {a: out / "eval" / f"{a}.json" for a in arms}
    todo = [a for a in arms if not reports[a].exists() and run_eval_of(recipe, a) is None]
    for arm in arms:
        if arm not in todo:
            evaluate_arm(recipe, arm, progress)  # found finished, or copied from `rayda run`'s
    if todo:
        jobs = [evaluate.Job(eval_recipe(recipe, a), model_of(recipe, a), name=a) for a in todo]
        _timed(out, "eval_" + "+".join(todo), reports[todo[-1]], lambda: evaluate.run_many(jobs, progress))
    return [reports[a] for a in arms]


def eval_recipe(recipe: Recipe, arm: str) -> Recipe:
    """The recipe `arm` is evaluated with: its own eval settings, its reports under `compare/`."""
    return recipe.with_overrides((f"run.dir={Path(recipe.run.dir) / COMPARE_DIR}", *ARMS[arm].eval_overrides), "rayda compare")


def run(recipe: Recipe, arms=None, progress: bool = True) -> Path:
    """Every step the arms need (each once), every arm's evaluation, then the table; returns compare.md."""
    from rayda.check import check
    from rayda.compare_report import write

    arms = list(ARMS) if arms is None else list(arms)
    problems = arm_problems(arms)
    if problems:  # before the recipe's checks: a typo in --arms is the quickest thing to report
        raise ConfigError(f"--arms: {problems[0]}")
    check(recipe, arms=arms).raise_if_errors()  # every step's own recipe too, before the first stage
    for key in steps_of(arms):
        run_step(recipe, key, progress)
    evaluate_arms(recipe, arms, progress)
    run_dir = Path(recipe.run.dir)
    info = {a: {"doc": ARMS[a].doc, "model": model_of(recipe, a),
                "steps": [(STEPS[s].stage, run_dir / STEPS[s].folder) for s in ARMS[a].steps]} for a in arms}
    out = write(run_dir / COMPARE_DIR, info, REFERENCE, recipe.eval.n_resamples, recipe.run.seed, run_dir)
    print(f"compare: {out}")
    return out
