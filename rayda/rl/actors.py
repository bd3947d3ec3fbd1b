"""The RL stage's actors, started together and, with `rl.members`, kept for every member.

    rollout    RolloutPool: the vLLM engines (`actors.rollout.Generator`), with the weight transport
    judges     JudgePool: REWARD-view judges
    reference  ActorGroup of frozen learner ranks (`pools.reference`), or None: the learners keep a copy
    learners   ActorGroup of DeepSpeed ranks (`actors.learner.Learner`)

Starting them is most of a run's fixed cost (about 20 s on 2 CPU cores: vLLM's import and engine, DeepSpeed's
setup, the weight group). A later member of `rl.members` starts none of them again: its learner ranks go back
to the start weights with a new optimizer and the member's seed (`restart`), and the engines receive those
weights as policy version 0 through the transport they already have. A member trained so is the one fresh
actors would train, bit for bit (`tests/test_rl_stage.py`).
"""

from __future__ import annotations

from pathlib import Path


class RLActors:
    def __init__(self, recipe, plan, opts, sync_dir: Path, judge_cls=None):
        from rayda.actors.group import ActorGroup
        from rayda.actors.judge import JudgeWorker
        from rayda.actors.learner import Learner
        from rayda.actors.rollout import Generator
        from rayda.placement import plan as plan_pools
        from rayda.ray_utils import init_ray
        from rayda.rl.pools import JudgePool, RolloutPool
        from rayda.rl.sync import transport
        from rayda.stages.rl import engine_config, reference_options

        c = recipe.rl
        plan_pools(recipe.pools.named(), init_ray(recipe.run).cluster_resources())  # every pool at once: fails before any actor starts
        # The rollout engines start (about 10-20 s on CPU: vLLM's import, then the engine) while the learner group sets up.
        self.rollout = RolloutPool(Generator, engine_config(recipe, plan), recipe.pools.rollout, "rollout",
                                   c.rollout_restarts, c.rollout_retries)
        self.judges = JudgePool(judge_cls or JudgeWorker, recipe.pools.judge, plan.ctx.reward_args(plan.spec_texts))
        self.reference = self.learners = None
        try:
            if recipe.pools.reference is not None:  # else the reference lives on the learner ranks
                self.reference = ActorGroup(Learner, recipe.pools.reference, "reference",
                                            setup_args=(plan.sft_path, reference_options(recipe, plan, opts.pad_id), True))
            self.learners = ActorGroup(Learner, recipe.pools.learner, "learner", setup_args=(plan.sft_path, opts))
            self.rollout.wait_ready()
            self.rollout.attach(transport(c.sync, self.learners, sync_dir, c.sync_bucket_mb << 20, c.sync_timeout_s,
                                          lora=c.lora.rank > 0))
        except BaseException:
            self.shutdown()
            raise

    def restart(self, opts, probe_row, tolerance: float) -> dict:
        """The next member: the learner ranks back to the start weights (a new optimizer, `opts.seed`), and
        those weights published to the engines as version 0, verified by the probe."""
        from rayda.rl.sync import sync

        self.learners.run_all("restart", opts)
        self.rollout.restarts_seen = 0
        return sync(self.learners, self.rollout, 0, probe_row, tolerance)

    def shutdown(self) -> None:
        """Every actor stopped and its resources released (safe to call twice)."""
        if self.rollout.transport is not None:
            self.rollout.transport.close()  # the export supersedes the last snapshot
        for group in (self.learners, self.reference):
            if group is not None:
                group.shutdown()
        self.rollout.shutdown()
        self.judges.shutdown()
