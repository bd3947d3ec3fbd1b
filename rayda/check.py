"""`rayda check RECIPE`: the whole run validated up front, in seconds, before any stage starts.

    rayda check tiny                          sizes, models, judge, prompts; pools on this machine
    rayda check qwen-gpu --cluster 1x8gpu     ... and the pools on a described cluster shape
    rayda check qwen-gpu --address HEAD:6379  ... and the pools on a live cluster

Each finding is `ok`, `note` (fine, but worth knowing: a hub name not checked offline, a tiny world
still to build) or `error` (the run would fail). `rayda run` runs the same checks first and stops on
any error, so a mistake in the RL section is reported before gen-sft spends an hour. Every stage's own
checks (`rayda.stages.*.prepare`) call the size checks here too, so the rules live in one place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from rayda.config import Recipe
from rayda.spec import BEHAVIOURS

SHAPE = re.compile(r"^(\d+)x(?:(\d+)gpu)?(?:[,:+]?(\d+)cpu)?$")
CPUS_PER_GPU = 12
"""CPUs a described GPU node has per GPU when the shape does not say (an 8-GPU node: 96)."""


class CheckError(ValueError):
    """The run cannot start; the message lists every error."""


@dataclass
class Report:
    findings: list[tuple[str, str, str]] = field(default_factory=list)
    """(level, where, message), level `ok` | `note` | `error`, in the order checked."""

    def add(self, level: str, where: str, message: str) -> None:
        self.findings.append((level, where, message))

    @property
    def errors(self) -> list[str]:
        return [f"{where}: {msg}" for level, where, msg in self.findings if level == "error"]

    def text(self) -> str:
        return "\n".join(f"{level:<5} {where}: {msg}" for level, where, msg in self.findings)

    def raise_if_errors(self) -> None:
        if self.errors:
            raise CheckError(f"{len(self.errors)} problem(s) in the recipe: " + "; ".join(self.errors))


# ---- sizes (pure: the recipe only) ----------------------------------------------------------------


def size_problems(recipe: Recipe, stage: str) -> list[str]:
    """What is wrong with `stage`'s settings (gen_sft, judge, sft, rl, eval, model, pm, cai) on their own."""
    from rayda.config_cai import problems as cai

    return {"gen_sft": _gen_sft, "judge": _judge, "sft": _sft, "rl": _rl, "eval": _eval, "model": _model, "pm": _pm,
            "cai": lambda r: cai(r.cai)}[stage](recipe)


def require_sizes(recipe: Recipe, *stages: str) -> None:
    """Raise ValueError on the first size problem of `stages` (what each stage's `prepare` calls)."""
    for stage in stages:
        problems = size_problems(recipe, stage)
        if problems:
            raise ValueError(problems[0])


def _at_least(section: str, obj, names: tuple[str, ...], low) -> list[str]:
    return [f"{section}.{n} must be at least {low}, got {getattr(obj, n)}" for n in names if getattr(obj, n) < low]


def _gen_sft(recipe: Recipe) -> list[str]:
    g = recipe.gen_sft
    out = _at_least("gen_sft", g, ("samples_per_prompt", "shard_size", "batch_size", "max_tokens", "keep_per_prompt"), 1)
    if not 0.0 <= g.threshold <= 1.0:
        out.append(f"gen_sft.threshold must be in [0, 1] (judge scores are), got {g.threshold}")
    if g.temperature < 0:
        out.append(f"gen_sft.temperature must be >= 0, got {g.temperature}")
    return out


def _judge(recipe: Recipe) -> list[str]:
    from rayda import judges

    j = recipe.judge
    if j.kind not in judges.KINDS or j.kind == "pm":
        known = ", ".join(sorted(k for k in judges.KINDS if k != "pm"))
        return [f"unknown judge kind {j.kind!r}; known kinds: {known} (the preference model rewards RL with reward.kind=pm)"]
    out = _at_least("judge", j, ("k", "max_tokens"), 1)
    if j.kind == "http" and not j.base_url:
        out.append("judge.kind=http needs judge.base_url (e.g. http://127.0.0.1:8000/v1)")
    return out


def _sft(recipe: Recipe) -> list[str]:
    s = recipe.sft
    out = _at_least("sft", s, ("micro_batch_size", "grad_accum", "max_length"), 1)
    if s.overlong not in ("drop", "truncate"):
        out.append(f"sft.overlong must be 'drop' or 'truncate', got {s.overlong!r}")
    if s.max_steps is None and s.epochs <= 0:
        out.append(f"sft.epochs must be > 0 (or set sft.max_steps), got {s.epochs}")
    if s.max_steps is not None and s.max_steps < 1:
        out.append(f"sft.max_steps must be at least 1, got {s.max_steps}")
    if not 0.0 <= s.heldout_fraction < 1.0:
        out.append(f"sft.heldout_fraction must be in [0, 1), got {s.heldout_fraction}")
    out += _averaging(s)
    return out + lora_problems(s.lora, s.zero_stage, "sft") + zero_problems(s.zero_stage, s.offload_params, s.offload_optimizer, "sft")


def _averaging(s) -> list[str]:
    """`sft.average_last`: the checkpoints it averages must be taken and kept, as whole weights."""
    if s.average_last < 1:
        return [f"sft.average_last must be at least 1 (1: the final weights), got {s.average_last}"]
    if s.average_last == 1:
        return []
    out = []
    if not s.save_every:
        out.append("sft.average_last > 1 averages the checkpoints taken every sft.save_every steps: set sft.save_every")
    if s.keep_checkpoints and s.keep_checkpoints < s.average_last - 1:
        out.append(f"sft.keep_checkpoints {s.keep_checkpoints} deletes checkpoints sft.average_last {s.average_last} "
                   f"averages: keep at least {s.average_last - 1} (or 0: all)")
    if s.lora.rank:
        out.append("sft.average_last > 1 averages whole weights; with sft.lora the checkpoints hold adapters: use one of the two")
    return out


def zero_problems(stage: int, offload_params: bool = False, offload_optimizer: bool = False, section: str = "") -> list[str]:
    """What is wrong with a ZeRO stage and its offloads (the learner's DeepSpeed config raises the first)."""
    key = f"{section}." if section else ""
    if stage not in (0, 1, 2, 3):
        return [f"{key}zero_stage must be 0, 1, 2 or 3, got {stage}"]
    out = []
    if offload_params and stage != 3:
        out.append(f"{key}offload_params needs zero_stage 3 (only ZeRO-3 partitions the parameters)")
    if offload_optimizer and stage == 0:
        out.append(f"{key}offload_optimizer needs zero_stage 1, 2 or 3")
    return out


def _rl(recipe: Recipe) -> list[str]:
    c = recipe.rl
    out = _at_least("rl", c, ("steps", "prompts_per_step", "oversample", "micro_batch_size", "grad_accum", "max_tokens"), 1)
    out += _at_least("rl", c, ("samples_per_prompt",), 2)  # GRPO compares samples of the same prompt
    rows, per_update = c.prompts_per_step * c.samples_per_prompt, c.micro_batch_size * c.grad_accum * recipe.pools.learner.actors
    if per_update > 0 and rows % per_update:
        out.append(f"rl: a step's prompts_per_step x samples_per_prompt = {c.prompts_per_step} x {c.samples_per_prompt} = "
                   f"{rows} samples must be a whole number of updates of micro_batch_size x grad_accum x learner actors "
                   f"= {c.micro_batch_size} x {c.grad_accum} x {recipe.pools.learner.actors} = {per_update} rows")
    if c.temperature <= 0:
        out.append(f"rl.temperature must be > 0 (got {c.temperature}): GRPO needs samples that differ")
    if c.adv_scale not in ("std", "none"):
        out.append(f"rl.adv_scale must be 'std' or 'none', got {c.adv_scale!r}")
    for label, weight in c.label_weights.items():
        if label not in BEHAVIOURS:
            out.append(f"rl.label_weights: unknown label {label!r}; labels: {', '.join(BEHAVIOURS)}")
        elif isinstance(weight, bool) or not isinstance(weight, (int, float)) or weight <= 0:
            out.append(f"rl.label_weights.{label} must be a number > 0, got {weight!r}")
    if c.max_staleness not in (0, 1):
        out.append(f"rl.max_staleness must be 0 (on-policy) or 1 (the next step samples while this one trains), got {c.max_staleness}")
    if c.sync not in ("collective", "files"):
        out.append(f"rl.sync must be 'collective' or 'files', got {c.sync!r}")
    if c.sync_bucket_mb <= 0 or c.sync_timeout_s <= 0:
        out.append(f"rl.sync_bucket_mb and rl.sync_timeout_s must be positive, got {c.sync_bucket_mb} and {c.sync_timeout_s}")
    if c.kl_kind not in ("k1", "k2", "k3", "full"):
        out.append(f"rl.kl_kind must be 'k1', 'k2', 'k3' or 'full', got {c.kl_kind!r}")
    out += lora_problems(c.lora, c.zero_stage, "rl")
    if c.kl_kind == "full" and recipe.pools.reference is not None:
        out.append("rl.kl_kind=full needs the reference on the learner ranks (its whole distribution at every "
                   "position): leave pools.reference unset, or use k1/k2/k3")
    if c.kl_coef < 0 or c.kl_reasoning < 0 or c.clip <= 0 or (c.clip_high is not None and c.clip_high <= 0):
        out.append("rl.kl_coef and rl.kl_reasoning must be >= 0, and rl.clip and rl.clip_high > 0")
    if c.members < 1:
        out.append(f"rl.members must be at least 1, got {c.members}")
    elif c.members > 1 and c.lora.rank:
        out.append("rl.members > 1 averages whole weights; with rl.lora the members train adapters: use one of the two")
    if not 0 < c.merge <= 1:
        out.append(f"rl.merge must be in (0, 1] (the share of RL's update the export keeps), got {c.merge}")
    if recipe.reward.kind not in ("judge", "pm"):
        out.append(f"reward.kind must be 'judge' or 'pm', got {recipe.reward.kind!r}")
    if c.select not in ("last", "best"):
        out.append(f"rl.select must be 'last' or 'best', got {c.select!r}")
    elif c.select == "best" and not (c.select_prompts and c.eval_every and c.select_n >= 1):
        out.append("rl.select=best measures each checkpoint on a validation set: set rl.select_prompts, "
                   "rl.eval_every >= 1 and rl.select_n >= 1")
    return out + zero_problems(c.zero_stage, section="rl")


def _pm(recipe: Recipe) -> list[str]:
    p = recipe.pm
    out = _at_least("pm", p, ("votes", "shard_size", "max_tokens", "max_length", "micro_batch_size", "grad_accum"), 1)
    if p.temperature <= 0:
        out.append(f"pm.temperature must be > 0 (got {p.temperature}): a pair's two samples must be able to differ")
    if not 0.0 < p.heldout_fraction < 1.0:
        out.append(f"pm.heldout_fraction must be in (0, 1): the held-out pair accuracy needs pairs, got {p.heldout_fraction}")
    if p.epochs <= 0 or p.lr <= 0:
        out.append(f"pm.epochs and pm.lr must be > 0, got {p.epochs} and {p.lr}")
    return out + zero_problems(p.zero_stage, section="pm")


LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
"""The adapter ranks vLLM serves (`max_lora_rank`)."""


def lora_problems(lora, zero_stage: int, section: str) -> list[str]:
    """`sft.lora` / `rl.lora`: a rank vLLM serves, target modules, and ZeRO 0-2 (the export merges the
    adapters into whole weights on rank 0)."""
    if not lora.rank:
        return []
    out = []
    if lora.rank not in LORA_RANKS:
        out.append(f"{section}.lora.rank must be 0 (off) or one of {', '.join(map(str, LORA_RANKS))} (vLLM serves these), got {lora.rank}")
    if not lora.target_modules:
        out.append(f"{section}.lora.target_modules is empty: name the linear layers that get adapters")
    if zero_stage == 3:
        out.append(f"{section}.lora needs {section}.zero_stage 0-2 (adapters are small; ZeRO-3 buys nothing there)")
    return out


def _eval(recipe: Recipe) -> list[str]:
    from rayda.evaluation.grader import config_problems

    e = recipe.eval
    out = _at_least("eval", e, ("batch_size", "max_tokens", "n_resamples", "samples_per_prompt"), 1)
    if e.temperature < 0:
        out.append(f"eval.temperature must be >= 0, got {e.temperature}")
    if e.samples_per_prompt > 1 and e.temperature == 0:
        out.append(f"eval.samples_per_prompt={e.samples_per_prompt} needs eval.temperature > 0: greedy samples are all the same")
    return out + config_problems(e, recipe.judge.kind)


def _model(recipe: Recipe) -> list[str]:
    from rayda.engines.device import DTYPES

    d = recipe.model.dtype
    return [] if d in ("auto", *DTYPES) else [f"model.dtype must be one of auto, {', '.join(DTYPES)}, got {d!r}"]


# ---- the whole run -------------------------------------------------------------------------------


def parse_shape(shape: str) -> dict[str, dict[str, float]]:
    """`1x8gpu`, `4x8gpu`, `2x8gpu,64cpu`, `3x16cpu` -> nodes (name -> resources) for the placement check."""
    m = SHAPE.match(shape.strip().lower())
    if not m or not (m.group(2) or m.group(3)):
        raise CheckError(f"cluster shape {shape!r}: expected NODESxGPUSgpu[,CPUScpu], e.g. 1x8gpu, 4x8gpu or 2x16cpu")
    n, gpus = int(m.group(1)), int(m.group(2) or 0)
    cpus = int(m.group(3)) if m.group(3) else CPUS_PER_GPU * gpus
    return {f"node-{i}": {"CPU": float(cpus), "GPU": float(gpus)} for i in range(n)}


def check(recipe: Recipe, nodes: dict[str, dict[str, float]] | None = None, arms: list[str] | None = None) -> Report:
    """Every check of the run; `nodes` (a live cluster's or a described shape's) adds the pool plan,
    `arms` the arms `rayda compare` runs: their names, and the recipe of each step they need."""
    from rayda.context import RunContext

    report = Report()
    if arms is not None:  # the names, then each step's own settings (rl.init=base, ...)
        from rayda.stages.compare import arm_problems, step_problems

        for p in arm_problems(arms):
            report.add("error", "compare.arms", p)
        for where, p in step_problems(recipe, arms) if not arm_problems(arms) else ():
            report.add("error", where, p)
    stages = ("model", "gen_sft", "judge", "sft", "rl", "eval", "pm", "cai")
    problems = [p for stage in stages for p in size_problems(recipe, stage)]
    for p in problems:
        report.add("error", "sizes", p)
    if not problems:
        report.add("ok", "sizes", f"{', '.join(stages)}: every size and setting agrees")
    try:
        ctx = RunContext(recipe)
    except (OSError, ValueError) as e:  # the spec: nothing else can be checked without it
        report.add("error", "spec.path", str(e))
        return report
    report.add("ok", "spec.path", f"{ctx.spec.id} v{ctx.spec.version}, {len(ctx.spec.category_ids)} categories")
    _models(recipe, ctx, report)
    _prompts(recipe, ctx, report)
    if nodes is not None:
        _pools(recipe, nodes, report)
    return report


def _models(recipe: Recipe, ctx, report: Report) -> None:
    from rayda import judges

    kind = recipe.judge.kind
    wanted = [("model.policy", recipe.model.policy)]
    for where, init in (("rl.init", recipe.rl.init), ("pm.init", recipe.pm.init)):
        if init not in ("sft", "base"):  # RL or the preference model from a model of the user's choosing
            wanted.append((where, init))
    if recipe.reward.kind == "pm":  # RL rewarded by a preference model that `rayda pm` must have finished
        try:
            report.add("ok", "reward.model", f"{ctx.pm_model()}: a finished preference model")
        except FileNotFoundError as e:
            report.add("error", "reward.model", str(e))
    if kind in judges.KINDS and judges.needs_model(kind):
        wanted.append(("model.judge", recipe.model.judge))
    elif recipe.model.judge not in ("tinyworld", recipe.model.policy):
        report.add("note", "model.judge", f"{recipe.model.judge!r} is not loaded: judge.kind={kind} "
                   + ("asks the endpoint's model" if kind == "http" else "needs no model (set judge.kind=llm to use it)"))
    for where, name in wanted:
        if name == "tinyworld":
            from rayda.io import is_done
            from rayda.tinyworld.build import cached_path

            root = cached_path(ctx.spec, recipe.tinyworld, recipe.spec.token_budget)
            report.add("ok" if is_done(root) else "note", where,
                       f"the tiny world, cached at {root}" if is_done(root) else
                       "the tiny world, not built yet: the first stage builds it (about 5 minutes on 2 cores)")
            continue
        report.add(*_model_finding(where, name))


def _model_finding(where: str, name: str) -> tuple[str, str, str]:
    from rayda.engines import ModelNotFound, resolve_model

    try:
        path = resolve_model(name, where)
    except ModelNotFound as e:
        return ("error", where, str(e))
    p = Path(path)
    if p.is_dir():
        if not any((p / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")):
            return ("error", where, f"{path} has no tokenizer files (tokenizer.json / tokenizer_config.json)")
        return ("ok", where, f"{path}: config and tokenizer present")
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(name, "config.json"), str):
            return ("ok", where, f"hub name {name!r}, in the local Hugging Face cache")
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        pass
    except ValueError:  # huggingface_hub's HFValidationError: `runs/x/checkpoints/sft` is no hub name
        return ("error", where, f"{name!r} is neither a model folder (no such folder) nor a Hugging Face hub name")
    return ("note", where, f"hub name {name!r}: not checked offline (downloaded at first use; set HF_HUB_OFFLINE=1 to forbid)")


def _prompts(recipe: Recipe, ctx, report: Report) -> None:
    from rayda import judges
    from rayda.data.prompts import PromptError
    from rayda.stages.evaluate import load_eval_prompts

    sources = [("prompts.source", recipe.prompts.source)]
    if recipe.rl.prompts:
        sources.append(("rl.prompts", recipe.rl.prompts))
    if recipe.rl.select == "best" and recipe.rl.select_prompts:
        sources.append(("rl.select_prompts", recipe.rl.select_prompts))
    for where, source in sources:
        if _remote(source):
            report.add("note", where, f"{source!r} is a hub dataset name: not checked offline")
            continue
        try:
            prompts = ctx.prompts(source)
        except (PromptError, OSError, ValueError) as e:
            report.add("error", where, str(e))
            continue
        labelled = " (labelled, as judge.kind=rubric needs)" if judges.needs_label(recipe.judge.kind) else ""
        report.add("ok", where, f"{len(prompts)} prompts in {len({p.category for p in prompts})} categories{labelled}")
    try:
        items = load_eval_prompts(ctx, recipe.eval.prompts)
        report.add("ok", "eval.prompts", f"{len(items)} prompts")
    except (PromptError, OSError, ValueError, KeyError) as e:
        report.add("error", "eval.prompts", str(e))


def _remote(source: str) -> bool:
    """A hub dataset name (`hf:NAME` or an owner/name that is not a local path)."""
    if source.startswith("hf:"):
        return True
    return not source.startswith(("tinyworld:", "/", "./", "../", "~")) and not Path(source).expanduser().exists() \
        and Path(source).suffix == "" and "/" in source


def _pools(recipe: Recipe, nodes: dict[str, dict[str, float]], report: Report) -> None:
    from rayda.placement import PlacementError, describe, plan_nodes

    try:
        plans = plan_nodes(recipe.pools.named(), nodes)
    except PlacementError as e:
        report.add("error", "pools", str(e))
        return
    report.add("ok", "pools", "the cluster holds the plan\n" + describe(plans, nodes))
