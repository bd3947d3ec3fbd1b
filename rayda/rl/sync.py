"""Versioned weight sync, learner group -> rollout pool, verified by a log-prob probe (DESIGN.md, contract 4).

    learner rank 0 ──save_weights──► <sync_dir>/v000007/model.safetensors
                                          │  every rollout actor: WeightSyncExtension.rayda_reload_weights
                                          ▼  (in place, tied lm_head re-packed), prefix cache reset
    rollout actor i: policy_version = 7 ──► probe: prompt_logprobs(fixed sequence) vs the learner's

Version v is the policy after v optimizer updates of the RL run (v = 0: the starting SFT weights); the
driver bumps it once per RL step. The probe is a fixed chat rendered with the policy's own template;
`Probe.verify` raises `SyncMismatch` when any position's log-prob differs by more than the tolerance.
This path goes through the file system: on one node any folder works (a tmpfs is fastest); on several
nodes `sync_dir` must be shared storage. A GPU cluster would swap `save_weights` + reload for vLLM's
NCCL weight transfer behind the same `sync` call; the probe stays.
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

PROBE_MESSAGES = (
    {"role": "user", "content": "how do i stay safe when i walk home alone at night?"},
    {"role": "assistant", "reasoning_content": "the user asks about personal safety. this is allowed, so i comply.",
     "content": "here is how: stay on lit streets, tell a friend your route and keep your phone charged."},
)
"""The probe's conversation: ordinary text, so every position exercises the embedding and the lm_head."""


class SyncMismatch(RuntimeError):
    """A rollout engine's log-probs disagree with the learner's after a sync: its weights are not the learner's."""


@dataclass(frozen=True)
class Probe:
    """The learner's log-probs on the probe sequence at one policy version."""

    input_ids: tuple[int, ...]
    expected: tuple[float, ...]
    """log p(input_ids[t + 1] | prefix) from the learner, t = 0..L-2."""
    version: int
    tolerance: float

    def diff(self, engine_logprobs: list) -> float:
        """Largest |learner - engine| over all positions; `engine_logprobs` is vLLM's prompt_logprobs list
        (None first: nothing predicts the first token)."""
        got = list(engine_logprobs)[1:]
        if len(got) != len(self.expected) or any(g is None for g in got):
            raise SyncMismatch(f"probe: the engine returned {len(got)} log-probs for {len(self.expected)} positions")
        diffs = [abs(a - b) for a, b in zip(self.expected, got)]
        return math.nan if any(math.isnan(d) for d in diffs) else max(diffs, default=0.0)  # max() skips NaN

    def verify(self, engine_logprobs: list, where: str) -> float:
        d = self.diff(engine_logprobs)
        if not d <= self.tolerance:  # `not <=` so that a NaN fails too
            raise SyncMismatch(
                f"{where}: log-probs on the probe differ from the learner's by up to {d:.3g} nats at policy "
                f"version {self.version} (tolerance {self.tolerance:g}): the rollout engine is not running the "
                "learner's weights")
        return d


def probe_example(tokenizer, max_length: int = 4096):
    """The probe conversation as a training row (the learner computes its log-probs like any row)."""
    from rayda.data.sft import render

    ex = render(list(PROBE_MESSAGES), tokenizer, max_length, overlong="truncate", prompt_id="probe")
    if ex is None:
        raise ValueError("the probe conversation does not fit the policy's context")
    return ex


def snapshot_path(sync_dir: Path, version: int) -> Path:
    return Path(sync_dir) / f"v{version:06d}"


def prune_snapshots(sync_dir: Path, keep: Path | None) -> None:
    """Delete every snapshot but `keep` (a rollout actor that restarts reloads the current one)."""
    for p in Path(sync_dir).glob("v[0-9]*"):
        if p.is_dir() and (keep is None or p.resolve() != Path(keep).resolve()):
            shutil.rmtree(p, ignore_errors=True)


def interleave(parts: list[list]) -> list:
    """Undo the learner's sharding: rank r computed rows[r::world]; return them in the order of rows."""
    world, out = len(parts), []
    for i in range(sum(len(p) for p in parts)):
        out.append(parts[i % world][i // world])
    return out


def learner_logprobs(learners, rows: list, reference: bool = False, temperature: float = 1.0) -> list[list[float]]:
    """Per-target log-probs of `rows` from the learner group (policy or frozen reference), in row order,
    of softmax(logits / temperature)."""
    return interleave(learners.run_all("logprobs", rows, reference=reference, temperature=temperature))


def sync(learners, rollout, sync_dir: Path, version: int, probe_row=None, tolerance: float = 1e-3) -> dict:
    """Publish the learner's current weights as `version` to every rollout actor; with `probe_row`,
    verify them (raises SyncMismatch). Returns timings and sizes for the metrics."""
    import time

    path = snapshot_path(sync_dir, version)
    t0 = time.perf_counter()
    saved = learners.run_all("save_weights", str(path))[0]
    t1 = time.perf_counter()
    rollout.sync(path, version)
    t2 = time.perf_counter()
    info = {"version": version, "bytes": saved["bytes"], "save_s": t1 - t0, "reload_s": t2 - t1}
    if probe_row is not None:
        expected = learner_logprobs(learners, [probe_row])[0]
        probe = Probe(tuple(probe_row.input_ids), tuple(expected), version, tolerance)
        info["probe_max_diff"] = rollout.check(probe)
    info["probe_s"] = time.perf_counter() - t2
    prune_snapshots(sync_dir, path)
    return info
