"""`rayda label RECIPE --prompts FILE`: label imported prompts against the spec with the recipe's llm or
http judge, on Ray Data (the judge pool's actors), k votes per prompt (`rayda.labeling`).

Writes `<run.dir>/labels/` (or `--out`): `parts/part-XXXXX.parquet` while it runs (each finished
shard, written atomically; a restart skips every prompt id already in a part), then
`labelled.parquet` (the input row plus `category`, `label`, `clause_id`, `confidence`, `label_source` =
`judge:<model>@<spec hash>`) and, when the rows carry a `split`, one file per split of it
(`train.parquet`, `heldout.parquet`), `unlabelled.parquet` (the input row plus `reason`), `audit.csv` (a
stratified sample for human review), `label_report.json` (counts, reasons, agreement with each
source's harmful/benign metadata) and `_SUCCESS` last.

`labelled.parquet` is a prompt set every stage reads (`prompts.source`, `rl.prompts`, `eval.prompts`).
The judge actors take `gen_sft.batch_size` prompts per call, and a part holds `gen_sft.shard_size`.
"""

from __future__ import annotations

import csv
import io as _io
import json
from collections import Counter
from pathlib import Path

from rayda import io, labeling
from rayda.config import Recipe

PART_GLOB = "part-*.parquet"
AUDIT_ROWS = 200
MIN_CONFIDENCE = 0.5


def read_input(source: str) -> list[dict]:
    """Rows with an `id` and `messages` ending on a user turn (as `rayda prompts import` writes them)."""
    from rayda.data.prompts import PromptError, read_rows, row_messages

    where, rows = read_rows(source)
    seen: dict[str, int] = {}
    for n, r in enumerate(rows, 1):
        if not isinstance(r, dict):
            raise PromptError(f"{where}: row {n}: expected a mapping, got {type(r).__name__}")
        r["messages"] = row_messages(r, f"{where}: row {n}")
        r["id"] = str(r.get("id") if r.get("id") not in (None, "") else f"{Path(where).stem}-{n}")
        if r["id"] in seen:
            raise PromptError(f"{where}: row {n}: id {r['id']!r} repeats row {seen[r['id']]}")
        seen[r["id"]] = n
    if not rows:
        raise PromptError(f"{where}: no prompts")
    return rows


def run(recipe: Recipe, source: str, out: str | Path | None = None, *, progress: bool = True) -> Path:
    from rayda.context import RunContext

    out = Path(out) if out else Path(recipe.run.dir) / "labels"
    if io.is_done(out):
        print(f"label: {out} is complete; skipping")
        return out
    if recipe.judge.kind not in ("llm", "http"):
        raise ValueError(f"rayda label needs a model judge (judge.kind=llm or http), not {recipe.judge.kind!r}")
    rows = read_input(source)  # before Ray starts: a bad row costs nothing
    ctx = RunContext(recipe)
    spec = ctx.spec
    provenance = {"label_source": f"judge:{ctx.judge_model}@{spec.content_hash[:12]}", "spec_hash": spec.content_hash,
                  "label_prompt_hash": labeling.prompt_hash(spec), "judge_kind": recipe.judge.kind, "k": recipe.judge.k,
                  "temperature": recipe.judge.temperature, "run_seed": recipe.run.seed}
    parts = out / "parts"
    parts.mkdir(parents=True, exist_ok=True)
    io.pin_settings(parts / "_config.json", provenance, "votes")
    votes = _read_parts(parts)
    todo = [r for r in rows if r["id"] not in votes]
    print(f"label: {len(rows)} prompts, {len(votes)} already voted on, {len(todo)} to label")
    if todo:
        _label(recipe, ctx, todo, parts, progress)
        votes = _read_parts(parts)
    missing = [r["id"] for r in rows if r["id"] not in votes]
    if missing:
        raise RuntimeError(f"label: {len(missing)} prompts have no votes after the run (first: {missing[:3]})")
    report = _write_outputs(out, rows, votes, spec, provenance, recipe.run.seed)
    io.mark_success(out, {k: report[k] for k in ("labelled", "unlabelled")})
    print(f"label: {report['labelled']} labelled, {report['unlabelled']} unlabelled -> {out}")
    return out


def _read_parts(parts: Path) -> dict[str, list[dict]]:
    import pyarrow.parquet as pq

    out = {}
    for f in sorted(parts.glob(PART_GLOB)):
        t = pq.read_table(f)
        out.update(zip(t.column("id").to_pylist(), map(json.loads, t.column("votes").to_pylist())))
    return out


def _label(recipe: Recipe, ctx, todo: list[dict], parts: Path, progress: bool) -> None:
    import math

    import pyarrow as pa
    import pyarrow.parquet as pq
    import ray
    from tqdm import tqdm

    from rayda.actors.judge import LabelWorker  # before joining Ray (see stages/gen_sft._generate)
    from rayda.placement import data_pool_args, plan as plan_pools
    from rayda.ray_utils import init_ray

    init_ray(recipe.run)
    plan_pools({"judge": recipe.pools.judge}, ray.cluster_resources())
    size = recipe.gen_sft.batch_size
    items = [{"id": r["id"], "messages": json.dumps(r["messages"])} for r in todo]
    ds = ray.data.from_items(items, override_num_blocks=max(1, math.ceil(len(items) / size)))
    ds = ds.map_batches(LabelWorker, fn_constructor_kwargs=dict(**ctx.judge_args({}), run_seed=recipe.run.seed),
                        batch_size=size, batch_format="pyarrow", **data_pool_args(recipe.pools.judge))
    existing = [int(p.stem.split("-")[1]) for p in parts.glob(PART_GLOB)]
    index, buffer = max(existing, default=-1) + 1, []
    bar = tqdm(total=len(todo), desc="label", disable=not progress)

    def flush(rows):
        with io.atomic_path(parts / f"part-{index:05d}.parquet") as tmp:
            pq.write_table(pa.Table.from_pylist(rows), tmp)

    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        buffer += batch.to_pylist()
        bar.update(batch.num_rows)
        while len(buffer) >= recipe.gen_sft.shard_size:
            flush(buffer[: recipe.gen_sft.shard_size])
            buffer, index = buffer[recipe.gen_sft.shard_size:], index + 1
    if buffer:
        flush(buffer)
    bar.close()


def _write_outputs(out: Path, rows: list[dict], votes: dict, spec, provenance: dict, seed: int) -> dict:
    import pyarrow as pa
    import pyarrow.parquet as pq

    labelled, unlabelled = [], []
    for r in rows:
        label, reason = labeling.decide(votes[r["id"]], spec, MIN_CONFIDENCE)
        base = {k: v for k, v in r.items() if k not in ("category", "label")}
        if label:
            labelled.append({**base, **label, "label_source": provenance["label_source"], "votes": json.dumps(votes[r["id"]])})
        else:
            unlabelled.append({**base, "reason": reason, "votes": json.dumps(votes[r["id"]])})
    # Rows split by `rayda prompts import` also go to one file per split: train on one, evaluate on the other.
    splits = sorted({r["split"] for r in labelled if isinstance(r.get("split"), str)})
    files = [("labelled", labelled), ("unlabelled", unlabelled)] + [(s, [r for r in labelled if r.get("split") == s]) for s in splits]
    for name, table in files:
        with io.atomic_path(out / f"{name}.parquet") as tmp:
            pq.write_table(pa.Table.from_pylist(table) if table else pa.table({"id": pa.array([], pa.string())}), tmp)
    sample = labeling.audit_sample(labelled + unlabelled, AUDIT_ROWS, seed)
    buf = _io.StringIO()
    fields = ["id", "source", "harmful", "category", "clause_id", "label", "confidence", "reason", "prompt", "human_label"]
    w = csv.DictWriter(buf, fieldnames=fields, extrasaction="ignore")
    w.writeheader()
    for r in sample:
        w.writerow({**r, "prompt": r["messages"][-1]["content"], "human_label": ""})
    io.atomic_write_text(out / "audit.csv", buf.getvalue())
    report = {"labelled": len(labelled), "unlabelled": len(unlabelled),
              "splits": {s: sum(r.get("split") == s for r in labelled) for s in splits},
              "labels": dict(Counter(r["label"] for r in labelled)),
              "categories": dict(Counter(r["category"] for r in labelled)),
              "reasons": dict(Counter(r["reason"].split(":")[0] for r in unlabelled)),
              "agreement_with_source_metadata": labeling.agreement(labelled), **provenance}
    io.atomic_write_json(out / "label_report.json", report)
    return report
