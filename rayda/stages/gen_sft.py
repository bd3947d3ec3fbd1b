"""Stage 1, SFT data generation: prompts -> (spec-conditioned) samples -> judged -> accepted / rejected.

    rayda gen-sft                                  the tiny recipe
    rayda gen-sft tiny prompts.limit=40 judge.kind=llm

Writes `<run.dir>/sft_data/`: `parts/part-XXXXX.parquet` while it runs (each finished shard of
prompts, accepted and rejected rows together, written atomically), then `accepted.parquet`,
`rejected.parquet` and `_SUCCESS` last. A restart skips every prompt id already in a finished part, so
a killed run loses at most the shards in flight. One line per run goes to `<run.dir>/metrics.jsonl`.

Everything that can be wrong with the input (recipe, spec, prompt rows, model paths) fails here,
before Ray or any actor starts.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from rayda import io, templates, tracking
from rayda.config import Recipe
from rayda.data.parts import read_parts
from rayda.types import Prompt

STAGE = "gen_sft"


@dataclass(frozen=True)
class GenSftResult:
    out_dir: Path
    accepted: int
    rejected: int
    metrics: dict


@dataclass(frozen=True)
class Plan:
    """Everything the run needs, resolved and validated before any actor starts."""

    prompts: list[Prompt]
    spec: object
    spec_texts: dict[str, str]
    policy: str
    judge_model: str | None
    provenance: dict
    ctx: object


# ---- preparation (no Ray) -------------------------------------------------------------------------


def prepare(recipe: Recipe) -> Plan:
    from rayda.check import require_sizes
    from rayda.context import RunContext
    from rayda.engines import weights_hash

    require_sizes(recipe, "model", "judge", "gen_sft")
    ctx = RunContext(recipe)
    ctx.check_judge()
    prompts = ctx.prompts()
    spec_texts = ctx.spec_texts({p.category for p in prompts})
    provenance = {
        "spec_id": ctx.spec.id,
        "spec_version": ctx.spec.version,
        "spec_hash": ctx.spec.content_hash,
        "generator_model": recipe.model.policy if recipe.model.policy == "tinyworld" else ctx.policy,
        "generator_weights_hash": weights_hash(ctx.policy),
        "template_hash": templates.TEMPLATE_HASH,
        "judge_kind": recipe.judge.kind,
        "judge_model": ctx.judge_model,
        "k": recipe.judge.k,
        "threshold": recipe.gen_sft.threshold,
        "run_seed": recipe.run.seed,
        "label_source": recipe.prompts.source,
    }
    return Plan(prompts, ctx.spec, spec_texts, ctx.policy, ctx.judge_model, provenance, ctx)


# ---- parts (the unit of resumption: `rayda.data.parts`) ---------------------------------------


def _check_config(parts_dir: Path, provenance: dict, recipe: Recipe) -> None:
    """Parts from a run with another spec, model, template, judge or sampling must not be mixed in."""
    from dataclasses import asdict

    key = {**provenance, "gen_sft": asdict(recipe.gen_sft), "judge": asdict(recipe.judge)}
    key.pop("label_source", None)
    for volatile in ("shard_size", "batch_size", "keep_per_prompt"):  # changing these does not change any part
        key["gen_sft"].pop(volatile)
    for volatile in ("timeout_s", "retries", "concurrency", "api_key_env"):
        key["judge"].pop(volatile)
    io.pin_settings(parts_dir / "_config.json", key)


# ---- the run --------------------------------------------------------------------------------------


def run(recipe: Recipe, *, progress: bool = True) -> GenSftResult:
    out = Path(recipe.run.dir) / "sft_data"
    if io.is_done(out):
        info = json.loads((out / io.SUCCESS).read_text() or "{}")
        keep = recipe.gen_sft.keep_per_prompt
        if info.get("keep_per_prompt", 1) != keep:
            info = _rekeep(out, info, keep)
        print(f"gen-sft: {out} is complete ({info.get('accepted')} accepted); skipping")
        return GenSftResult(out, info.get("accepted", 0), info.get("rejected", 0), info)

    t0 = time.time()
    plan = prepare(recipe)  # every input check happens here, before Ray starts
    parts_dir = out / "parts"
    parts_dir.mkdir(parents=True, exist_ok=True)
    _check_config(parts_dir, plan.provenance, recipe)
    done = {r["prompt_id"] for r in read_parts(parts_dir)}
    todo = [p for p in plan.prompts if p.id not in done]
    print(f"gen-sft: {len(plan.prompts)} prompts, {len(done)} already done, {len(todo)} to generate")

    stream = _Stream()
    if todo:
        stream = _generate(recipe, plan, todo, parts_dir, progress)

    records = {r["prompt_id"]: r for r in read_parts(parts_dir)}
    wanted = [records[p.id] for p in plan.prompts if p.id in records]
    missing = [p.id for p in plan.prompts if p.id not in records]
    if missing:
        raise RuntimeError(f"gen-sft: {len(missing)} prompts have no row after the run (first: {missing[:3]})")
    accepted, rejected = _write_final(out, wanted, recipe.gen_sft.keep_per_prompt)
    metrics = _metrics(recipe, plan, stream, wanted, resumed=len(done), seconds=time.time() - t0)
    tracking.log(recipe.run.dir, metrics, sort_keys=True)
    tracking.close(recipe.run.dir)
    io.mark_success(out, {"accepted": accepted, "rejected": rejected, "keep_per_prompt": recipe.gen_sft.keep_per_prompt,
                          **{k: metrics[k] for k in ("rows", "seconds")}})
    print(f"gen-sft: {accepted} accepted, {rejected} rejected -> {out}")
    return GenSftResult(out, accepted, rejected, metrics)


class _Stream:
    """What the driver saw go by in this run (for metrics and the benchmark)."""

    def __init__(self):
        self.rows = 0
        self.tokens = 0
        self.verdicts = 0
        self.judge_errors = 0
        self.gen_busy: Counter = Counter()
        self.rows_by_actor: Counter = Counter()
        self.ready_at: dict[str, float] = {}
        self.wall = 0.0
        self.first_row_s = 0.0
        """Seconds from the start of the pipeline to its first finished row (mostly engine start)."""
        self.end = 0.0

    def busy_fraction(self) -> float:
        """Share of each generator's life after its engine started that it spent generating."""
        window = sum(max(1e-9, self.end - t) for t in self.ready_at.values())
        return sum(self.gen_busy.values()) / window if window else 0.0


def _dataset(recipe: Recipe, plan: Plan, todo: list[Prompt], engine_cfg):
    """The lazy Ray Data pipeline over `todo` (see `rayda.data.gen_pipeline`); iterate it to run it."""
    import math

    import ray

    from rayda.actors.judge import JudgeWorker  # imported before Ray starts: see `_generate`
    from rayda.actors.rollout import Generator
    from rayda.data.gen_pipeline import prompt_to_json
    from rayda.placement import data_pool_args

    gen, pools = recipe.gen_sft, recipe.pools
    items = [{"prompt": prompt_to_json(p)} for p in todo]
    # One block per generator batch, so the pool's actors share the work from the first batch on.
    ds = ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / gen.batch_size)))
    ds = ds.map_batches(
        Generator, fn_constructor_kwargs=dict(engine_cfg=engine_cfg, gen=gen, spec_texts=plan.spec_texts, run_seed=recipe.run.seed),
        batch_size=gen.batch_size, batch_format="pyarrow", **data_pool_args(pools.rollout),
    )
    return ds.map_batches(
        JudgeWorker,
        fn_constructor_kwargs=dict(**plan.ctx.judge_args(plan.spec_texts), threshold=gen.threshold,
                                   provenance=plan.provenance, run_seed=recipe.run.seed),
        batch_size=gen.batch_size, batch_format="pyarrow", **data_pool_args(pools.judge),
    )


def _generate(recipe: Recipe, plan: Plan, todo: list[Prompt], parts_dir: Path, progress: bool) -> _Stream:
    from tqdm import tqdm

    # Every module the pipeline needs is imported before joining Ray: in a Ray job, a node that prepares
    # the job's working_dir may unpack it again while the driver reads it (seen with two raylets on one
    # machine, which share the session folder): a module first imported after that can go missing.
    import rayda.actors.judge  # noqa: F401
    import rayda.actors.rollout  # noqa: F401
    from rayda.engines.vllm_engine import EngineConfig
    from rayda.data.parts import drain
    from rayda.placement import plan as plan_pools
    from rayda.ray_utils import init_ray

    ray = init_ray(recipe.run)
    pools = {"rollout": recipe.pools.rollout, "judge": recipe.pools.judge}
    plan_pools(pools, ray.cluster_resources())  # fails fast, naming what is missing
    engine_cfg = EngineConfig(
        plan.policy, seed=recipe.run.seed, dtype=recipe.model.dtype, max_model_len=recipe.gen_sft.max_model_len,
        gpu_memory_utilization=recipe.gen_sft.gpu_memory_utilization, enforce_eager=recipe.gen_sft.enforce_eager,
        verbose=recipe.run.verbose,
    )
    ds = _dataset(recipe, plan, todo, engine_cfg)
    s, t0 = _Stream(), time.time()

    def on_row(row: dict) -> None:
        s.rows += 1
        s.tokens += row["gen_tokens"]
        s.verdicts += row["judge_verdicts"]
        s.judge_errors += row["judge_errors"]
        s.gen_busy[row["gen_actor"]] += row["gen_busy_s"]
        s.rows_by_actor[row["gen_actor"]] += 1
        s.ready_at[row["gen_actor"]] = min(row["gen_ready_at"], s.ready_at.get(row["gen_actor"], 1e18))
        if not s.first_row_s:
            s.first_row_s = time.time() - t0

    bar = tqdm(total=len(todo), desc="gen-sft prompts", disable=not progress)
    drain(ds, parts_dir, recipe.gen_sft.shard_size, bar, on_row)
    bar.close()
    s.end = time.time()
    s.wall = s.end - t0
    return s


def _write_final(out: Path, records: list[dict], keep: int = 1) -> tuple[int, int]:
    """`accepted.parquet` (`keep` rows per accepted prompt: `gen_rows.expand`) and `rejected.parquet`;
    returns the number of accepted and rejected prompts."""
    import pyarrow.parquet as pq

    from rayda.data.gen_pipeline import ACCEPTED_SCHEMA, REJECTED_SCHEMA, final_table
    from rayda.data.gen_rows import expand

    prompts = [r for r in records if r["status"] == "accepted"]
    acc = [row for r in prompts for row in expand(r, keep)]
    rej = [r for r in records if r["status"] != "accepted"]
    for name, rows, schema in (("accepted", acc, ACCEPTED_SCHEMA), ("rejected", rej, REJECTED_SCHEMA)):
        with io.atomic_path(out / f"{name}.parquet") as tmp:
            pq.write_table(final_table(rows, schema), tmp)
    return len(prompts), len(rej)


def _rekeep(out: Path, info: dict, keep: int) -> dict:
    """A finished folder asked for another `gen_sft.keep_per_prompt`: rewrite `accepted.parquet` from the
    parts, which hold every passing sample, in the order the folder's files had (nothing is generated
    again; `rejected.parquet` comes out as it was). Parts written before `alternates` existed hold only
    the best sample, which `expand` then repeats."""
    import pyarrow.parquet as pq

    def ids(name: str) -> list[str]:
        return pq.read_table(out / f"{name}.parquet", columns=["prompt_id"]).column(0).to_pylist()

    order = list(dict.fromkeys(ids("accepted") + ids("rejected")))
    records = {r["prompt_id"]: r for r in read_parts(out / "parts")}
    lost = [pid for pid in order if pid not in records]
    if lost:
        raise RuntimeError(f"gen-sft: {out}/parts lacks {len(lost)} of its prompts (first: {lost[:3]}); "
                           f"cannot apply gen_sft.keep_per_prompt={keep} there: use another run.dir")
    _write_final(out, [records[pid] for pid in order], keep)
    info = {**info, "keep_per_prompt": keep}
    io.mark_success(out, info)
    print(f"gen-sft: {out}/accepted.parquet rewritten with {keep} rows per accepted prompt (from its parts)")
    return info


def _metrics(recipe: Recipe, plan: Plan, s: _Stream, records: list[dict], resumed: int, seconds: float) -> dict:
    reasons = Counter(r.get("reason") for r in records if r["status"] != "accepted")
    sample_reasons = Counter(x for r in records for x in r.get("sample_reasons", []))
    actors = sorted(s.gen_busy)
    return {
        "stage": STAGE,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "prompts": len(records),
        "rows": s.rows,
        "resumed": resumed,
        "accepted": sum(1 for r in records if r["status"] == "accepted"),
        "rejected": dict(reasons),
        "accept_rate": sum(1 for r in records if r["status"] == "accepted") / max(1, len(records)),
        "sample_reasons": dict(sample_reasons),
        "judge_kind": recipe.judge.kind,
        "judge_verdicts": s.verdicts,
        "judge_errors": s.judge_errors,
        "judge_error_rate": s.judge_errors / s.verdicts if s.verdicts else 0.0,
        "tokens_generated": s.tokens,
        "seconds": round(seconds, 3),
        "pipeline_seconds": round(s.wall, 3),
        "rows_per_s": s.rows / s.wall if s.wall else 0.0,
        "generator_actors": len(actors),
        "rows_by_actor": [s.rows_by_actor[a] for a in actors],
        "first_row_s": round(s.first_row_s, 3),
        "rows_per_s_after_start": s.rows / (s.end - min(s.ready_at.values())) if s.ready_at else 0.0,
        "generator_busy_fraction": s.busy_fraction(),
    }
