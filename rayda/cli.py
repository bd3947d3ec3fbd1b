"""The `rayda` command. Each subcommand is a thin wrapper over a function you can call from Python.

    rayda spec check specs/                 validate a spec, print its content hash
    rayda spec show self_harm               print spec(category)
    rayda tinyworld build [RECIPE] [k=v]    build (or reuse) the tiny world
    rayda gen-sft [RECIPE] [k=v]            stage 1: generate and judge SFT data (Ray Data)
    rayda sft [RECIPE] [k=v]                stage 2: fine-tune on the accepted rows (DeepSpeed learners)
    rayda rl [RECIPE] [k=v]                 stage 3: GRPO from the SFT checkpoint, judge on final answers
    rayda pm [RECIPE] [k=v]                 CAI's preference model: judged pairs of samples, Bradley-Terry
    rayda cai-sft [RECIPE] [k=v]            Constitutional AI: answer, critique, revise (no spec); SFT on revisions
    rayda eval [RECIPE] --model sft         stage 4: answer without the spec, metrics with 95% intervals
    rayda run [RECIPE] [k=v]                every stage, skipping finished ones, then report.md
    rayda compare [RECIPE] [--arms da,cai,...] [k=v]   the arms side by side, one table
    rayda check RECIPE [--address A | --cluster 1x8gpu] [--arms all|A,B] [k=v]   the whole run validated, in seconds
    rayda plan RECIPE [--address A | --cluster 1x8gpu] [k=v]    the pools' placement per pool and node
    rayda submit RECIPE --address http://HEAD:8265 [k=v] [--follow]   `rayda run` as a Ray job
    rayda prompts import FILE... --out prompts.jsonl   public prompt sets -> deduplicated, split rows
    rayda label RECIPE --prompts prompts.jsonl [k=v]  the spec's category and behaviour from the judge

A RECIPE is a packaged recipe name (`tiny`, the default) or a YAML file; `key.sub=value` arguments
override it.
"""

from __future__ import annotations

import argparse
import json
import sys

from rayda.check import CheckError
from rayda.config import ConfigError, Recipe, load_recipe
from rayda.placement import PlacementError
from rayda.context import resolve_spec_path
from rayda.spec import SpecError, load_spec


def _recipe(args) -> Recipe:
    return load_recipe(args.recipe, args.overrides)


def _add_recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", nargs="?", default="tiny", help="packaged recipe name or YAML path (default: tiny)")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides")


def _split_recipe_and_overrides(args) -> None:
    # `rayda stage prompts.limit=3` means: default recipe, one override.
    if args.recipe and "=" in args.recipe:
        args.overrides = [args.recipe, *args.overrides]
        args.recipe = "tiny"


# ---- subcommands ---------------------------------------------------------------------------------


def cmd_spec_check(args) -> int:
    spec = load_spec(resolve_spec_path(args.path))
    clauses = spec.clauses()
    by_behaviour = {b: sum(1 for _, cl in clauses.values() if cl.behaviour == b) for b in ("comply", "refuse", "safe_complete")}
    print(f"ok: {spec.id} v{spec.version}: {len(spec.categories)} categories, {len(clauses)} clauses {by_behaviour}")
    print(f"content hash: {spec.content_hash}")
    return 0


def cmd_spec_show(args) -> int:
    spec = load_spec(resolve_spec_path(args.spec))
    print(spec.compile(args.category, token_budget=args.budget))
    return 0


def cmd_tinyworld_build(args) -> int:
    from rayda.context import RunContext

    world = RunContext(_recipe(args)).world
    print(json.dumps(world.report, indent=2, sort_keys=True))
    print(f"tiny world: {world.root}")
    return 0


def cmd_gen_sft(args) -> int:
    from rayda.stages.gen_sft import run

    run(_recipe(args))
    return 0


def cmd_sft(args) -> int:
    from rayda.stages.sft import run

    print(f"sft: {run(_recipe(args))}")
    return 0


def cmd_cai_sft(args) -> int:
    from rayda.stages.cai_sft import run

    print(f"cai-sft: {run(_recipe(args)).model_dir}")
    return 0


def cmd_rl(args) -> int:
    from rayda.stages.rl import run

    print(f"rl: {run(_recipe(args))}")
    return 0


def cmd_pm(args) -> int:
    from rayda.stages.pm import run

    print(f"pm: {run(_recipe(args))}")
    return 0


def cmd_eval(args) -> int:
    from rayda.stages import evaluate

    recipe = _recipe(args)
    if args.completions:
        evaluate.grade_file(recipe, args.completions, args.name)
    else:
        evaluate.run(recipe, model=args.model, source=args.prompts, name=args.name)
    return 0


def cmd_run(args) -> int:
    from rayda.stages.run import run

    run(_recipe(args))
    return 0


def cmd_compare(args) -> int:
    from rayda.stages.compare import parse_arms, run

    run(_recipe(args), parse_arms(args.arms))
    return 0


def _nodes(args, recipe: Recipe):
    """The nodes to plan on: a described shape (`--cluster 1x8gpu`), else the cluster at `--address`
    (or run.ray_address, $RAY_ADDRESS), else the local Ray `rayda run` would start."""
    from rayda.check import parse_shape
    from rayda.cluster import cluster_nodes

    return parse_shape(args.cluster) if args.cluster else cluster_nodes(args.address, recipe)


def cmd_plan(args) -> int:
    import time

    from rayda.placement import describe, plan_nodes

    t0 = time.perf_counter()
    recipe = _recipe(args)
    nodes = _nodes(args, recipe)
    plans = plan_nodes(recipe.pools.named(), nodes)
    print(describe(plans, nodes))
    print(f"ok: the cluster holds the plan (checked in {time.perf_counter() - t0:.1f}s)")
    return 0


def cmd_check(args) -> int:
    import time

    from rayda.check import check
    from rayda.stages.compare import parse_arms

    t0 = time.perf_counter()
    recipe = _recipe(args)
    report = check(recipe, _nodes(args, recipe), arms=None if args.arms is None else parse_arms(args.arms))
    print(report.text())
    n = len(report.errors)
    print(f"{'error' if n else 'ok'}: {n} problem(s) in {time.perf_counter() - t0:.1f}s")
    return 2 if n else 0


def cmd_submit(args) -> int:
    from rayda.cluster import follow, job_url, submit

    recipe = _recipe(args)  # a bad recipe fails here, not on the cluster
    client, job_id = submit(recipe, args.recipe, args.overrides, args.address, args.working_dir, args.runtime_env)
    print(f"job: {job_id}")
    print(f"dashboard: {job_url(args.address, job_id)}")
    if not args.follow:
        return 0
    status = follow(client, job_id)
    print(f"job {job_id}: {status}")
    return 0 if status == "SUCCEEDED" else 1


def cmd_prompts_import(args) -> int:
    from rayda.data.importers import import_prompts

    report = import_prompts(args.sources, args.out, format=args.format, column=args.column,
                            heldout=args.heldout, seed=args.seed)
    print(json.dumps(report, indent=1))
    return 0


def cmd_label(args) -> int:
    from rayda.stages.label import run

    run(_recipe(args), args.prompts, args.out)
    return 0


# ---- parser --------------------------------------------------------------------------------------


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rayda", description="Deliberative Alignment on Ray.")
    sub = parser.add_subparsers(dest="command", required=True)

    spec = sub.add_parser("spec", help="validate or show a safety spec").add_subparsers(dest="spec_command", required=True)
    p = spec.add_parser("check", help="validate a spec folder and print its content hash")
    p.add_argument("path", nargs="?", default="specs")
    p.set_defaults(func=cmd_spec_check)
    p = spec.add_parser("show", help="print spec(category)")
    p.add_argument("category")
    p.add_argument("--spec", default="specs", help="spec folder (default: specs)")
    p.add_argument("--budget", type=int, default=None, help="token budget (whitespace tokens)")
    p.set_defaults(func=cmd_spec_show)

    tw = sub.add_parser("tinyworld", help="the self-contained tiny world").add_subparsers(dest="tw_command", required=True)
    p = tw.add_parser("build", help="build (or reuse from cache) the tiny tokenizer, prompts and base model")
    _add_recipe_args(p)
    p.set_defaults(func=cmd_tinyworld_build)

    p = sub.add_parser("gen-sft", help="stage 1: generate SFT data with the spec in context, judge it, keep the best")
    _add_recipe_args(p)
    p.set_defaults(func=cmd_gen_sft)

    p = sub.add_parser("sft", help="stage 2: fine-tune on the accepted rows with a DeepSpeed learner group")
    _add_recipe_args(p)
    p.set_defaults(func=cmd_sft)

    p = sub.add_parser("cai-sft", help="Constitutional AI's supervised stage: the base answers without the spec, a critic "
                       "critiques against a sampled clause, the base revises (n rounds); SFT on the revisions")
    _add_recipe_args(p)
    p.set_defaults(func=cmd_cai_sft)

    p = sub.add_parser("rl", help="stage 3: GRPO from the SFT checkpoint; the judge sees only final answers")
    _add_recipe_args(p)
    p.set_defaults(func=cmd_rl)
    p = sub.add_parser("pm", help="Constitutional AI's preference model: pairs of policy samples judged under a "
                       "principle (k votes), a scalar-head model trained with a Bradley-Terry loss")
    _add_recipe_args(p)
    p.set_defaults(func=cmd_pm)
    p = sub.add_parser("eval", help="stage 4: answer WITHOUT the spec, classify, report per category with 95%% intervals")
    _add_recipe_args(p)
    p.add_argument("--model", default="base", help="base, sft, rl (this run's checkpoints) or a HF path/name")
    p.add_argument("--prompts", default=None, help="prompt set (default: eval.prompts): tinyworld:heldout, a rayda "
                   "JSONL/Parquet file, xstest_prompts.csv or strongreject_dataset.csv")
    p.add_argument("--completions", default=None, help="grade this CSV/JSONL/Parquet of prompt+completion instead")
    p.add_argument("--name", default=None, help="report name under <run.dir>/eval/ (default: from model and prompts)")
    p.set_defaults(func=cmd_eval)
    p = sub.add_parser("run", help="every stage in order (skipping finished ones), then <run.dir>/report.md")
    _add_recipe_args(p)
    p.set_defaults(func=cmd_run)
    p = sub.add_parser("compare", help="DA, SFT only, RL only (from the base), Constitutional AI and the base with the spec in context, "
                       "from one base and one prompt set, sharing stages -> <run.dir>/compare/compare.md")
    _add_recipe_args(p)
    p.add_argument("--arms", default=None, help="comma-separated arms (default: all): da, sft_only, rl_only, cai_sft_only, cai, prompting")
    p.set_defaults(func=cmd_compare)
    for name, func, text in (("plan", cmd_plan, "check the pools against a cluster; print the plan per pool and per node"),
                             ("check", cmd_check, "validate the whole run in seconds: sizes, models, judge, prompts, pools")):
        p = sub.add_parser(name, help=text)
        _add_recipe_args(p)
        where = p.add_mutually_exclusive_group()
        where.add_argument("--address", default=None, help="Ray cluster (GCS address HOST:6379 or auto); default: "
                           "run.ray_address, $RAY_ADDRESS, else the local Ray that `rayda run` would start")
        where.add_argument("--cluster", default=None, metavar="SHAPE", help="a described cluster instead of a live one: "
                           "NODESxGPUSgpu[,CPUScpu], e.g. 1x8gpu, 4x8gpu, 2x16cpu (a GPU node has 12 CPUs per GPU unless given)")
        p.set_defaults(func=func)
    p.add_argument("--arms", default=None, help="also check what `rayda compare --arms` would run: the arms' names "
                   "and each step's own recipe (`all`, or e.g. `da,rl_only`)")
    prompts = sub.add_parser("prompts", help="bring prompt sets in").add_subparsers(dest="prompts_command", required=True)
    p = prompts.add_parser("import", help="public safety prompt sets (XSTest, StrongREJECT, WildJailbreak, OR-Bench, "
                           "HarmBench, JailbreakBench, any text column) -> deduplicated rows split into train/heldout")
    p.add_argument("sources", nargs="+", help="published files (read as published), a saved dataset folder or hf:NAME[:SPLIT]")
    p.add_argument("--out", required=True, help="the .jsonl or .parquet file to write (atomically)")
    p.add_argument("--format", default=None, help="the set, when the file name and columns do not tell: "
                   "xstest, strongreject, wildjailbreak, orbench, harmbench, jailbreakbench, text")
    p.add_argument("--column", default=None, help="import this text column of any table or dataset")
    p.add_argument("--heldout", type=float, default=0.1, help="share of near-duplicate groups held out (default 0.1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    p.set_defaults(func=cmd_prompts_import)

    p = sub.add_parser("label", help="label prompts with the spec's category, clause and behaviour (llm or http judge, "
                       "k votes, Ray Data) -> labelled.parquet, unlabelled.parquet, audit.csv")
    _add_recipe_args(p)
    p.add_argument("--prompts", required=True, help="rows with messages (e.g. from `rayda prompts import`)")
    p.add_argument("--out", default=None, help="output folder (default: <run.dir>/labels)")
    p.set_defaults(func=cmd_label)

    p = sub.add_parser("submit", help="submit `rayda run RECIPE` as a Ray job (Jobs API)")
    _add_recipe_args(p)
    p.add_argument("--address", required=True, help="the Jobs API (dashboard) address, e.g. http://127.0.0.1:8265")
    p.add_argument("--follow", action="store_true", help="stream the job's logs; exit 0 when it SUCCEEDED, else 1")
    p.add_argument("--working-dir", default=".", help="folder shipped with the job (default: .)")
    p.add_argument("--runtime-env", default=None, help="runtime_env YAML (default: cluster/runtime_env.yaml)")
    p.set_defaults(func=cmd_submit)
    return parser


def main(argv: list[str] | None = None) -> int:
    if argv is None:  # the `rayda` command itself, not a call from Python: re-run it on jemalloc (Linux)
        from rayda.allocator import reexec

        reexec()
    parser = make_parser()
    args, extra = parser.parse_known_args(argv)  # overrides may follow options: `rayda plan tiny --address A k=v`
    if extra and (not hasattr(args, "overrides") or any("=" not in x or x.startswith("-") for x in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    if hasattr(args, "recipe"):
        _split_recipe_and_overrides(args)
    try:
        return args.func(args)
    except (SpecError, ConfigError, PlacementError, CheckError, ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyError as e:
        print(f"error: {e.args[0]}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
