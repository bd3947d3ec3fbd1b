"""Finished parts: how a Ray Data stage (gen-sft, cai-sft) keeps what it has done, so a killed run resumes.

A part is `parts/part-XXXXX.parquet`, written atomically, with one row per prompt: `prompt_id`,
`status` and `record` (the prompt's whole record as a JSON string, so Arrow never has to reconcile
nested schemas). A restart reads every finished part, skips their prompt ids and numbers new parts
after the last one; temporary `.tmp-*` leftovers of a killed run are ignored.
"""

from __future__ import annotations

import json
from pathlib import Path

from rayda import io

PART_GLOB = "part-*.parquet"


def read_parts(parts_dir: Path) -> list[dict]:
    """Records of every finished part, in part order."""
    import pyarrow.parquet as pq

    records = []
    for f in sorted(Path(parts_dir).glob(PART_GLOB)):
        records += [json.loads(r) for r in pq.read_table(f, columns=["record"]).column("record").to_pylist()]
    return records


def write_part(parts_dir: Path, index: int, rows: list[dict]) -> Path:
    """Write `rows` (each with `prompt_id`, `status`, `record`) as part `index`, atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({
        "prompt_id": [r["prompt_id"] for r in rows],
        "status": [r["status"] for r in rows],
        "record": [r["record"] for r in rows],
    })
    target = Path(parts_dir) / f"part-{index:05d}.parquet"
    with io.atomic_path(target) as tmp:
        pq.write_table(table, tmp)
    return target


def next_index(parts_dir: Path) -> int:
    """The number of the next part: one after the highest finished part."""
    existing = [int(p.stem.split("-")[1]) for p in Path(parts_dir).glob(PART_GLOB)]
    return max(existing, default=-1) + 1


def drain(ds, parts_dir: Path, shard_size: int, bar, on_row=None) -> None:
    """Run the Ray Data stream `ds`, writing every `shard_size` finished rows as a part (the rest at the
    end). `on_row(row)` sees each row as it arrives (the driver's running figures); `bar` is a tqdm."""
    index, buffer = next_index(parts_dir), []
    for batch in ds.iter_batches(batch_size=None, batch_format="pyarrow"):
        for row in batch.to_pylist():
            buffer.append(row)
            if on_row is not None:
                on_row(row)
        bar.update(batch.num_rows)
        while len(buffer) >= shard_size:
            write_part(parts_dir, index, buffer[:shard_size])
            buffer, index = buffer[shard_size:], index + 1
    if buffer:
        write_part(parts_dir, index, buffer)
