"""Constitutional AI's preference model: judged pairs of policy samples -> a Bradley-Terry reward model.

    rayda pm [RECIPE] [key=value ...]            e.g.  rayda pm tiny pm.init=base prompts.limit=48

1. Pairs. The policy `pm.init` names (vLLM, the RL rollout pool, no spec in the prompt) samples two
   answers per prompt of `pm.prompts` (else `rl.prompts`, else `prompts.source`). The judge compares
   them in the REWARD view (`RewardRequest`: prompt + final answer, never the reasoning) under a
   principle, a clause of the prompt's category drawn with a seeded generator, `pm.votes` times; the
   majority wins, ties are dropped and counted, a malformed sample loses to a well-formed one
   (`rayda.data.pairs`). The rubric's vote compares the two answers' REWARD scores (their parts break
   ties; it reads the label, so the principle is recorded, not used); an llm or http judge answers the
   pairwise template (`rayda.templates.pairwise_messages`: the principle's text, the request, both
   answers, their order swapping from vote to vote) with {"better": 1|2|0}, parsed strictly.
2. Training. The policy's network with a new scalar head (`AutoModelForSequenceClassification`,
   num_labels=1) learns -log sigmoid(r_chosen - r_rejected) (`rayda.algo.losses.bradley_terry_loss`) on
   the DeepSpeed learner group; pairs are split into train / held-out by prompt id (seeded).

Writes:
    <run.dir>/pm_data/parts/part-XXXXX.parquet  the judged pairs of each shard of prompts (the unit of
                                               resumption: a restart samples only the prompts missing)
    <run.dir>/pm_data/pairs.parquet            kept pairs (column `split`: train / heldout), provenance
    <run.dir>/pm_data/dropped.parquet          dropped pairs with their reason; then `_SUCCESS`
    <run.dir>/checkpoints/pm/                  the reward model (Hugging Face folder), `pm_report.json`,
                                               then `_SUCCESS` last
    <run.dir>/metrics.jsonl                    {"stage": "pm"} lines: one per sampling run (`tokens_generated`),
                                               one per step (`learner_tokens`), one with the pair accuracies

RL is rewarded by the result with `reward.kind=pm` (`rayda.judges.pm`). Training has no checkpoints of
its own (it takes about a minute on the tiny world): a run killed while training samples nothing again
and trains again from the start.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

from rayda import io, templates, tracking
from rayda.config import Recipe

STAGE = "pm"
PART_GLOB = "part-*.parquet"


@dataclass(frozen=True)
class Plan:
    init: str
    """The sampling policy, and the weights the preference model starts from."""
    prompts: list
    spec_texts: dict
    provenance: dict
    ctx: object


def paths(recipe: Recipe) -> dict[str, Path]:
    run = Path(recipe.run.dir)
    return {"data": run / "pm_data", "parts": run / "pm_data" / "parts", "out": run / "checkpoints" / "pm",
            "sft": run / "checkpoints" / "sft"}


def prepare(recipe: Recipe) -> Plan:
    """Every check on the input, before Ray starts: sizes, judge, the starting model, prompts."""
    from rayda.check import require_sizes
    from rayda.context import RunContext
    from rayda.engines import weights_hash

    require_sizes(recipe, "model", "judge", "pm")
    c, p = recipe.pm, paths(recipe)
    if c.init == "sft" and not io.is_done(p["sft"]):
        raise FileNotFoundError(f"pm.init=sft: {p['sft']} is not finished (no _SUCCESS): run `rayda sft` first "
                                "or set pm.init=base or a model path")
    ctx = RunContext(recipe)
    ctx.check_judge()
    init = str(p["sft"].resolve()) if c.init == "sft" else ctx.policy if c.init == "base" else ctx.model(c.init, "pm.init")
    prompts = ctx.prompts(c.prompts or recipe.rl.prompts)
    spec_texts = ctx.spec_texts({q.category for q in prompts}, init)
    provenance = {"spec_id": ctx.spec.id, "spec_hash": ctx.spec.content_hash, "policy": init,
                  "policy_weights_hash": weights_hash(init), "template_hash": templates.PAIRWISE_HASH,
                  "judge_kind": recipe.judge.kind, "judge_model": ctx.judge_model, "votes": c.votes, "temperature": c.temperature,
                  "max_tokens": c.max_tokens, "run_seed": recipe.run.seed}
    return Plan(init, prompts, spec_texts, provenance, ctx)


# ---- 1. pairs -------------------------------------------------------------------------------------


def read_parts(parts_dir: Path) -> list[dict]:
    """The rows of every finished part (a killed run's `.tmp-*` leftovers are ignored)."""
    import pyarrow.parquet as pq

    return [r for f in sorted(parts_dir.glob(PART_GLOB)) for r in pq.read_table(f).to_pylist()]


def _write_table(target: Path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    with io.atomic_path(target) as tmp:
        pq.write_table(pa.Table.from_pylist(rows), tmp)


def sample_pairs(recipe: Recipe, plan: Plan, progress: bool = True) -> list[dict]:
    """Sample and judge the pairs of every prompt not in a finished part, then write the final tables;
    returns the kept pairs (with their `split`)."""
    from rayda.data.pairs import with_splits

    c, p, seed = recipe.pm, paths(recipe), recipe.run.seed
    out = p["data"]
    if io.is_done(out):
        print(f"pm: {out} is complete; skipping the sampling")
        return read_kept(out)
    p["parts"].mkdir(parents=True, exist_ok=True)
    io.pin_settings(p["parts"] / "_config.json", plan.provenance)  # parts of another policy, judge or sampling do not mix
    done = {r["prompt_id"] for r in read_parts(p["parts"])}
    todo = [q for q in plan.prompts if q.id not in done]
    print(f"pm: {len(plan.prompts)} prompts, {len(done)} already paired, {len(todo)} to sample from {plan.init}")
    t0, tokens = time.time(), 0
    if todo:
        tokens = _sample(recipe, plan, todo, progress)
    rows = {r["prompt_id"]: r for r in read_parts(p["parts"])}
    missing = [q.id for q in plan.prompts if q.id not in rows]
    if missing:
        raise RuntimeError(f"pm: {len(missing)} prompts have no pair after sampling (first: {missing[:3]})")
    rows = [rows[q.id] for q in plan.prompts]
    kept = with_splits(rows, c.heldout_fraction, seed)
    dropped = [r for r in rows if not r["chosen"]]
    _write_table(out / "pairs.parquet", kept)
    _write_table(out / "dropped.parquet", dropped)
    counts = _counts(rows)
    tracking.log(recipe.run.dir, {"stage": STAGE, "phase": "pairs", "prompts": len(rows), "sampled": len(todo),
                                  **counts, "tokens_generated": tokens, "seconds": round(time.time() - t0, 3)})
    io.mark_success(out, {"kept": len(kept), "dropped": len(dropped), **counts})
    print(f"pm: {len(kept)} pairs kept, {len(dropped)} dropped {counts['dropped']} -> {out}")
    return kept


def _counts(rows: list[dict]) -> dict:
    from collections import Counter

    from rayda.data.pairs import DROPPED, KEPT

    reasons = Counter(r["reason"] for r in rows)
    return {"kept": {k: reasons[k] for k in KEPT}, "dropped": {k: reasons[k] for k in DROPPED}}


def _sample(recipe: Recipe, plan: Plan, todo: list, progress: bool) -> int:
    """Two samples per prompt from the rollout pool, judged by the judge pool, a part per shard; the
    tokens generated."""
    from tqdm import tqdm
    from transformers import AutoTokenizer

    from rayda.actors.judge import JudgeWorker
    from rayda.actors.rollout import Generator
    from rayda.data.gen_rows import stable_seed
    from rayda.data.pairs import pair_record, principle, principle_text
    from rayda.engines.vllm_engine import EngineConfig
    from rayda.placement import plan as plan_pools
    from rayda.ray_utils import init_ray
    from rayda.rl.pools import JudgePool, RolloutPool
    from rayda.types import Completion, RewardRequest

    c, seed, parts = recipe.pm, recipe.run.seed, paths(recipe)["parts"]
    tokenizer = AutoTokenizer.from_pretrained(plan.init)
    ray = init_ray(recipe.run)
    plan_pools({"rollout": recipe.pools.rollout, "judge": recipe.pools.judge}, ray.cluster_resources())
    engine = EngineConfig(plan.init, seed=seed, dtype=recipe.model.dtype, max_model_len=recipe.rl.max_model_len,
                          gpu_memory_utilization=recipe.rl.gpu_memory_utilization, enforce_eager=recipe.rl.enforce_eager,
                          verbose=recipe.run.verbose)
    rollout = RolloutPool(Generator, engine, recipe.pools.rollout, "pm-rollout", recipe.rl.rollout_restarts, recipe.rl.rollout_retries)
    judges = JudgePool(JudgeWorker, recipe.pools.judge, plan.ctx.judge_args(plan.spec_texts, replace(recipe.judge, k=c.votes)), "pm-judge")
    next_part = max((int(f.stem.split("-")[1]) for f in parts.glob(PART_GLOB)), default=-1) + 1
    tokens, bar = 0, tqdm(total=len(todo), desc="pm pairs", disable=not progress)
    try:
        rollout.wait_ready()
        for at in range(0, len(todo), c.shard_size):
            shard = todo[at:at + c.shard_size]
            ids = [list(tokenizer.apply_chat_template(list(q.messages), tokenize=True, add_generation_prompt=True,
                                                      return_dict=False)) for q in shard]
            outs, _ = rollout.generate(ids, [stable_seed(seed, "pm", q.id) for q in shard], n=2,
                                       temperature=c.temperature, max_tokens=c.max_tokens)
            done = [Completion.from_text(q, s.text, v, token_ids=s.token_ids) for q, (v, samples) in zip(shard, outs) for s in samples]
            clauses = [principle(plan.ctx.spec, q.category, seed, q.id) for q in shard]
            both = [i for i in range(len(shard)) if not done[2 * i].malformed and not done[2 * i + 1].malformed]
            # the judge sees the prompt and the two final answers only (RewardRequest has no reasoning)
            votes = dict(zip(both, judges.compare(
                [(RewardRequest.of(done[2 * i]), RewardRequest.of(done[2 * i + 1])) for i in both],
                [principle_text(plan.ctx.spec, clauses[i]) for i in both],
                [stable_seed(seed, "pm-judge", shard[i].id) for i in both])))
            rows = [pair_record(done[2 * i], done[2 * i + 1], votes.get(i, ()), principle=clauses[i],
                                provenance=json.dumps(plan.provenance, sort_keys=True)) for i in range(len(shard))]
            _write_table(parts / f"part-{next_part:05d}.parquet", rows)
            next_part += 1
            tokens += sum(r["tokens"] for r in rows)
            bar.update(len(shard))
    finally:
        bar.close()
        rollout.shutdown()
        judges.shutdown()
    return tokens


# ---- 2. the preference model ----------------------------------------------------------------------


def pair_rows(pairs: list[dict], tokenizer, max_length: int) -> tuple[list, list, int]:
    """(train, held-out) `PairRow`s of the kept pairs, and how many were dropped as too long."""
    from rayda.data.pairs import pair_row

    train, heldout, overlong = [], [], 0
    for r in pairs:
        row = pair_row(tokenizer, json.loads(r["messages"]), r["chosen_answer"], r["rejected_answer"], r["prompt_id"], max_length)
        if row is None:
            overlong += 1
        else:
            (heldout if r["split"] == "heldout" else train).append(row)
    return train, heldout, overlong


def learner_options(recipe: Recipe, total_steps: int, pad_id: int):
    from rayda.engines.deepspeed_engine import LearnerOptions

    c = recipe.pm
    return LearnerOptions(zero_stage=c.zero_stage, micro_batch_size=c.micro_batch_size, grad_accum=c.grad_accum, lr=c.lr,
                          min_lr_ratio=0.1, warmup_steps=c.warmup_steps, total_steps=total_steps, weight_decay=0.0,
                          grad_clip=1.0, dtype=recipe.model.dtype, seed=recipe.run.seed, pad_id=pad_id, head="score",
                          verbose=recipe.run.verbose)


def pair_figures(parts: list[dict]) -> dict:
    """Loss, accuracy (r_chosen > r_rejected) and mean margin over the ranks' `eval_loss` sums."""
    n = sum(p["tokens"] for p in parts)
    if not n:
        return {"pairs": 0, "loss": None, "accuracy": None, "margin": None}
    return {"pairs": int(n), "loss": sum(p["nll_sum"] for p in parts) / n,
            "accuracy": sum(p["correct_sum"] for p in parts) / n, "margin": sum(p["margin_sum"] for p in parts) / n}


def train(recipe: Recipe, plan: Plan, pairs: list[dict], progress: bool = True) -> dict:
    """Train the preference model on the kept pairs, export it; returns the report."""
    from tqdm import tqdm
    from transformers import AutoTokenizer

    from rayda.actors.group import ActorGroup
    from rayda.actors.learner import Learner
    from rayda.data.sft import batch_indices
    from rayda.ray_utils import init_ray

    c, out = recipe.pm, paths(recipe)["out"]
    tokenizer = AutoTokenizer.from_pretrained(plan.init)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    train_rows, heldout, overlong = pair_rows(pairs, tokenizer, c.max_length)
    if not train_rows or not heldout:
        raise RuntimeError(f"pm: {len(train_rows)} training and {len(heldout)} held-out pairs (of {len(pairs)} kept, "
                           f"{overlong} too long): need both; sample more prompts or change pm.heldout_fraction")
    per_step = c.micro_batch_size * c.grad_accum * recipe.pools.learner.actors
    steps = max(1, math.ceil(c.epochs * len(train_rows) / per_step))
    opts = learner_options(recipe, steps, pad_id or 0)
    print(f"pm: {len(train_rows)} training pairs, {len(heldout)} held out, {overlong} too long; {steps} steps of {per_step}")
    init_ray(recipe.run)
    with ActorGroup(Learner, recipe.pools.learner, "pm-learner", setup_args=(plan.init, opts)) as group:
        before = pair_figures(group.run_sharded("eval_loss", heldout, "bt"))
        bar = tqdm(total=steps, desc="pm", disable=not progress)
        for step in range(steps):
            t0 = time.perf_counter()
            batch = [train_rows[i] for i in batch_indices(len(train_rows), step, per_step, recipe.run.seed)]
            parts = group.run_sharded("train_step", batch, "bt")
            n = max(sum(p["tokens"] for p in parts), 1.0)
            record = {"stage": STAGE, "step": step + 1, "loss": sum(p["nll_sum"] for p in parts) / n,
                      "accuracy": sum(p["correct_sum"] for p in parts) / n, "lr": parts[0]["lr"], "grad_norm": parts[0]["grad_norm"],
                      "pairs": int(n), "learner_tokens": sum(len(r.chosen_ids) + len(r.rejected_ids) for r in batch),
                      "seconds": round(time.perf_counter() - t0, 4)}
            tracking.log(recipe.run.dir, record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3f}", acc=f"{record['accuracy']:.2f}")
        bar.close()
        figures = {"train": pair_figures(group.run_sharded("eval_loss", train_rows, "bt")),
                   "heldout": pair_figures(group.run_sharded("eval_loss", heldout, "bt")), "heldout_before": before}
        report = {"heldout_accuracy": figures["heldout"]["accuracy"], "train_accuracy": figures["train"]["accuracy"],
                  "heldout_accuracy_before": before["accuracy"], **figures, "steps": steps, "overlong": overlong,
                  "model": plan.init, "ranks": group.world_size}
        with io.atomic_path(out) as tmp:
            group.run_all("export_hf", str(tmp))
            io.atomic_write_json(tmp / "pm_report.json", report)
    tracking.log(recipe.run.dir, {"stage": STAGE, "phase": "report", **{k: v for k, v in report.items() if k != "model"}})
    tracking.close(recipe.run.dir)
    return report


def run(recipe: Recipe, *, progress: bool = True) -> Path:
    """Sample and judge the pairs, train the preference model; returns its Hugging Face folder."""
    out = paths(recipe)["out"]
    if io.is_done(out):
        print(f"pm: {out} is complete (_SUCCESS); skipping")
        return out
    plan = prepare(recipe)  # every input check, before Ray starts
    report = train(recipe, plan, sample_pairs(recipe, plan, progress), progress)
    io.mark_success(out, {"stage": STAGE, **report})
    print(f"pm: held-out pair accuracy {report['heldout_accuracy']:.3f} (train {report['train_accuracy']:.3f}, "
          f"before training {report['heldout_accuracy_before']:.3f}) -> {out}")
    return out


def read_kept(data: Path) -> list[dict]:
    """The kept pairs of a finished `pm_data` folder."""
    import pyarrow.parquet as pq

    return pq.read_table(data / "pairs.parquet").to_pylist()
