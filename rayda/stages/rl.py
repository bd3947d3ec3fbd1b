"""Stage 3, RL: GRPO from the SFT checkpoint, rewarded by a judge that sees only the final answer.

    rayda rl [RECIPE] [key=value ...]            e.g.  rayda rl tiny rl.steps=40 rl.kl_coef=0.1

The algorithm, one step (policy version v -> v + 1):

    prompts  <- the step's batch (a seeded order: a resumed run replays it exactly)
    for each prompt, n samples from the rollout pool (vLLM, no spec in the prompt), stamped with v
    split each into (cot, answer); malformed -> reward -format_penalty, not judged
    judge pool, REWARD view on RewardRequest.of(completion) (prompt + answer; no cot field)
        -> reward = min-of-k score; a judge error excludes the sample from the loss (counted)
    advantages A = (r - mean_group) / std_group            (rayda.algo.grpo.group_advantages)
    old log-probs <- learner (current weights), ref log-probs <- learner's frozen reference
    for each update in the batch: minimise  clipped_pg(ratio = p/p_old, A) + kl_coef * KL(p || ref)
    broadcast the weights to every rollout engine (or save + reload), probe: log-probs must match (contract 4)

With `rl.max_staleness=1` steps overlap: while step t trains, step t+1's rollouts are drawn (by
policy t, one update behind) and judged in a background thread, and each actor's groups go to the
judge as soon as that actor finishes, not when the whole batch has; the engines finish before the
sync changes their weights. Every sample carries its version; a step refuses samples older than the
bound; the PPO ratio is taken against the sampler's log-probs (`rl.rows.behaviour_logprobs`); and a
checkpoint keeps the batch drawn ahead (`ahead.pkl`), so a resumed run trains on it instead of
drawing it again.

Reference log-probs come from a frozen copy of the starting (SFT) weights kept on every learner rank
(`DeepSpeedLearner.logprobs(rows, reference=True)`): no extra actor or transfer, at the price of one
more model copy per rank, not sharded under ZeRO-3. With `pools.reference` set, a reference group of
its own computes them instead: frozen DeepSpeed ranks, sharded with ZeRO-3 (`reference_options`).
Old log-probs are the sampler's own (the behaviour policy's), except with several updates per
on-policy step, where the learner's own are used: recomputed for the later updates' rows, taken from
the first update's own pass for its rows; that pass logs how far the learner's are from the sampler's as
the train/inference mismatch.

Writes:
    <run.dir>/checkpoints/rl/         Hugging Face folder, `train_report.json`, then `_SUCCESS`
    <run.dir>/checkpoints/rl_best/    with rl.select=best: the best checkpoint on the validation set so far
                                      (`selection.json`); checkpoints/rl is a copy of it at the end
    <run.dir>/checkpoints/rl_state/   DeepSpeed checkpoints `step{N}` + `latest` (resume points)
    <run.dir>/checkpoints/rl_members/ with rl.members > 1: each member's export and checkpoints; checkpoints/rl
                                      is their mean (`rayda.rl.members`)
    <run.dir>/checkpoints/rl_sync/    with rl.sync=files: the current weight snapshot the engines load
    <run.dir>/metrics.jsonl           one line per step, {"stage": "rl", ...}; also Ray dashboard gauges
    <run.dir>/rl_samples.jsonl        a few completions per step, to read what the policy writes
"""

from __future__ import annotations

import pickle
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from rayda import tracking
from rayda.config import Recipe
from rayda.io import atomic_path, atomic_write_json, is_done, mark_success, prune_steps

STAGE = "rl"


@dataclass(frozen=True)
class Plan:
    """Everything the run needs, resolved and checked before any actor starts."""

    sft_path: str
    spec: object
    prompts: list
    spec_texts: dict
    judge_model: str | None
    updates_per_step: int
    watch: dict
    """`rl.eval_every`'s fixed prompt samples: {"train": [Prompt], "heldout": [Prompt]} (labelled only),
    and with `rl.select=best` "valid": the validation sample the exported checkpoint is chosen on."""
    ctx: object = None
    """The resolved run (`rayda.context.RunContext`)."""


def paths(recipe: Recipe) -> dict[str, Path]:
    run = Path(recipe.run.dir)
    return {
        "sft": run / "checkpoints" / "sft",
        "out": run / "checkpoints" / "rl",
        "best": run / "checkpoints" / "rl_best",
        "state": run / "checkpoints" / "rl_state",
        "sync": Path(recipe.rl.sync_dir) if recipe.rl.sync_dir else run / "checkpoints" / "rl_sync",
        "metrics": run / "metrics.jsonl",
        "samples": run / "rl_samples.jsonl",
    }


def prepare(recipe: Recipe, watch_seed: int | None = None) -> Plan:
    """Fail on bad input here, before Ray starts: no SFT checkpoint, bad sizes, prompts, judge.
    `watch_seed` draws `rl.eval_every`'s samples (default `run.seed`; `rl.members` pass the run's, so
    every member is watched on the same prompts)."""
    from rayda.check import require_sizes
    from rayda.context import RunContext

    c, p = recipe.rl, paths(recipe)
    if c.init == "sft" and not is_done(p["sft"]):
        raise FileNotFoundError(f"RL starts from the SFT checkpoint {p['sft']}, which is not finished "
                                "(no _SUCCESS): run `rayda sft` first")
    require_sizes(recipe, "model", "judge", "rl")
    per_update = c.micro_batch_size * c.grad_accum * recipe.pools.learner.actors
    ctx = RunContext(recipe)
    ctx.check_judge()
    if recipe.reward.kind == "pm":
        ctx.pm_model()  # the preference model must be finished
    prompts = ctx.prompts(c.prompts)
    # rl.init: the run's SFT checkpoint (DA), the base policy (the RL-only ablation) or any model.
    sft_path = str(p["sft"].resolve()) if c.init == "sft" else ctx.policy if c.init == "base" else ctx.model(c.init, "rl.init")
    spec_texts = ctx.spec_texts({q.category for q in prompts}, sft_path)
    watch = _watch_prompts(ctx, prompts, recipe.run.seed if watch_seed is None else watch_seed) if c.eval_every else {}
    return Plan(sft_path, ctx.spec, prompts, spec_texts, ctx.judge_model, c.prompts_per_step * c.samples_per_prompt // per_update, watch, ctx)


def _watch_prompts(ctx, prompts: list, seed: int) -> dict:
    """The fixed samples `rl.eval_every` measures: training prompts, and labelled in-spec `eval.prompts`."""
    from rayda.rl.select import validation_sample
    from rayda.rl.watch import fixed_sample
    from rayda.stages.evaluate import load_eval_prompts

    recipe, spec = ctx.recipe, ctx.spec
    n, source = recipe.rl.eval_prompts, recipe.eval.prompts
    heldout = [it.prompt for it in load_eval_prompts(ctx, source)
               if it.prompt.label and it.prompt.category in set(spec.category_ids)]
    watch = {"train": fixed_sample(prompts, n, seed), "heldout": fixed_sample(heldout, n, seed)}
    if recipe.rl.select == "best":
        watch["valid"] = validation_sample(recipe.rl, spec, prompts, seed)
    return watch


def step_prompts(prompts: list, step: int, c, seed: int) -> list:
    """The prompts RL step `step` draws (`prompts_per_step x oversample`): a seeded stream that a resumed
    run replays exactly, stratified by (category, label) when `rl.stratify`."""
    from rayda.data.sft import batch_indices

    strata = [f"{q.category}/{q.label}" for q in prompts] if c.stratify else None
    return [prompts[i] for i in batch_indices(len(prompts), step, c.prompts_per_step * c.oversample, seed, strata)]


def learner_options(recipe: Recipe, plan: Plan, pad_id: int):
    from rayda.engines.deepspeed_engine import LearnerOptions

    c = recipe.rl
    return LearnerOptions(
        zero_stage=c.zero_stage, micro_batch_size=c.micro_batch_size, grad_accum=c.grad_accum, lr=c.lr,
        min_lr_ratio=1.0, warmup_steps=c.warmup_steps, total_steps=c.steps * plan.updates_per_step,
        weight_decay=0.0, grad_clip=c.grad_clip, dtype=recipe.model.dtype, seed=recipe.run.seed, pad_id=pad_id,
        lora=c.lora if c.lora.rank else None, verbose=recipe.run.verbose,
    )


def reference_options(recipe: Recipe, plan: Plan, pad_id: int):
    """The reference group's ranks: the learner's options, sharded (ZeRO-3) and never stepped."""
    from dataclasses import replace

    return replace(learner_options(recipe, plan, pad_id), zero_stage=3, grad_accum=1, lora=None)


def engine_config(recipe: Recipe, plan: Plan):
    """The rollout engines run in the learner's dtype: vLLM's own `auto` on CPU differs from the
    learner's fp32 (measured: 4e-3 nats on the probe at version 0, against 5e-7 with both in fp32).
    They return the log-probs of the distribution they sample (after temperature), which the learner
    recomputes as softmax(logits / T), so the train/inference mismatch figure compares like with like.
    Each engine resolves `auto` in its own process with the learner's rule (`learner_dtype`)."""
    from rayda.engines.vllm_engine import EngineConfig

    c = recipe.rl
    return EngineConfig(model=plan.sft_path, seed=recipe.run.seed, dtype=recipe.model.dtype, learner_dtype=True,
                        max_model_len=c.max_model_len,
                        gpu_memory_utilization=c.gpu_memory_utilization, enforce_eager=c.enforce_eager, weight_sync=True,
                        lora_rank=c.lora.rank,
                        extra={"logprobs_mode": "processed_logprobs"}, verbose=recipe.run.verbose)


class Timer:
    """Seconds per phase of a step (generate / judge / train / sync)."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str):
        t0 = time.perf_counter()
        yield
        self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0


def run(recipe: Recipe, *, progress: bool = True, on_step=None, on_rollout=None, judge_cls=None) -> Path:
    """Train and export; returns the Hugging Face folder. With `rl.members` > 1 the members train in
    turn and the export is their mean (`rayda.rl.members`).

    `on_step(step, record)` runs after each step (tests stop a run there, as a kill would);
    `on_rollout(step, attempt, pool)` runs while a step's rollouts are in flight (tests kill an actor
    there); `judge_cls` replaces `actors.judge.JudgeWorker` (tests instrument it).
    """
    hooks = dict(progress=progress, on_step=on_step, on_rollout=on_rollout, judge_cls=judge_cls)
    if recipe.rl.members > 1 and not is_done(paths(recipe)["out"]):
        from rayda.rl.members import run_members

        # The members are watched on the run's samples; before their first step they all hold the start's
        # weights, so the first member's measurement there is every member's ("record"). They train on the
        # actors the first one started ("actors", `rayda.rl.actors`).
        shared: dict = {}
        try:
            return run_members(recipe, paths(recipe), lambda r, p, tag: _train(
                r, p, tag, watch_seed=recipe.run.seed, shared=shared, **hooks))
        finally:
            if shared.get("actors") is not None:
                shared["actors"].shutdown()
    return _train(recipe, paths(recipe), "", **hooks)


def _train(recipe: Recipe, p: dict, tag: str, *, progress: bool, on_step, on_rollout, judge_cls,
           watch_seed: int | None = None, shared: dict | None = None) -> Path:
    """One RL run into the folders `p`, its metrics logged as stage `rl{tag}` (and `rl_eval{tag}`).
    `shared`: what the members of one `rl.members` run share in this process: the watch before step 1
    ("record", measured by the first member, taken by the others) and the actors ("actors": started by the
    first member, restarted for each later one and left running; the caller shuts them down)."""
    import torch
    from tqdm import tqdm
    from transformers import AutoTokenizer

    from rayda.algo.grpo import group_advantages, group_signal, informative_groups, label_weighted
    from rayda.behaviour import classify
    from rayda.data.gen_rows import stable_seed
    from rayda.judges.base import min_of_k
    from rayda.reasoning import THINK_CLOSE
    from rayda.rl import rewards as R
    from rayda.rl.actors import RLActors
    from rayda.rl.report import Dashboard
    from rayda.rl.rows import behaviour_logprobs, old_logprobs, policy_row, with_logprobs
    from rayda.rl.select import export, keep_if_best, selected
    from rayda.rl.sync import learner_logprobs, probe_example, sync
    from rayda.rl.watch import learner_stats
    from rayda.types import Completion

    c, seed = recipe.rl, recipe.run.seed
    if is_done(p["out"]):
        print(f"rl: {p['out']} is complete (_SUCCESS); skipping")
        return p["out"]
    plan = prepare(recipe, watch_seed)
    tokenizer = AutoTokenizer.from_pretrained(plan.sft_path)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    opts = learner_options(recipe, plan, pad_id or 0)
    def chat_ids(q) -> list[int]:
        return list(tokenizer.apply_chat_template(list(q.messages), tokenize=True, add_generation_prompt=True, return_dict=False))

    prompt_ids = {q.id: chat_ids(q) for q in plan.prompts}
    close_ids = tokenizer.encode(THINK_CLOSE, add_special_tokens=False)  # where the reasoning ends (rl.kl_reasoning)
    # Kept apart from prompt_ids: a held-out file may reuse a training file's ids.
    watch_ids = {name: [chat_ids(q) for q in qs] for name, qs in plan.watch.items()}
    probe_row = probe_example(tokenizer)
    of_drawn = f" (the most informative of {c.prompts_per_step * c.oversample} drawn)" if c.oversample > 1 else ""
    print(f"rl: {len(plan.prompts)} prompts, {c.steps} steps of {c.prompts_per_step}{of_drawn} x {c.samples_per_prompt} samples "
          f"({plan.updates_per_step} update(s) each) from {plan.sft_path}")

    actors = shared.get("actors") if shared is not None else None
    if actors is None:
        actors = RLActors(recipe, plan, opts, p["sync"], judge_cls)
        if shared is not None:
            shared["actors"] = actors
    else:  # a later member of rl.members: the first one's actors, back at the start
        actors.restart(opts, probe_row, c.probe_tolerance)
    rollout, judges, reference, learners = actors.rollout, actors.judges, actors.reference, actors.learners
    dashboard, ahead_pool = Dashboard(), None
    try:
        resumed = learners.run_all("load_checkpoint", str(p["state"]))[0]
        start = resumed["step"] if resumed else 0
        # Version 0 is the SFT weights the engines loaded; a resumed run first publishes its own.
        first = sync(learners, rollout, start, probe_row, c.probe_tolerance) if start else None
        if not start:
            rollout.check(_probe(learners, probe_row, 0, c.probe_tolerance))
        if c.eval_every and not start:
            _first_watch(rollout, plan, watch_ids, p["metrics"], dashboard, c, tag, shared)
        if not start:  # a choice left by an earlier run in this folder is not this run's
            shutil.rmtree(p["best"], ignore_errors=True)
        best = selected(p["best"]) if c.select == "best" else None

        def produce(step: int) -> dict:
            """Steps 1-3 for `step`: rollouts (no spec), stamped with the policy version that drew
            them, each actor's groups judged as soon as that actor is done (the judge sees
            RewardRequest.of(completion): no cot; malformed -> penalty)."""
            pt, n = Timer(), c.samples_per_prompt
            batch = step_prompts(plan.prompts, step, c, seed)
            completions: list = [None] * (len(batch) * n)
            judging: list = []

            def judge_shard(indices: list[int], results: list) -> None:
                at = indices[0] * n
                shard = [Completion.from_text(batch[i], s.text, v, token_ids=s.token_ids, logprobs=s.logprobs)
                         for i, (v, samples) in zip(indices, results) for s in samples]
                completions[at:at + len(shard)] = shard
                requests, owners = R.reward_requests(shard)
                owners = [at + o for o in owners]
                seeds = [stable_seed(seed, "rl-judge", step, completions[i].prompt.id, i) for i in owners]
                judging.append((owners, judges.submit(requests, seeds)))

            with pt("generate"):
                _, retries = rollout.generate(
                    [prompt_ids[q.id] for q in batch], [stable_seed(seed, "rl", step, q.id) for q in batch],
                    on_submit=(lambda attempt, pool: on_rollout(step, attempt, pool)) if on_rollout else None,
                    on_shard=judge_shard, n=n, temperature=c.temperature, top_p=c.top_p, max_tokens=c.max_tokens)
            with pt("judge"):  # what is left of the judging once the last group is sampled
                owners = [o for os, _ in judging for o in os]
                verdicts = [min_of_k(v) for _, submitted in judging for v in judges.collect(submitted)]
                scored = R.assemble(completions, verdicts, owners, c.format_penalty)
            return {"step": step, "batch": batch, "completions": completions, "scored": scored, "retries": retries,
                    "seconds": pt.seconds}

        # rl.max_staleness = 1: the next step's rollouts and judging run in the background while this
        # step trains (sampled by the policy one update behind); the engines finish them before
        # their weights change. A checkpoint keeps them, so a resumed run neither redoes nor loses them.
        ahead_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rl-ahead") if c.max_staleness else None
        pending = load_ahead(p["state"], start) if start and c.max_staleness else None
        bar = tqdm(total=c.steps, initial=start, desc="rl", disable=not progress)
        for step in range(start, c.steps):
            t, version = Timer(), rollout.version
            t_step = time.perf_counter()
            current = pending if pending is not None else produce(step)
            ahead = ahead_pool.submit(produce, step + 1) if ahead_pool and step + 1 < c.steps else None
            batch, completions, scored, retries = (current[k] for k in ("batch", "completions", "scored", "retries"))
            t.seconds.update(current["seconds"])  # generate, judge: measured where they ran
            stale = version - min(x.policy_version for x in completions)
            if stale > c.max_staleness:
                raise RuntimeError(f"rl: step {step + 1} would train on samples {stale} versions old (rl.max_staleness={c.max_staleness})")

            # 4. GRPO: group-relative advantages, old and reference log-probs, clipped updates
            with t("train"):
                shape = (len(batch), c.samples_per_prompt)
                rewards = torch.tensor([s.reward for s in scored]).view(shape)
                valid = torch.tensor([s.valid for s in scored], dtype=torch.float32).view(shape)
                # Dynamic sampling: of the drawn groups, train on prompts_per_step, those with signal first.
                groups = informative_groups(rewards, valid, c.prompts_per_step)
                advantages = label_weighted(group_advantages(rewards[groups], valid[groups], scale=c.adv_scale),
                                            [batch[g].label for g in groups], c.label_weights).flatten().tolist()
                picked = [g * c.samples_per_prompt + i for g in groups for i in range(c.samples_per_prompt)]
                trained, trained_scores = [completions[i] for i in picked], [scored[i] for i in picked]
                rows = [policy_row(prompt_ids[x.prompt.id], x.token_ids, x.prompt.id, s.valid, c.kl_reasoning, close_ids) for x, s in zip(trained, trained_scores)]
                # Old log-probs: the sampler's, or with several updates on fresh samples the learner's own
                # (`old_logprobs`: the first update's from its own pass, the later ones' recomputed now).
                # The first update's pass measures the train/inference mismatch against the sampler's.
                old, own = old_logprobs(rows, [behaviour_logprobs(len(prompt_ids[x.prompt.id]), x.logprobs) for x in trained],
                                        plan.updates_per_step, not c.max_staleness,
                                        lambda part: learner_logprobs(learners, part, temperature=c.temperature))
                # The sampled tokens' reference log-probs, for the k1/k2/k3 estimators; `full` takes the
                # reference's whole distribution in the training pass, so this pass would go unused.
                ref = (None if c.kl_kind == "full" else
                       learner_logprobs(reference, rows, temperature=c.temperature) if reference else
                       learner_logprobs(learners, rows, reference=True, temperature=c.temperature))
                rows, size = with_logprobs(rows, advantages, old, ref), len(rows) // plan.updates_per_step
                updates = [learners.run_sharded(
                    "train_step", rows[u * size:(u + 1) * size], "grpo", clip=c.clip, clip_high=c.clip_high, kl_coef=c.kl_coef,
                    kl_kind=c.kl_kind, temperature=c.temperature, old_is_current=own[u])
                    for u in range(plan.updates_per_step)]
                parts = [r for update in updates for r in update]

            if ahead is not None:
                with t("wait"):  # the next batch finishes on the old weights before they change
                    pending = ahead.result()
            else:
                pending = None

            # 5. weight sync v -> v + 1, verified by the probe every probe_every syncs
            with t("sync"):
                probe = probe_row if (step + 1) % c.probe_every == 0 else None
                synced = sync(learners, rollout, version + 1, probe, c.probe_tolerance)

            signal = group_signal(rewards, valid)
            record = {"stage": STAGE + tag, "step": step + 1, "policy_version": version + 1,
                      "sampled_versions": sorted({x.policy_version for x in completions}), "staleness": stale,
                      "prompts": [q.id for q in batch], "rollout_retries": retries,
                      "rollout_resyncs": rollout.restarts_seen,
                      **R.step_stats(completions, scored, plan.spec, classify),
                      "groups_with_signal": sum(signal), "groups_trained": len(groups),
                      "by_label": R.label_stats([q.label for q in batch], rewards, valid, signal),
                      **learner_stats(parts, rows, trained, prompt_ids, c.kl_kind, updates[0]),
                      "tokens_generated": sum(len(x.token_ids) for x in completions),  # `rayda compare`'s cost
                      "learner_tokens": int(sum(r["tokens"] for r in parts)),
                      "sync_bytes": synced["bytes"], "probe_max_diff": synced.get("probe_max_diff"),
                      "sync": rollout.transport.kind, "sync_seconds": {k: round(v, 4) for k, v in synced.items() if k.endswith("_s")},
                      "seconds": {k: round(v, 4) for k, v in t.seconds.items()}}
            record["seconds"]["step"] = round(time.perf_counter() - t_step, 4)
            tracking.log(recipe.run.dir, record)
            for x, s in list(zip(completions, scored))[: c.log_samples]:
                tracking.append_jsonl(p["samples"], {"stage": STAGE + tag, "step": step + 1, "prompt": x.prompt.id,
                                                     "version": x.policy_version, "cot": x.cot, "answer": x.answer,
                                                     "malformed": x.malformed, "reward": s.reward, "judge_error": s.error})
            dashboard.publish(record)
            bar.update(1)
            bar.set_postfix(reward=f"{record['reward_mean']:.2f}", acc=f"{record['behaviour_accuracy']:.2f}", kl=f"{record['kl']:.3f}")

            done = step + 1
            if c.eval_every and (done % c.eval_every == 0 or done == c.steps):
                watched = _watch(rollout, plan, watch_ids, p["metrics"], dashboard, done, c, done == c.steps, tag)
                if c.select == "best":
                    best = keep_if_best(learners, p["best"], watched, best)
            if c.save_every and done % c.save_every == 0 and done < c.steps:
                save_ahead(p["state"], done, pending)  # first: DeepSpeed's `latest` names the tag last
                learners.run_all("save_checkpoint", str(p["state"]), f"step{done}", {"step": done})
                prune_steps(p["state"], c.keep_checkpoints)
            if on_step is not None:
                on_step(done, record)
        bar.close()
        with atomic_path(p["out"]) as tmp:
            export(learners, tmp, p["best"], best, c.merge, plan.sft_path)
            report = {"steps": c.steps, "resumed_from": start, "model": plan.sft_path, "ranks": learners.world_size,
                      "policy_version": rollout.version, "first_sync": first, "selected": best, "merge": c.merge}
            atomic_write_json(tmp / "train_report.json", report)
    finally:
        if ahead_pool is not None:
            ahead_pool.shutdown(wait=True, cancel_futures=True)
        tracking.close(recipe.run.dir)
        if shared is None:
            actors.shutdown()
    mark_success(p["out"], {"stage": STAGE, **report})
    return p["out"]


def _probe(learners, probe_row, version: int, tolerance: float):
    from rayda.rl.sync import Probe, learner_logprobs

    return Probe(tuple(probe_row.input_ids), tuple(learner_logprobs(learners, [probe_row])[0]), version, tolerance)


def _watch(rollout, plan: Plan, watch_ids: dict, metrics_path: Path, dashboard, step: int, c, sampled: bool,
           tag: str = "") -> dict:
    """Greedy answers to the fixed training and held-out samples (no spec), through the rollout pool:
    one `{"stage": "rl_eval", "step", "train": figures, "heldout": figures}` line in metrics.jsonl.
    With `sampled` (before the first step and after the last) also `train_sampled`: the training
    sample answered `rl.samples_per_prompt` times at `rl.temperature` with fixed seeds, the quantity RL
    optimises, measured on enough samples that its change is not one prompt's luck."""
    from rayda.behaviour import classify
    from rayda.data.gen_rows import stable_seed
    from rayda.rl.watch import behaviour_figures
    from rayda.types import Completion

    record = {"stage": "rl_eval" + tag, "step": step, "policy_version": rollout.version}
    runs = [(name, name, dict(n=1, temperature=0.0)) for name in plan.watch]
    if sampled and "train" in plan.watch:
        runs.append(("train_sampled", "train", dict(n=c.samples_per_prompt, temperature=c.temperature)))
    for name, split, sampling in runs:
        prompts = plan.watch[split]
        if not prompts:
            continue
        seeds = [stable_seed(0, "rl-watch", q.id) for q in prompts]
        outs, _ = rollout.generate(watch_ids[split], seeds, max_tokens=c.max_tokens, **sampling)
        completions = [Completion.from_text(q, s.text) for q, (_, samples) in zip(prompts, outs) for s in samples]
        record[name] = {**behaviour_figures(completions, plan.spec, classify), "n": len(completions)}
    tracking.log(metrics_path.parent, record)  # metrics_path is <run.dir>/metrics.jsonl
    dashboard.publish(record)
    return record


def _first_watch(rollout, plan: Plan, watch_ids: dict, metrics_path: Path, dashboard, c, tag: str,
                 kept: dict | None) -> None:
    """The watch before step 1: measured, or, for a member after the first, the first member's record
    under this member's stage name (the same start weights, prompts and sampling seeds: the same answers)."""
    if kept is not None and "record" in kept:
        record = {**kept["record"], "stage": "rl_eval" + tag, "from_stage": kept["record"]["stage"]}
        tracking.log(metrics_path.parent, record)
        dashboard.publish(record)
        return
    record = _watch(rollout, plan, watch_ids, metrics_path, dashboard, 0, c, True, tag)
    if kept is not None:
        kept["record"] = record


def save_ahead(state_dir: Path, done: int, ahead: dict | None) -> None:
    """Keep the next step's samples and rewards (drawn ahead, `rl.max_staleness`) with checkpoint `done`."""
    if ahead is not None:
        with atomic_path(Path(state_dir) / f"step{done}" / "ahead.pkl") as tmp:
            tmp.write_bytes(pickle.dumps(ahead))


def load_ahead(state_dir: Path, step: int) -> dict | None:
    """The samples of `step` drawn before the run stopped (None if none were kept)."""
    path = Path(state_dir) / f"step{step}" / "ahead.pkl"
    if not path.exists():
        return None
    ahead = pickle.loads(path.read_bytes())
    if ahead["step"] != step:
        raise RuntimeError(f"{path} holds the samples of step {ahead['step']}, not of step {step}")
    return ahead
