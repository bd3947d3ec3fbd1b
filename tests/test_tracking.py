"""rayda.tracking: metrics.jsonl lines, TensorBoard scalars and (offline) W&B runs, without Ray."""

from __future__ import annotations

import json

import pytest

from rayda import tracking

SFT = {"stage": "sft", "step": 3, "loss": 1.5, "lr": 2e-4, "tokens": 120, "heldout_loss": None}
RL = {"stage": "rl", "step": 2, "reward_mean": 0.25, "sampled_versions": [1], "prompts": ["a", "b"],
      "probe_max_diff": float("nan"), "malformed": True, "note": "text",
      "seconds": {"generate": 1.5, "judge": 0.5}, "by_category": {"harm": {"accuracy": 0.75}}}


@pytest.fixture(autouse=True)
def _no_wandb_from_env(monkeypatch):
    for var in ("WANDB_MODE", "WANDB_API_KEY"):
        monkeypatch.delenv(var, raising=False)
    yield
    tracking.close()


def _scalars(logdir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(logdir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_jsonl_line_is_the_record_as_before(tmp_path):
    tracking.log(tmp_path, SFT)
    tracking.log(tmp_path, {"stage": "gen_sft", "b": 1, "a": 2}, sort_keys=True)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert lines == [json.dumps(SFT), '{"a": 2, "b": 1, "stage": "gen_sft"}']
    assert not tracking.wandb_configured()


def test_tensorboard_scalars_flattened_and_finite_only(tmp_path):
    tracking.log(tmp_path, SFT)
    tracking.log(tmp_path, {**SFT, "step": 4, "loss": 1.25})
    tracking.log(tmp_path, RL)
    tracking.close(tmp_path)
    assert len(list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))) == 1  # one writer per process
    got = _scalars(tmp_path / "tensorboard")
    assert got == {
        "sft/loss": [(3, 1.5), (4, 1.25)],
        "sft/lr": [(3, pytest.approx(2e-4)), (4, pytest.approx(2e-4))],
        "sft/tokens": [(3, 120.0), (4, 120.0)],
        "rl/reward_mean": [(2, 0.25)],
        "rl/seconds/generate": [(2, 1.5)],
        "rl/seconds/judge": [(2, 0.5)],
        "rl/by_category/harm/accuracy": [(2, 0.75)],
    }


def test_records_without_a_step_are_counted(tmp_path):
    for rate in (0.5, 0.75):
        tracking.log(tmp_path, {"stage": "gen_sft", "accept_rate": rate, "time": "2025-01-01T00:00:00Z"})
    tracking.close()
    assert _scalars(tmp_path / "tensorboard") == {"gen_sft/accept_rate": [(0, 0.5), (1, 0.75)]}


def test_scalars_skip_non_numbers():
    assert tracking.scalars({"a": 1, "b": True, "c": None, "d": "x", "e": [1.0], "f": float("inf"),
                             "g": {"h": float("nan"), "i": 2.5}}) == {"a": 1.0, "g/i": 2.5}


def _wandb_records(path) -> list:
    """The protobuf `Record`s of an offline run's `.wandb` file (a LevelDB-style log: a 7-byte file
    header, then 32 KiB blocks of chunks with a 7-byte header each)."""
    import struct

    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, chunk, out = path.read_bytes(), 32768, 7, b"", []
    assert data[:4] in (b":W&B", data)  # the header, or less of the file than the header so far
    while pos + 7 <= len(data):
        left = block - pos % block
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7]) if left >= 7 else (0, 0, 0)
        if kind == 0:  # block padding
            pos += left
            continue
        if pos + 7 + n > len(data):  # a chunk still being written
            break
        chunk, pos = chunk + data[pos + 7:pos + 7 + n], pos + 7 + n
        if kind in (1, 4):  # FULL or LAST
            out.append(pb.Record.FromString(chunk))
            chunk = b""
    return out


def _wandb_history(path, timeout: float = 60.0) -> list[dict]:
    """The `history` records, once the file holds the run's `exit` record: in offline mode `finish()`
    can return before wandb's service process has written the file (seen on a loaded machine)."""
    import time

    deadline = time.monotonic() + timeout
    while True:
        records = _wandb_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in r.history.item}
            for r in records if r.WhichOneof("record_type") == "history"]


def test_wandb_offline_run_holds_the_figures(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    assert tracking.wandb_configured()
    run = tmp_path / "run"
    tracking.log(run, SFT)
    tracking.log(run, RL)
    tracking.close(run)
    files = list((tmp_path / "wb" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 1
    history = [{k: v for k, v in h.items() if not k.startswith("_")} for h in _wandb_history(files[0])]
    assert history == [
        {"sft/step": 3, "sft/loss": 1.5, "sft/lr": 2e-4, "sft/tokens": 120},
        {"rl/step": 2, "rl/reward_mean": 0.25, "rl/seconds/generate": 1.5, "rl/seconds/judge": 0.5,
         "rl/by_category/harm/accuracy": 0.75},
    ]
    assert (run / "metrics.jsonl").read_text().count("\n") == 2


def test_import_is_cheap():
    import subprocess
    import sys

    code = "import sys, rayda.tracking; print(sorted(m for m in ('torch', 'ray', 'wandb', 'tensorboard') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_wandb_off_without_configuration(tmp_path):
    t = tracking.Tracker(tmp_path)
    assert not t.use_wandb
    t.log(SFT)
    t.close()
    assert not (tmp_path / "wandb").exists()


def test_engine_log_level_quiet_unless_verbose(monkeypatch):
    """The same issue's other half: vLLM's level is set in the engine's process from EngineConfig.verbose."""
    from rayda.engines import vllm_engine

    assert vllm_engine.EngineConfig("m").verbose is False
    monkeypatch.setattr(vllm_engine, "_USER_LOG_LEVEL", None)
    monkeypatch.delenv("VLLM_LOGGING_LEVEL", raising=False)
    vllm_engine.set_log_level(False)
    assert vllm_engine.os.environ["VLLM_LOGGING_LEVEL"] == "WARNING"
    vllm_engine.set_log_level(True)
    assert vllm_engine.os.environ["VLLM_LOGGING_LEVEL"] == "INFO"
    monkeypatch.setattr(vllm_engine, "_USER_LOG_LEVEL", "DEBUG")  # exported by the user: left alone
    vllm_engine.set_log_level(False)
    assert vllm_engine.os.environ["VLLM_LOGGING_LEVEL"] == "INFO"
