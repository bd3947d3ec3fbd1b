"""The RL driver end to end on a small model: the judge never sees a chain of thought (contract 1), a
rollout actor killed mid-step is restarted and rejoins the weight group without touching the learner,
and a stopped run resumes at the next step with the same data order. The run syncs over the
collective (the default) and takes its reference log-probs from a reference group.

The policy is the tiny world's base checkpoint on the tiny world's training prompts: a trained model
whose own samples, well-formed or not, are what the judge and the learner see.
"""

from __future__ import annotations

import json
import shutil

import pytest

from rayda.rl.merge import merge_folder

pytestmark = [pytest.mark.ray, pytest.mark.slow]

WINDOW = 16
"""A judge input may not contain any WINDOW-character piece of a chain of thought, unless that piece
also occurs in what the judge is meant to see (the prompt, the answer, the spec text)."""


@pytest.fixture(scope="module")
def policy(tiny_world):
    """The tiny world's base checkpoint (built once, cached by content hash): a trained model whose
    samples are mostly well-formed, so real completions reach the judge."""
    return tiny_world.model_dir


def prompts_file(world, path, n: int = 8):
    """`n` evenly spaced training prompts of the tiny world, so every category is asked."""
    rows = world.prompts("train")
    rows = rows[:: len(rows) // n][:n]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def new_run(policy, world, run_dir, steps: int = 3, extra=()):
    import shutil

    from rayda.config import load_recipe
    from rayda.io import mark_success

    shutil.copytree(policy, run_dir / "checkpoints" / "sft")
    mark_success(run_dir / "checkpoints" / "sft")
    prompts = prompts_file(world, run_dir / "prompts.jsonl")
    return load_recipe("tiny", [
        f"run.dir={run_dir}", f"prompts.source={prompts}", f"eval.prompts={prompts}", "spec.token_budget=null",
        "rl.prompts=null",  # RL on `prompts.source` (the tiny recipe's RL draws from tinyworld:rl)
        f"rl.steps={steps}", "rl.prompts_per_step=4", "rl.samples_per_prompt=4", "rl.micro_batch_size=8", "rl.grad_accum=2",
        "rl.max_tokens=96", "rl.save_every=1", "rl.max_model_len=256", "rl.gpu_memory_utilization=0.1", "rl.lr=1e-3",
        "rl.members=1", *extra])


def recording_judge(log_path):
    """A JudgeWorker that appends everything it is given (the requests and the chat it builds from
    each) to a file; defined here so Ray ships the class by value."""
    from rayda.actors.judge import JudgeWorker
    from rayda import templates

    class RecordingJudge(JudgeWorker):
        def reward(self, requests, seeds):
            with open(log_path, "a") as f:
                for r in requests:
                    chat = self.judge.messages(templates.REWARD, r)
                    f.write(json.dumps({"request": repr(r), "chat": chat, "fields": sorted(vars(r))}) + "\n")
            return super().reward(requests, seeds)

    return RecordingJudge


def leaked_pieces(cot: str, seen: str, allowed: str) -> list[str]:
    pieces = {cot[i:i + WINDOW] for i in range(max(len(cot) - WINDOW + 1, 0))} or {cot}
    return sorted(x for x in pieces if x.strip() and x in seen and x not in allowed)


class Stop(Exception):
    """Raised from on_step: the run stops as if killed after a step."""


@pytest.fixture(scope="module")
def interrupted_run(ray_local, tiny_world, policy, tmp_path_factory):
    """One RL run of 3 steps, checkpointed every step, with every judge input recorded: in its second
    step the rollout actor is killed while sampling; after that step the run stops (as if killed);
    a second `run` resumes it and finishes."""
    import ray

    from rayda.stages.rl import run

    root = tmp_path_factory.mktemp("rl-run")
    # With a reference group of its own (pools.reference; the sampled-token KL, since the exact one needs
    # the reference on the learner): the first step's KL of 0 shows that it holds the SFT weights.
    # rl.select=best, measured after every step: the export is the checkpoint chosen on 8 validation
    # prompts among steps 1 and 2 (first run) and 3 (the resumed one).
    recipe = new_run(policy, tiny_world, root, steps=3, extra=["rl.log_samples=1000", "pools.reference.actors=1", "rl.kl_kind=k3",
                                                               "rl.eval_every=1", "rl.select=best",
                                                               "rl.select_prompts=tinyworld:valid", "rl.select_n=8"])
    judge = recording_judge(str(root / "judge_inputs.jsonl"))
    killed = []

    def kill_mid_step(step, attempt, pool):
        if step == 1 and attempt == 0:  # the second step, while its rollouts are in flight
            ray.kill(pool.actors[0], no_restart=False)
            killed.append(step)

    def stop_after_two(step, record):
        if step == 2:
            raise Stop

    with pytest.raises(Stop):
        run(recipe, progress=False, on_rollout=kill_mid_step, on_step=stop_after_two, judge_cls=judge)
    assert killed == [1]
    out = run(recipe, progress=False, judge_cls=judge)  # resumes at step 3
    lines = lambda name: [json.loads(x) for x in (root / name).read_text().splitlines()]  # noqa: E731
    metrics = [m for m in lines("metrics.jsonl") if m["stage"] == "rl"]  # the rl_eval lines are checked apart
    print(json.dumps([{k: m[k] for k in ("step", "rollout_retries", "rollout_resyncs", "probe_max_diff",
                                         "logprob_mismatch_max", "reward_mean", "kl")} for m in metrics]))
    return {"root": root, "recipe": recipe, "out": out, "metrics": metrics, "samples": lines("rl_samples.jsonl"),
            "watch": [m for m in lines("metrics.jsonl") if m["stage"] == "rl_eval"],
            "judge_inputs": lines("judge_inputs.jsonl")}


def test_judge_never_sees_a_chain_of_thought(interrupted_run):
    inputs, samples = interrupted_run["judge_inputs"], interrupted_run["samples"]
    cots = [s["cot"] for s in samples if s["malformed"] is None]
    print(f"{len(cots)} well-formed of {len(samples)} completions, {len(inputs)} judge inputs")
    assert len(inputs) == len(cots) >= 16, "too few well-formed samples reached the judge to prove anything"
    assert all(i["fields"] == ["answer", "prompt"] for i in inputs)
    # What the judge was given, and what it may legitimately contain: its own instructions and the
    # spec (system turn), the prompts and the final answers.
    seen = "\n".join([m["content"] for i in inputs for m in i["chat"] if m["role"] != "system"] + [i["request"] for i in inputs])
    allowed = "\n".join([m["content"] for i in inputs for m in i["chat"] if m["role"] == "system"]
                        + [s["answer"] for s in samples] + (interrupted_run["root"] / "prompts.jsonl").read_text().splitlines())
    for cot in cots:
        assert cot.strip() and cot not in seen
        pieces = leaked_pieces(cot, seen, allowed)
        assert not pieces, f"chain-of-thought text reached the judge: {pieces[:3]}"


def test_killed_rollout_actor_is_restarted_and_resynced(interrupted_run):
    import torch

    crashed = interrupted_run["metrics"][1]
    assert crashed["rollout_retries"] == 1 and crashed["rollout_resyncs"] == 1 and crashed["sampled_versions"] == [1]
    # The restarted engine sampled with the learner's weights: its log-probs match the learner's.
    assert crashed["logprob_mismatch_max"] < 1e-3 and crashed["probe_max_diff"] <= 1e-3
    # One update per step: the failed attempt never reached the learner.
    state = interrupted_run["root"] / "checkpoints" / "rl_state" / "step2" / "mp_rank_00_model_states.pt"
    assert torch.load(state, weights_only=False, map_location="cpu")["global_steps"] == 2


def test_resumed_run_keeps_the_data_order_and_versions(interrupted_run):
    from rayda.data.sft import batch_indices

    metrics, root = interrupted_run["metrics"], interrupted_run["root"]
    assert [m["step"] for m in metrics] == [1, 2, 3] and all(m["stage"] == "rl" for m in metrics)
    assert [m["policy_version"] for m in metrics] == [1, 2, 3]
    assert [m["sampled_versions"] for m in metrics] == [[0], [1], [2]]
    ids = [q["id"] for q in map(json.loads, (root / "prompts.jsonl").read_text().splitlines())]
    c = interrupted_run["recipe"].rl
    drawn = c.prompts_per_step * c.oversample
    for m in metrics:  # the same data order as an uninterrupted run
        assert m["prompts"] == [ids[i] for i in batch_indices(len(ids), m["step"] - 1, drawn, interrupted_run["recipe"].run.seed)]
    report = json.loads((interrupted_run["out"] / "train_report.json").read_text())
    assert report["resumed_from"] == 2 and report["first_sync"]["probe_max_diff"] <= 1e-3


def test_metrics_and_export(interrupted_run):
    metrics, out = interrupted_run["metrics"], interrupted_run["out"]
    for m in metrics:
        assert m["probe_max_diff"] <= 1e-3 and m["logprob_mismatch_max"] < 1e-3
        assert set(m["seconds"]) == {"generate", "judge", "train", "sync", "step"}
        for key in ("reward_mean", "reward_std", "judge_pass_rate", "judge_error_rate", "behaviour_accuracy",
                    "behaviour_accuracy_by_category", "kl", "entropy", "response_tokens", "citation_rate"):
            assert key in m
    assert metrics[0]["kl"] == pytest.approx(0.0, abs=1e-6) and metrics[-1]["kl"] > 0  # the policy moved off the reference
    assert (out / "_SUCCESS").exists() and (out / "config.json").exists() and (out / "model.safetensors").exists()
    # rl.select=best: the first step with the highest validation accuracy, across the stop and resume;
    # the export holds its weights.
    best, watch = out.parent / "rl_best", interrupted_run["watch"]
    chosen = json.loads((best / "selection.json").read_text())
    top = max(w["valid"]["accuracy"] for w in watch if w["step"])
    assert chosen["step"] == next(w["step"] for w in watch if w["step"] and w["valid"]["accuracy"] == top)
    report = json.loads((out / "train_report.json").read_text())
    assert report["selected"] == chosen
    # the export is that checkpoint merged back towards the start by the recipe's rl.merge (tiny: 0.75)
    merged = interrupted_run["root"] / "best-merged"
    shutil.copytree(best, merged)
    assert report["merge"] == interrupted_run["recipe"].rl.merge == 0.75
    merge_folder(merged, report["model"], report["merge"])
    assert (out / "model.safetensors").read_bytes() == (merged / "model.safetensors").read_bytes()
    assert (out / "model.safetensors").read_bytes() != (best / "model.safetensors").read_bytes()
    print(f"validation accuracy by step: {[(w['step'], w['valid']['accuracy']) for w in watch]}; chosen {chosen}")
    # rl.eval_every=1: before the first step and after each (the last in the resumed run), greedy
    # figures on the fixed samples; before the first and after the last, also the sampled training
    # figure, 4 samples of each of the 8 prompts
    assert [w["step"] for w in watch] == [0, 1, 2, 3] and [w["policy_version"] for w in watch] == [0, 1, 2, 3]
    assert [w["step"] for w in watch if "train_sampled" in w] == [0, 3]
    for w in watch:
        assert w["train"]["n"] == w["heldout"]["n"] == w["valid"]["n"] == 8 and w.get("train_sampled", {"n": 32})["n"] == 32
        shares = sum(w["train"][f"share_{b}"] for b in ("refuse", "safe_complete", "comply")) + w["train"]["malformed"]
        assert shares == pytest.approx(1.0)


def test_overlapped_steps_train_one_version_behind_and_resume_without_redrawing(ray_local, tiny_world, policy, tmp_path):
    """rl.max_staleness=1: each step's rollouts and judging run while the previous step trains, so a
    step trains on samples one version old (its PPO ratio taken against them: `test_rl_parts`); a run
    stopped after step 2 resumes from the samples of step 3 that it had already drawn and judged,
    neither drawing them again nor losing them."""
    from rayda.stages.rl import run

    recipe = new_run(policy, tiny_world, tmp_path, steps=3, extra=["rl.log_samples=1000", "rl.max_staleness=1", "rl.eval_every=0"])
    judge = recording_judge(str(tmp_path / "judge_inputs.jsonl"))

    def stop_after_two(step, record):
        if step == 2:
            raise Stop

    with pytest.raises(Stop):
        run(recipe, progress=False, on_step=stop_after_two, judge_cls=judge)
    assert (tmp_path / "checkpoints" / "rl_state" / "step2" / "ahead.pkl").exists()
    run(recipe, progress=False, judge_cls=judge)
    metrics = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    metrics = [m for m in metrics if m["stage"] == "rl"]
    assert [m["step"] for m in metrics] == [1, 2, 3] and [m["policy_version"] for m in metrics] == [1, 2, 3]
    # step 1 samples with the starting weights; then each step's samples are one version behind
    assert [m["sampled_versions"] for m in metrics] == [[0], [0], [1]] and [m["staleness"] for m in metrics] == [0, 1, 1]
    assert all(m["probe_max_diff"] <= 1e-3 for m in metrics) and "wait" in metrics[0]["seconds"]
    assert metrics[0]["logprob_mismatch_max"] < 1e-3 < metrics[1]["logprob_mismatch_max"]  # the policy moved since sampling
    # every sample was judged exactly once, across the stop (a redrawn step 3 would be judged twice)
    samples = [json.loads(x) for x in (tmp_path / "rl_samples.jsonl").read_text().splitlines()]
    judged = (tmp_path / "judge_inputs.jsonl").read_text().splitlines()
    c = recipe.rl  # every drawn sample is logged and judged, the groups not trained on too (rl.oversample)
    assert len(samples) == 3 * c.prompts_per_step * c.oversample * c.samples_per_prompt
    assert len(judged) == sum(s["malformed"] is None for s in samples) > 0


def test_members_train_apart_resume_and_export_their_merged_mean(ray_local, tiny_world, policy, tmp_path, monkeypatch):
    """rl.members=2: two RL runs from the same start with different seeds, one after the other; the export
    is start + merge x (mean of the members - start), tensor by tensor. The members are watched on the
    same prompts: the second takes the first's watch before step 1 (the same weights) instead of
    measuring it again. The second trains on the actors the first started (`rayda.rl.actors`), and its
    weights are those of the same member trained again on new actors, stopped inside and resumed (the
    first is not trained again), bit for bit."""
    import torch
    from safetensors.torch import load_file

    from rayda.stages import rl

    recipe = new_run(policy, tiny_world, tmp_path, steps=2, extra=["rl.members=2", "rl.merge=0.5", "rl.eval_every=2", "rl.eval_prompts=4"])
    plans, prepare = [], rl.prepare  # each member's plan: its seed and the prompts it is watched on

    def recording_prepare(r, *args):
        plans.append((r.run.seed, prepare(r, *args)))
        return plans[-1][1]

    monkeypatch.setattr(rl, "prepare", recording_prepare)
    run = rl.run

    def stop_in_second_member(step, record):
        if record["stage"] == "rl_m1" and step == 1:
            raise Stop

    out = run(recipe, progress=False)
    metrics = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    watches = {(m["stage"], m["step"]): m for m in metrics if m["stage"].startswith("rl_eval")}
    steps = [m for m in metrics if not m["stage"].startswith("rl_eval")]
    assert [(m["stage"], m["step"]) for m in steps] == [("rl", 1), ("rl", 2), ("rl_m1", 1), ("rl_m1", 2)]
    assert steps[0]["prompts"] != steps[2]["prompts"]  # the second member draws with its own seed
    assert sorted(watches) == [("rl_eval", 0), ("rl_eval", 2), ("rl_eval_m1", 0), ("rl_eval_m1", 2)]
    first, copied = watches[("rl_eval", 0)], watches[("rl_eval_m1", 0)]
    assert copied["from_stage"] == "rl_eval" and copied["train_sampled"]["n"] > 0
    assert {k: v for k, v in copied.items() if k not in ("stage", "from_stage")} == {k: v for k, v in first.items() if k != "stage"}
    assert "from_stage" not in watches[("rl_eval_m1", 2)]  # measured, after the member's own steps
    assert len({seed for seed, _ in plans}) == 2  # the members train with their own seeds ...
    for name in ("train", "heldout"):  # ... and are watched on the same prompts
        assert len({tuple(q.id for q in plan.watch[name]) for _, plan in plans}) == 1, name
    samples = [json.loads(x) for x in (tmp_path / "rl_samples.jsonl").read_text().splitlines()]
    assert {s["stage"] for s in samples} == {"rl", "rl_m1"}
    members = tmp_path / "checkpoints" / "rl_members"
    a, b = (load_file(str(members / m / "model.safetensors")) for m in ("m0", "m1"))
    start, export = load_file(str(policy / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert any(not torch.equal(a[k], b[k]) for k in a)
    for k in export:
        expected = start[k].float() + 0.5 * ((a[k].float() + b[k].float()) / 2 - start[k].float())
        assert torch.allclose(export[k].float(), expected, atol=1e-6), k
    report = json.loads((out / "train_report.json").read_text())
    assert report["merge"] == 0.5 and len(report["members"]) == 2 and report["seeds"][0] == recipe.run.seed

    # The second member again, on actors of its own: stopped after its first step, then resumed.
    for name in ("m1", "m1_state"):
        shutil.rmtree(members / name)
    shutil.rmtree(out)
    with pytest.raises(Stop):
        run(recipe, progress=False, on_step=stop_in_second_member)
    again = run(recipe, progress=False)
    metrics = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()][len(metrics):]
    assert [(m["stage"], m["step"]) for m in metrics if not m["stage"].startswith("rl_eval")] == [("rl_m1", 1), ("rl_m1", 2)]
    fresh = load_file(str(members / "m1" / "model.safetensors"))
    assert all(torch.equal(fresh[k], b[k]) for k in b)
    again = load_file(str(again / "model.safetensors"))
    assert all(torch.equal(t, again[k]) for k, t in export.items())
