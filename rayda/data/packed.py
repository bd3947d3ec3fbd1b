"""Rows in transit to the learner ranks: each rank receives only its own slice, as NumPy columns.

A training row (`rayda.data.sft.Example`, `rayda.rl.rows.PolicyRow`) holds tuples of Python ints and
floats; pickled one by one, a batch of 256 RL rows of 300 tokens is some 300,000 Python objects. Packed,
each field is one array (ragged fields: the values back to back plus offsets), which pickles as a
buffer. A learner rank unpacks its shard into rows whose sequence fields are NumPy views.

    shards = shard(rows, world)            # driver: rank r gets rows[r::world], packed
    rows_r = shards[r].unpack()            # rank r
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Packed:
    """Rows of one dataclass as columns: `ragged` fields as (values, offsets), the others as arrays or lists."""

    cls: type
    n: int
    columns: dict

    def unpack(self) -> list:
        out: list[dict] = [{} for _ in range(self.n)]
        for name, (kind, *data) in self.columns.items():
            if kind == "ragged":
                values, offsets = data
                values = values.astype(np.int64) if values.dtype.kind in "iub" else values  # narrowed in transit only
                for i in range(self.n):
                    out[i][name] = values[offsets[i]:offsets[i + 1]]
            else:
                for i, v in enumerate(data[0]):
                    out[i][name] = v.item() if isinstance(v, np.generic) else v
        return [self.cls(**kw) for kw in out]


def _narrow(flat: np.ndarray) -> np.ndarray:
    """float32 for floating values (what the learner computes in); integers in the smallest type that
    holds them (token ids of a 150k vocabulary in int32, a loss mask in uint8)."""
    if flat.dtype.kind == "f":
        return flat.astype(np.float32, copy=False)
    if flat.dtype.kind in "iub" and flat.size:
        return flat.astype(np.result_type(np.min_scalar_type(flat.min()), np.min_scalar_type(flat.max())), copy=False)
    return flat


def pack(rows: list) -> Packed:
    """`rows` (instances of one dataclass) as a `Packed`; an empty list packs to no rows."""
    if not rows:
        return Packed(object, 0, {})
    cls = type(rows[0])
    if any(type(r) is not cls for r in rows):
        raise TypeError(f"pack: rows of several types ({sorted({type(r).__name__ for r in rows})})")
    columns = {}
    for f in dataclasses.fields(cls):
        values = [getattr(r, f.name) for r in rows]
        if isinstance(values[0], (tuple, list, np.ndarray)):
            offsets = np.zeros(len(values) + 1, dtype=np.int64)
            np.cumsum([len(v) for v in values], out=offsets[1:])
            flat = np.concatenate([np.asarray(v) for v in values]) if offsets[-1] else np.zeros(0)
            columns[f.name] = ("ragged", _narrow(flat), offsets)
        elif all(isinstance(v, (int, float, bool, np.number)) for v in values):
            columns[f.name] = ("array", np.asarray(values))
        else:
            columns[f.name] = ("list", list(values))
    return Packed(cls, len(rows), columns)


@dataclass(frozen=True)
class Shard:
    """Rank `rank`'s rows of a global batch (`rows[rank::world]`), with the batch's global figures that
    a rank needs and cannot see: how many rows and target tokens the whole batch has."""

    rows: Packed
    rank: int
    world: int
    total_rows: int
    total_targets: int

    def unpack(self) -> list:
        return self.rows.unpack()

    @property
    def per_rank(self) -> int:
        """Rows of the largest shard: every rank runs as many forward passes (ZeRO-3 collectives)."""
        return -(-self.total_rows // self.world)


def shard(rows: list, world: int) -> list[Shard]:
    """The global batch `rows` cut for `world` ranks, each part packed."""
    targets = sum(r.num_targets for r in rows) if rows and hasattr(rows[0], "num_targets") else 0
    return [Shard(pack(rows[r::world]), r, world, len(rows), targets) for r in range(world)]


def interleave(parts: list[list]) -> list:
    """Undo the sharding: rank r computed rows[r::world]; return the results in the order of rows."""
    world, out = len(parts), []
    for i in range(sum(len(p) for p in parts)):
        out.append(parts[i % world][i // world])
    return out
