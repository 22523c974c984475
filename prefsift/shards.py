"""Run folders of resumable jobs: atomic Parquet shards, and the ranks of a multi-process run.

A shard is written to a temporary name, flushed to disk and renamed, so it is either whole or
absent after a crash or a power cut. Reading merges all shards and keeps one row per pair_id
(or per pair and side). Shards are named here, shard-r<rank>-<random>.parquet, for every run.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from prefsift.scoring.models import ModelSpec


def run_hash(key) -> str:
    """A run's id from everything that changes its numbers: sha256 of the sorted JSON, 16 hex digits."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Dist:
    """Rank/world of an `accelerate launch` (or torchrun) run; a no-op single process otherwise."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.state = None
        if self.world > 1:
            import torch
            from accelerate import PartialState

            # Without CUDA, PartialState must be told to use CPU processes (gloo), or it stays single-process.
            self.state = PartialState(cpu=not torch.cuda.is_available())
            self.world = self.state.num_processes
        self.rank = self.state.process_index if self.state else 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def all_reduce_sum(self, tensors: list) -> list:
        """The element-wise sum of each tensor over the ranks (one flat all-reduce), same shapes."""
        if self.state is None or not tensors:
            return tensors
        import torch
        import torch.distributed as td

        flat = torch.cat([t.detach().reshape(-1).to(torch.float64) for t in tensors]).to(self.state.device)
        td.all_reduce(flat, op=td.ReduceOp.SUM)
        out, at = [], 0
        for t in tensors:
            out.append(flat[at : at + t.numel()].reshape(t.shape).to(t.dtype).to(t.device))
            at += t.numel()
        return out

    def device(self, spec: ModelSpec) -> ModelSpec:
        if self.state is not None and spec.device == "auto":
            from dataclasses import replace

            return replace(spec, device=str(self.state.device))
        return spec


def read_shards(run_dir: Path, keys: tuple[str, ...] = ("pair_id",)) -> pa.Table | None:
    """Every shard of a run folder, one row per `keys` (a pair; a pair's side for influence)."""
    files = sorted(run_dir.glob("shard-*.parquet"))
    if not files:
        return None
    table = pa.concat_tables([pq.read_table(f) for f in files])
    # Dedupe: a row written twice (crash between shard write and bookkeeping, overlapping ranks
    # after a resume with another world size) counts once.
    key = ["\0".join(k) for k in zip(*(table.column(c).to_pylist() for c in keys))]
    _, first = np.unique(np.asarray(key, dtype=object), return_index=True)
    return table.take(pa.array(np.sort(first)))


def durable_replace(tmp: Path, path: Path) -> None:
    """Rename `tmp` over `path` so that after a crash, or a power cut, `path` is whole or absent:
    the data is flushed to disk (fsync) before the rename, and the rename before returning."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        fd = os.open(path.parent, os.O_RDONLY)
    except OSError:  # a platform without directory handles
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_table_atomic(table: pa.Table, path: Path) -> None:
    """Write a Parquet file that a reader or a resumed run sees whole or not at all."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    pq.write_table(table, tmp)
    durable_replace(tmp, path)


def write_shard(run_dir: Path, rank: int, table: pa.Table) -> None:
    write_table_atomic(table, run_dir / f"shard-r{rank:03d}-{uuid.uuid4().hex[:12]}.parquet")
