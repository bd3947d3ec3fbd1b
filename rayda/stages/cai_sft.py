"""Constitutional AI, supervised stage: the base answers, a critic critiques, the base revises; SFT on revisions.

    rayda cai-sft                                   the tiny recipe
    rayda cai-sft tiny prompts.limit=32 cai.rounds=1 sft.max_steps=8

The constitution is the spec's clauses, and the model never sees the spec: the base (`model.policy`)
answers each prompt (`prompts.source`, `prompts.limit`) from its own turns; then, for `cai.rounds`
rounds, a principle (a clause of the prompt's category, seeded) is sampled, the critic (the judge's:
rule-based for the rubric judge, written by an llm/http judge otherwise; `rayda.critique`) critiques the
current answer against it, and the base rewrites the answers the critic wants changed, with the earlier
answer and the critique in context. SFT then trains the base on prompt -> final revision.

Writes, under `<run.dir>`:

    cai_data/parts/part-XXXXX.parquet   finished shards of prompts while it runs (resume points)
    cai_data/accepted.parquet           SFT rows (`messages`) + provenance: original answer, principles,
                                        critiques, revisions, behaviour before and after
    cai_data/dropped.parquet            final revisions that are not well formed, with the reason
    cai_data/_SUCCESS                   last
    checkpoints/cai_sft/                the SFT'd model (Hugging Face folder, `_SUCCESS` last);
                                        `checkpoints/cai_sft_state/` holds its resume points
    metrics.jsonl                       stage `cai_sft`: one line for the data (`tokens_generated`,
                                        accuracy before/after revision), one per SFT step (`learner_tokens`)

Each part resumes or skips on its own marker: a killed run redoes at most the shards in flight and the
SFT steps after its last checkpoint. Every input check happens before Ray or any actor starts.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from rayda import io, tracking
from rayda.config import Recipe
from rayda.data.parts import read_parts
from rayda.types import Prompt

STAGE = "cai_sft"


@dataclass(frozen=True)
class CaiSftResult:
    data_dir: Path
    model_dir: Path
    accepted: int
    dropped: int
    metrics: dict


@dataclass(frozen=True)
class Plan:
    """Everything the data part needs, resolved and validated before any actor starts."""

    prompts: list[Prompt]
    spec: object
    policy: str
    provenance: dict
    ctx: object


def paths(recipe: Recipe) -> dict[str, Path]:
    run = Path(recipe.run.dir)
    return {"data": run / "cai_data", "model": run / "checkpoints" / "cai_sft"}


def prepare(recipe: Recipe) -> Plan:
    from rayda.check import require_sizes
    from rayda.context import RunContext
    from rayda.critique import CAI_TEMPLATE_HASH
    from rayda.engines import weights_hash

    require_sizes(recipe, "model", "judge", "cai", "sft")  # the SFT part's settings too: fail before generating
    ctx = RunContext(recipe)
    ctx.check_judge()
    prompts = ctx.prompts()
    provenance = {
        "spec_id": ctx.spec.id, "spec_version": ctx.spec.version, "spec_hash": ctx.spec.content_hash,
        "generator_model": recipe.model.policy if recipe.model.policy == "tinyworld" else ctx.policy,
        "generator_weights_hash": weights_hash(ctx.policy), "template_hash": CAI_TEMPLATE_HASH,
        "critic_kind": recipe.judge.kind, "critic_model": ctx.judge_model, "run_seed": recipe.run.seed,
        "label_source": recipe.prompts.source,
    }
    return Plan(prompts, ctx.spec, ctx.policy, provenance, ctx)


def settings_key(provenance: dict, recipe: Recipe) -> dict:
    """What parts of one run must agree on: a resumed run with another spec, model, critic, prompt
    template or sampling must not mix its rows in. Shard and batch sizes change no row."""
    key = {**provenance, "cai": asdict(recipe.cai), "judge": asdict(recipe.judge)}
    key.pop("label_source", None)
    for volatile in ("shard_size", "batch_size"):
        key["cai"].pop(volatile)
    for volatile in ("timeout_s", "retries", "concurrency", "api_key_env", "k", "temperature", "max_tokens"):
        key["judge"].pop(volatile)  # the critic's sampling is cai.critic_*; k is not used
    return key


# ---- the run --------------------------------------------------------------------------------------


def run(recipe: Recipe, *, progress: bool = True) -> CaiSftResult:
    """The data part (skipped when `cai_data/_SUCCESS` exists), then SFT on it (skipped when
    `checkpoints/cai_sft/_SUCCESS` exists)."""
    from rayda.stages import sft

    p = paths(recipe)
    info = generate_data(recipe, progress=progress)
    sft_recipe = replace(recipe, sft=replace(recipe.sft, data=str(p["data"] / "accepted.parquet")))
    model = sft.run(sft_recipe, progress=progress, out=p["model"], stage=STAGE)
    print(f"cai-sft: {info['accepted']} revisions trained on -> {model}")
    return CaiSftResult(p["data"], model, info["accepted"], info["dropped"], info)


def generate_data(recipe: Recipe, *, progress: bool = True) -> dict:
    """Answer, critique and revise every prompt into `<run.dir>/cai_data/`; returns the `_SUCCESS` info."""
    out = paths(recipe)["data"]
    if io.is_done(out):
        info = json.loads((out / io.SUCCESS).read_text() or "{}")
        print(f"cai-sft: {out} is complete ({info.get('accepted')} rows); skipping generation")
        return info
    t0 = time.time()
    plan = prepare(recipe)
    parts_dir = out / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    io.pin_settings(parts_dir / "_config.json", settings_key(plan.provenance, recipe))
    done = {r["prompt_id"] for r in read_parts(parts_dir)}
    todo = [p for p in plan.prompts if p.id not in done]
    print(f"cai-sft: {len(plan.prompts)} prompts, {len(done)} already done, {len(todo)} to answer and revise")
    stream = _generate(recipe, plan, todo, parts_dir, progress) if todo else {"rows": 0, "tokens": 0, "critic_errors": 0, "wall": 0.0}
    records = {r["prompt_id"]: r for r in read_parts(parts_dir)}
    missing = [p.id for p in plan.prompts if p.id not in records]
    if missing:
        raise RuntimeError(f"cai-sft: {len(missing)} prompts have no row after the run (first: {missing[:3]})")
    wanted = [records[p.id] for p in plan.prompts]
    counts = _write_final(out, wanted)
    metrics = _metrics(recipe, wanted, stream, resumed=len(done), seconds=time.time() - t0)
    tracking.log(recipe.run.dir, metrics, sort_keys=True)
    tracking.close(recipe.run.dir)
    info = {**counts, **{k: metrics[k] for k in ("prompts", "accuracy_before", "accuracy_after", "seconds")}}
    io.mark_success(out, info)
    print(f"cai-sft: {counts['accepted']} rows, {counts['dropped']} dropped; labelled behaviour "
          f"{metrics['accuracy_before']} before revision, {metrics['accuracy_after']} after -> {out}")
    return info


def _generate(recipe: Recipe, plan: Plan, todo: list[Prompt], parts_dir: Path, progress: bool) -> dict:
    import math

    from tqdm import tqdm

    # Every module the pipeline needs is imported before joining Ray (see `stages/gen_sft._generate`).
    from rayda.actors.cai import Critic, Reviser
    from rayda.data.gen_pipeline import prompt_to_json
    from rayda.data.parts import drain
    from rayda.engines.vllm_engine import EngineConfig
    from rayda.placement import data_pool_args
    from rayda.placement import plan as plan_pools
    from rayda.ray_utils import init_ray
    from rayda.rl.pools import JudgePool

    ray = init_ray(recipe.run)
    plan_pools({"rollout": recipe.pools.rollout, "judge": recipe.pools.judge}, ray.cluster_resources())
    cai = recipe.cai
    engine_cfg = EngineConfig(plan.policy, seed=recipe.run.seed, dtype=recipe.model.dtype, max_model_len=cai.max_model_len,
                              gpu_memory_utilization=cai.gpu_memory_utilization, enforce_eager=cai.enforce_eager,
                              verbose=recipe.run.verbose)
    critics = JudgePool(Critic, recipe.pools.judge, {**plan.ctx.judge_args({}), "cai": cai}, name="critic")
    s = {"rows": 0, "tokens": 0, "critic_errors": 0, "wall": 0.0}

    def on_row(row: dict) -> None:
        s["rows"] += 1
        s["tokens"] += row["gen_tokens"]
        s["critic_errors"] += row["critic_errors"]

    t0 = time.time()
    try:
        items = [{"prompt": prompt_to_json(p)} for p in todo]
        ds = ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / cai.batch_size)))
        ds = ds.map_batches(
            Reviser, fn_constructor_kwargs=dict(engine_cfg=engine_cfg, cai=cai, spec=plan.spec, critics=critics.actors,
                                                provenance=plan.provenance, run_seed=recipe.run.seed),
            batch_size=cai.batch_size, batch_format="pyarrow", **data_pool_args(recipe.pools.rollout),
        )
        bar = tqdm(total=len(todo), desc="cai-sft prompts", disable=not progress)
        drain(ds, parts_dir, cai.shard_size, bar, on_row)
        bar.close()
    finally:
        critics.shutdown()
    s["wall"] = time.time() - t0
    return s


def _write_final(out: Path, records: list[dict]) -> dict:
    import pyarrow.parquet as pq

    from rayda.data.cai_pipeline import ACCEPTED, SCHEMA
    from rayda.data.gen_pipeline import final_table

    acc = [r for r in records if r["status"] == ACCEPTED]
    dropped = [r for r in records if r["status"] != ACCEPTED]
    for name, rows in (("accepted", acc), ("dropped", dropped)):
        with io.atomic_path(out / f"{name}.parquet") as tmp:
            pq.write_table(final_table(rows, SCHEMA), tmp)
    return {"accepted": len(acc), "dropped": len(dropped)}


def _metrics(recipe: Recipe, records: list[dict], s: dict, resumed: int, seconds: float) -> dict:
    from collections import Counter

    from rayda.data.cai_pipeline import ACCEPTED, accuracy

    rounds = sum(r["rounds"] for r in records)
    return {
        "stage": STAGE,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "prompts": len(records),
        "resumed": resumed,
        "rows": s["rows"],
        "accepted": sum(1 for r in records if r["status"] == ACCEPTED),
        "dropped": dict(Counter(r["reason"] for r in records if r["status"] != ACCEPTED)),
        "rounds": recipe.cai.rounds,
        "critiques": rounds,
        "revisions": sum(r["revisions"] for r in records),
        "critic_kind": recipe.judge.kind,
        "critic_errors": s["critic_errors"],
        **accuracy(records),
        "tokens_generated": s["tokens"],
        "seconds": round(seconds, 3),
        "pipeline_seconds": round(s["wall"], 3),
        "rows_per_s": s["rows"] / s["wall"] if s["wall"] else 0.0,
    }
