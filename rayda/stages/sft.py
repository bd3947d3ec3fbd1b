"""Stage 2, SFT: train the policy on the accepted rows, prompt (without the spec) -> reasoning + answer.

    rayda sft [RECIPE] [key=value ...]          e.g.  rayda sft tiny sft.zero_stage=3

Reads `<run.dir>/sft_data/accepted.parquet`, renders every row with the model's chat template
(loss on the assistant's reasoning and answer only), trains a DeepSpeed learner group of
`pools.learner.actors` ranks, and writes:

    <run.dir>/checkpoints/sft/         Hugging Face folder (safetensors, tokenizer, chat template),
                                        `train_report.json`, then `_SUCCESS` last
    <run.dir>/checkpoints/sft_state/   DeepSpeed checkpoints `step{N}` + `latest` (resume points); with
                                        `sft.average_last` > 1 each also holds `weights/model.safetensors`
    <run.dir>/metrics.jsonl            one line per step: {"stage": "sft", "step", "loss", "lr", ...}

A run whose `_SUCCESS` exists is skipped; a run without one resumes from the latest checkpoint.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from rayda import tracking
from rayda.config import Recipe
from rayda.io import atomic_path, atomic_write_json, is_done, mark_success, prune_steps

STAGE = "sft"


@dataclass(frozen=True)
class SftData:
    train: list
    heldout: list
    report: dict
    strata: list | None = None
    """`sft.stratify`: each training example's (category, label), for `batch_indices`."""


def paths(recipe: Recipe, out: Path | None = None) -> dict[str, Path]:
    """Where SFT reads and writes; `out` replaces `<run.dir>/checkpoints/sft` (its resume points then go
    to `<out>_state` beside it)."""
    run = Path(recipe.run.dir)
    out = Path(out) if out is not None else run / "checkpoints" / "sft"
    return {
        "data": Path(recipe.sft.data) if recipe.sft.data else run / "sft_data" / "accepted.parquet",
        "out": out,
        "state": out.parent / f"{out.name}_state",
        "metrics": run / "metrics.jsonl",
    }


def policy_path(recipe: Recipe) -> str:
    """The starting policy as a loadable path or hub name; fails before any actor starts if missing."""
    from rayda.context import RunContext

    return RunContext(recipe).policy


def load_data(recipe: Recipe, tokenizer) -> SftData:
    """Stream the accepted rows from parquet, render them, split off the held-out prompts."""
    import pyarrow.parquet as pq

    from rayda.data.sft import RenderReport, SftDataError, is_heldout, render

    cfg, path = recipe.sft, paths(recipe)["data"]
    if not path.exists():
        raise FileNotFoundError(f"SFT data {path} does not exist: run `rayda gen-sft` first or set sft.data")
    pf = pq.ParquetFile(path)
    missing = {"messages", "prompt_id"} - set(pf.schema_arrow.names)
    if missing:
        raise SftDataError(f"{path}: missing column(s) {sorted(missing)}")
    columns = ["messages", "prompt_id"]
    if cfg.stratify:
        missing = {"category", "label"} - set(pf.schema_arrow.names)
        if missing:
            raise SftDataError(f"{path}: sft.stratify needs the column(s) {sorted(missing)}")
        columns += ["category", "label"]
    train, heldout, report, n, strata = [], [], RenderReport(), 0, []
    for batch in pf.iter_batches(batch_size=256, columns=columns):
        for row in batch.to_pylist():
            try:
                ex = render(row["messages"], tokenizer, cfg.max_length, cfg.overlong, str(row["prompt_id"]), report)
            except SftDataError as e:
                raise SftDataError(f"{path}, row {n} (prompt {row['prompt_id']}): {e}") from None
            n += 1
            if ex is None:
                continue
            if is_heldout(ex.prompt_id, cfg.heldout_fraction, recipe.run.seed):
                heldout.append(ex)
            else:
                train.append(ex)
                if cfg.stratify:
                    strata.append(f"{row['category']}/{row['label']}")
    if n == 0:
        raise SftDataError(f"{path} has no rows: nothing to train on")
    if not train:
        raise SftDataError(f"{path}: none of the {n} rows is trainable ({report.as_dict()})")
    return SftData(train, heldout, {**report.as_dict(), "train": len(train), "heldout": len(heldout)},
                   strata if cfg.stratify else None)


def learner_options(recipe: Recipe, total_steps: int, pad_id: int):
    from rayda.engines.deepspeed_engine import LearnerOptions

    c = recipe.sft
    return LearnerOptions(
        zero_stage=c.zero_stage, offload_optimizer=c.offload_optimizer, offload_params=c.offload_params,
        micro_batch_size=c.micro_batch_size, grad_accum=c.grad_accum, lr=c.lr, min_lr_ratio=c.min_lr_ratio,
        warmup_steps=c.warmup_steps, total_steps=total_steps, weight_decay=c.weight_decay,
        grad_clip=c.grad_clip, dtype=recipe.model.dtype, seed=recipe.run.seed, pad_id=pad_id,
        lora=c.lora if c.lora.rank else None, verbose=recipe.run.verbose,
    )


def total_steps(recipe: Recipe, num_train: int) -> int:
    c = recipe.sft
    if c.max_steps is not None:
        return c.max_steps
    rows_per_step = c.micro_batch_size * c.grad_accum * recipe.pools.learner.actors
    return max(1, math.ceil(c.epochs * num_train / rows_per_step))


def averaged_snapshots(state: Path, average_last: int) -> list[Path]:
    """The weight snapshots `sft.average_last` averages with the final weights: those of the newest
    `average_last - 1` checkpoints in `state` that have one (fewer when training was shorter)."""
    if average_last <= 1:
        return []
    steps = sorted((d for d in state.glob("step*") if (d / "weights" / "model.safetensors").exists()), key=lambda d: int(d.name[4:]))
    return [d / "weights" for d in steps[-(average_last - 1):]]


def _snapshot(group, state: Path, step: int) -> None:
    """The weights at checkpoint `step` as `state/step{step}/weights/model.safetensors`, unless there."""
    target = state / f"step{step}" / "weights"
    if not (target / "model.safetensors").exists():
        group.run_all("save_weights", str(target))


def _heldout_loss(group, heldout: list) -> float | None:
    if not heldout:
        return None
    parts = group.run_sharded("eval_loss", heldout)
    return sum(p["nll_sum"] for p in parts) / max(1.0, sum(p["tokens"] for p in parts))


def run(recipe: Recipe, *, progress: bool = True, on_step=None, out: Path | None = None, stage: str = STAGE) -> Path:
    """Train and export; returns the Hugging Face folder. `on_step(step, record)` runs after each
    step (tests use it to stop a run part-way, as a kill would). `out` and `stage` let another stage
    train through this one (`rayda cai-sft`: its own folder, its own name in metrics.jsonl)."""
    from tqdm import tqdm
    from transformers import AutoTokenizer

    from rayda.actors.group import ActorGroup
    from rayda.actors.learner import Learner
    from rayda.check import require_sizes
    from rayda.data.sft import batch_indices
    from rayda.ray_utils import init_ray
    from rayda.rl.merge import average_into

    p = paths(recipe, out)
    if is_done(p["out"]):
        print(f"sft: {p['out']} is complete (_SUCCESS); skipping")
        return p["out"]
    # Everything that can fail on bad input fails here, before any actor starts.
    require_sizes(recipe, "model", "sft")
    model_path = policy_path(recipe)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    data = load_data(recipe, tokenizer)
    steps = total_steps(recipe, len(data.train))
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    opts = learner_options(recipe, steps, pad_id or 0)
    rows_per_step = opts.rows_per_step(recipe.pools.learner.actors)
    print(f"sft: {data.report}; {steps} steps of {rows_per_step} rows from {model_path}")

    init_ray(recipe.run)
    with ActorGroup(Learner, recipe.pools.learner, "learner", setup_args=(model_path, opts)) as group:
        resumed = group.run_all("load_checkpoint", str(p["state"]))[0]
        start = resumed["step"] if resumed else 0
        if start:
            print(f"sft: resuming at step {start} of {steps} from {p['state']}")
            if recipe.sft.average_last > 1:  # a kill between the checkpoint and its snapshot: these are its weights
                _snapshot(group, p["state"], start)
        heldout, record = None, {"loss": None}
        bar = tqdm(total=steps, initial=start, desc="sft", disable=not progress)
        for step in range(start, steps):
            t0 = time.perf_counter()
            batch = [data.train[i] for i in batch_indices(len(data.train), step, rows_per_step, recipe.run.seed, data.strata)]
            parts = group.run_sharded("train_step", batch)
            tokens = sum(r["tokens"] for r in parts)
            record = {"stage": stage, "step": step + 1, "loss": sum(r["nll_sum"] for r in parts) / max(tokens, 1.0),
                      "lr": parts[0]["lr"], "tokens": int(tokens), "learner_tokens": int(tokens), "grad_norm": parts[0]["grad_norm"],
                      "seconds": round(time.perf_counter() - t0, 4)}
            done = step + 1
            if done == steps or (recipe.sft.eval_every and done % recipe.sft.eval_every == 0):
                heldout = record["heldout_loss"] = _heldout_loss(group, data.heldout)
            tracking.log(recipe.run.dir, record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.3f}")
            if recipe.sft.save_every and done % recipe.sft.save_every == 0 and done < steps:
                group.run_all("save_checkpoint", str(p["state"]), f"step{done}", {"step": done, "rows_seen": done * rows_per_step})
                if recipe.sft.average_last > 1:
                    _snapshot(group, p["state"], done)
                prune_steps(p["state"], recipe.sft.keep_checkpoints)
            if on_step is not None:
                on_step(done, record)
        bar.close()
        tracking.close(recipe.run.dir)
        with atomic_path(p["out"]) as tmp:
            group.run_all("export_hf", str(tmp))
            snapshots = averaged_snapshots(p["state"], recipe.sft.average_last)
            average_into(tmp, snapshots)
            report = {**data.report, "steps": steps, "resumed_from": start, "final_loss": record["loss"],
                      "heldout_loss": heldout, "model": model_path, "ranks": group.world_size, "zero_stage": opts.zero_stage,
                      "averaged_steps": [int(s.parent.name[4:]) for s in snapshots] + [steps]}
            atomic_write_json(tmp / "train_report.json", report)
    mark_success(p["out"], {"stage": stage, **report})
    return p["out"]
