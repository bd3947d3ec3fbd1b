"""The learner: one Ray actor per DeepSpeed rank, a thin shell over `rayda.engines.deepspeed_engine`.

`actors.group.ActorGroup` creates the ranks (rank 0 first, for the master address), calls `setup` on
all of them at once (torch.distributed waits until every rank has joined) and then runs the same
method on every rank. Each rank receives only its shard of a batch (`ActorGroup.run_sharded`).
"""

from __future__ import annotations

import os
import socket


class Learner:
    """One rank. Methods other than `master_address` and `setup` must be called on all ranks together:
    they contain collectives."""

    def master_address(self) -> tuple[str, int]:
        """This node's address and a free port, for rank 0 to host the process-group rendezvous."""
        import ray

        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def setup(self, dist_env: dict, model_path: str, options, frozen: bool = False) -> dict:
        """`frozen`: a rank of the reference group (`pools.reference`), which only answers `logprobs`."""
        from rayda.engines.deepspeed_engine import DeepSpeedLearner

        os.environ.update({k: str(v) for k, v in dist_env.items()})
        self.engine = DeepSpeedLearner(model_path, options, frozen)  # decides its device and dtype in this process
        d = self.engine.decision
        return {"rank": self.engine.rank, "pid": os.getpid(), "device": str(self.engine.device),
                "accelerator": d.accelerator, "backend": d.backend, "dtype": d.dtype}

    def restart(self, options) -> None:
        """The start weights again, with a new optimizer (`rl.members`: the next member, same process)."""
        self.engine.restart(options)

    def train_step(self, shard, loss: str = "sft", **extras) -> dict:
        return self.engine.train_step(shard, loss, **extras)

    def eval_loss(self, shard, loss: str = "sft") -> dict:
        return self.engine.eval_loss(shard, loss)

    def save_checkpoint(self, directory: str, tag: str, client_state: dict) -> None:
        self.engine.save_checkpoint(directory, tag, client_state)

    def load_checkpoint(self, directory: str) -> dict | None:
        return self.engine.load_checkpoint(directory)

    def state_dict(self) -> dict | None:
        return self.engine.state_dict()

    def export_hf(self, path: str) -> None:
        self.engine.export_hf(path)

    def logprobs(self, shard, reference: bool = False, temperature: float = 1.0) -> list:
        return self.engine.logprobs(shard, reference, temperature)

    def save_weights(self, path: str) -> dict | None:
        return self.engine.save_weights(path)

    # Weights over a collective (rayda.rl.collective): rank 0 hosts the group and sends.
    def weight_meta(self) -> list:
        return self.engine.weight_meta()

    def open_weight_group(self, timeout_s: float) -> tuple[str, int]:
        import ray

        return ray.util.get_node_ip_address(), self.engine.open_weight_group(timeout_s)

    def join_weight_group(self, host: str, port: int, world: int, timeout_s: float) -> None:
        self.engine.join_weight_group(host, port, world, timeout_s)

    def broadcast_weights(self, buckets: list) -> dict | None:
        return self.engine.broadcast_weights(buckets)

    # LoRA (rl.lora): rank 0 hands over the adapters as PEFT files.
    def adapter_files(self) -> dict | None:
        return self.engine.adapter_files()
