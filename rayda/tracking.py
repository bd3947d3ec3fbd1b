"""Where a run's figures go: one place for every stage's metric records.

    from rayda import tracking
    tracking.log(recipe.run.dir, {"stage": "sft", "step": 3, "loss": 1.9, "seconds": {"train": 0.4}})
    tracking.close(recipe.run.dir)          # at the end of the stage (also done at exit)

Each record goes to
- `<run.dir>/metrics.jsonl`, one JSON line, as `rayda.report` and the benchmarks read it;
- TensorBoard, `<run.dir>/tensorboard/` (`tensorboard --logdir runs/tiny/tensorboard`): a scalar
  `stage/key` for every finite number, nested dicts flattened to `stage/key/sub`; lists, strings,
  bools and NaN are left out. The x-axis is `record["step"]`, else a count of the stage's records;
- Weights & Biases when `wandb` is installed and configured: `WANDB_MODE` (`online`, `offline`) or
  `WANDB_API_KEY` set (`WANDB_MODE=disabled` turns it off). One W&B run per stage and process, named
  `<run dir name>/<stage>` in the group `<run dir name>`, project `WANDB_PROJECT` (default `rayda`),
  files under `WANDB_DIR` (default the run directory). Each stage's charts use its own `stage/step`.

Writers open on the first record, once per process and run directory. Nothing heavy is imported until
then. TensorBoard or W&B failing to start costs a one-line warning, never the run: metrics.jsonl is
the record of truth.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import sys
import time
from pathlib import Path

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def append_jsonl(path: str | Path, record: dict, *, sort_keys: bool = False) -> None:
    """Append `record` as one JSON line to `path` (creating its folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        f.write(json.dumps(record, sort_keys=sort_keys) + "\n")


def scalars(record: dict, prefix: str = "") -> dict[str, float]:
    """The finite numbers of a record, nested keys joined with `/`; bools, strings, lists, None and
    NaN/inf are left out."""
    out: dict[str, float] = {}
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(scalars(value, name + "/"))
        elif isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            out[name] = float(value)
    return out


def wandb_configured() -> bool:
    """W&B is used when the environment asks for it and `wandb` is importable."""
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    if mode == "disabled" or not (mode or os.environ.get("WANDB_API_KEY")):
        return False
    try:
        import importlib.util

        return importlib.util.find_spec("wandb") is not None
    except (ImportError, ValueError):
        return False


class Tracker:
    """One run directory's writers in this process. `wandb=None` decides from the environment."""

    def __init__(self, run_dir: str | Path, *, tensorboard: bool = True, wandb: bool | None = None):
        self.run_dir = Path(run_dir)
        self.metrics_path = self.run_dir / METRICS_FILE
        self.use_tensorboard = tensorboard
        self.use_wandb = wandb_configured() if wandb is None else wandb
        self._tb = None  # EventFileWriter, opened on the first record
        self._wandb = None  # wandb Run, opened on the first record
        self._wandb_stages: set[str] = set()
        self._counts: dict[str, int] = {}

    def log(self, record: dict, *, sort_keys: bool = False) -> None:
        """Write one record ({"stage": ..., "step": ..., figures}) everywhere it goes."""
        append_jsonl(self.metrics_path, record, sort_keys=sort_keys)
        stage = str(record.get("stage", "run"))
        step = record.get("step")
        if not isinstance(step, int) or isinstance(step, bool):
            step = self._counts.get(stage, 0)
        self._counts[stage] = self._counts.get(stage, 0) + 1
        figures = {f"{stage}/{k}": v for k, v in scalars({k: v for k, v in record.items() if k not in ("stage", "step")}).items()}
        if self.use_tensorboard:
            self._log_tensorboard(figures, step)
        if self.use_wandb:
            self._log_wandb(stage, figures, step)

    def _log_tensorboard(self, figures: dict[str, float], step: int) -> None:
        if self._tb is None:
            try:
                from tensorboard.summary.writer.event_file_writer import EventFileWriter
            except ImportError as e:  # pragma: no cover - tensorboard is a dependency
                self.use_tensorboard = False
                print(f"tracking: TensorBoard is off ({e})", file=sys.stderr)
                return
            self._tb = EventFileWriter(str(self.run_dir / TENSORBOARD_DIR))
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary

        values = [Summary.Value(tag=tag, simple_value=v) for tag, v in figures.items()]
        if values:
            self._tb.add_event(Event(wall_time=time.time(), step=step, summary=Summary(value=values)))
            self._tb.flush()  # a step takes seconds: keep the file current for a live `tensorboard`

    def _log_wandb(self, stage: str, figures: dict[str, float], step: int) -> None:
        try:
            import wandb

            if self._wandb is None:
                name = self.run_dir.resolve().name
                self._wandb = wandb.init(
                    project=os.environ.get("WANDB_PROJECT", "rayda"), group=name, job_type=stage, name=f"{name}/{stage}",
                    dir=os.environ.get("WANDB_DIR") or str(self.run_dir), config={"run_dir": str(self.run_dir.resolve())},
                    reinit="create_new",
                )
            if stage not in self._wandb_stages:
                self._wandb.define_metric(f"{stage}/step")
                self._wandb.define_metric(f"{stage}/*", step_metric=f"{stage}/step")
                self._wandb_stages.add(stage)
            self._wandb.log({f"{stage}/step": step, **figures})
        except Exception as e:  # noqa: BLE001 - a tracking service must not stop a training run
            self.use_wandb = False
            print(f"tracking: Weights & Biases is off ({type(e).__name__}: {e})", file=sys.stderr)

    def close(self) -> None:
        """Flush and close the writers (a later record opens them again)."""
        if self._tb is not None:
            self._tb.close()
            self._tb = None
        if self._wandb is not None:
            try:
                self._wandb.finish()
            except Exception as e:  # noqa: BLE001
                print(f"tracking: Weights & Biases finish failed ({type(e).__name__}: {e})", file=sys.stderr)
            self._wandb = None
            self._wandb_stages.clear()


_TRACKERS: dict[Path, Tracker] = {}
_AT_EXIT = False


def tracker(run_dir: str | Path) -> Tracker:
    """This process's tracker of `run_dir` (created on first use)."""
    global _AT_EXIT
    key = Path(run_dir).resolve()
    if key not in _TRACKERS:
        if not _AT_EXIT:
            atexit.register(close)
            _AT_EXIT = True
        _TRACKERS[key] = Tracker(run_dir)
    return _TRACKERS[key]


def log(run_dir: str | Path, record: dict, *, sort_keys: bool = False) -> None:
    """Write `record` to `<run_dir>/metrics.jsonl`, TensorBoard and (if configured) W&B."""
    tracker(run_dir).log(record, sort_keys=sort_keys)


def close(run_dir: str | Path | None = None) -> None:
    """Close `run_dir`'s writers, or every run directory's (None); call it at the end of a stage."""
    keys = list(_TRACKERS) if run_dir is None else [Path(run_dir).resolve()]
    for key in keys:
        t = _TRACKERS.pop(key, None)
        if t is not None:
            t.close()
