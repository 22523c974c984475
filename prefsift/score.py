"""Cached, resumable log-prob runs and the cheap scores built on them (IRM, LossDiff, policy loss).

A log-prob run is keyed by everything that changes its numbers: the model fingerprint, its
dtype, the dataset name + content hash of the split, the tokenization config and tokenizer.
Batch size and device are left out. A run with the same key is never computed twice.

Crash safety (ARCHITECTURE.md): the job never holds the DuckDB file while computing.
1. read the pairs in one short read-only connection;
2. compute in chunks of length-sorted pairs, each chunk written as one Parquet shard under
   runs_dir(db)/<run_id>/ (tmp file + rename, so a shard is whole or absent);
3. merge the shards (dedupe on pair_id), check every pair is there, and commit the run in one
   short transaction.
After `kill -9`, a rerun reads the shards and computes only the missing pairs.

Several processes (`accelerate launch --num_processes N -m prefsift score ...` on GPUs;
on CPUs `accelerate launch --multi_gpu --num_processes N -m prefsift ...` or `torchrun
--nproc_per_node N -m prefsift ...`: accelerate's `--cpu` flag starts ONE process unless MPI is set
up): each rank takes a deterministic slice of the missing pairs and writes its own shards;
rank 0 waits for all, merges and commits.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pyarrow as pa

from prefsift.config import ScoreConfig
from prefsift.errors import UserError
from prefsift.formats import pair_texts
from prefsift.scoring.models import ModelSpec, fingerprint
from prefsift.scoring.tokenize import TokenizeConfig
from prefsift.shards import Dist, read_shards, run_hash, write_shard
from prefsift.storage.paths import runs_dir

log = logging.getLogger(__name__)

LOGP_VERSION = 1  # bump when the log-prob maths changes, so old caches are not reused
SCORE_VERSION = 2  # 2: fully truncated pairs are left out (version 1 scored them 0)
SHARD_PAIRS = 64  # pairs per shard: at most this much work is lost to a crash


# ---------------------------------------------------------------- log-prob runs
def _read_pairs(db, dataset: str, split: str | None) -> tuple[list[dict], str]:
    from prefsift.storage import connect, pairs

    with connect(db, read_only=True) as con:
        table = pairs.get_pairs(
            con, dataset, split=split, columns=("pair_id", "kind", "prompt", "chosen", "rejected")
        )
        chash = pairs.content_hash(con, dataset, split)
    return [{"pair_id": r["pair_id"], **pair_texts(r)} for r in table.to_pylist()], chash


def logp_run_key(
    spec: ModelSpec,
    dataset: str,
    split: str | None,
    content_hash: str,
    tok_config: TokenizeConfig,
    tok_sig: str,
) -> tuple[str, dict]:
    config = {
        "model_id": fingerprint(spec),
        "model_path": spec.path,
        "adapter": spec.adapter,
        "dtype": spec.dtype,
        "dataset": dataset,
        "split": split,
        "content_hash": content_hash,
        "tokenize": tok_config.to_dict(),
        "tokenizer": tok_sig,
        "version": LOGP_VERSION,
    }
    return "lp-" + run_hash(config), config


def _compute(
    spec: ModelSpec,
    tokenizer,
    rows: list[dict],
    tok_config,
    batch_tokens: int,
    run_dir: Path,
    dist: Dist,
    desc: str,
    total: int,
    done: int,
) -> None:
    """Compute `rows` (this rank's slice) chunk by chunk, one shard per chunk."""
    from prefsift.progress import Progress
    from prefsift.scoring.logprobs import pair_logps
    from prefsift.scoring.models import load_model
    from prefsift.scoring.tokenize import tokenize_pairs
    from prefsift.train_data import prompt_boundary_note

    tokenized = tokenize_pairs(tokenizer, rows, tok_config)
    note = prompt_boundary_note(rows, tokenized)
    if note and dist.main:
        log.warning("%s", note)
    # Longest first, then consecutive chunks: each chunk holds similar lengths (little padding).
    work = [2 * len(t.prompt_ids) + len(t.chosen_ids) + len(t.rejected_ids) for t in tokenized]
    order = sorted(range(len(rows)), key=lambda i: -work[i])
    # A LoRA adapter is merged into the weights: one plain forward instead of base + adapter
    # matmuls per layer (PEFT's unmerged LoRA cost 1.74x the merged forward on an H100).
    model = load_model(spec, merge_adapter=bool(spec.adapter))
    with Progress(total, desc, unit="pair", initial=done, main=dist.main) as bar:
        for s in range(0, len(order), SHARD_PAIRS):
            idx = order[s : s + SHARD_PAIRS]
            res = pair_logps(
                model, [tokenized[i] for i in idx], tokenizer.pad_token_id, batch_tokens=batch_tokens
            )
            table = pa.table({"pair_id": [rows[i]["pair_id"] for i in idx], **{k: res[k] for k in res}})
            write_shard(run_dir, dist.rank, table)
            bar.update(len(idx) * dist.world)  # every rank advances at about the same pace


def ensure_logps(
    db,
    spec: ModelSpec,
    dataset: str,
    split: str | None = ScoreConfig.split,
    tok_config: TokenizeConfig | None = None,
    batch_tokens: int = ScoreConfig.batch_tokens,
    name: str | None = None,
    role: str | None = None,
) -> str:
    """The logp run_id of (model, dataset split, tokenization); computes only what is missing."""
    from prefsift.scoring.models import load_tokenizer
    from prefsift.scoring.tokenize import tokenizer_signature
    from prefsift.storage import connect, open_db, runs

    tok_config = tok_config or TokenizeConfig()
    dist = Dist()
    spec = dist.device(spec)
    if dist.main:
        open_db(db)  # migrate once, before anyone reads
    dist.barrier()
    rows, chash = _read_pairs(db, dataset, split)
    if not rows:
        raise UserError(f"dataset {dataset!r} has no pairs in split {split!r}")
    tokenizer = load_tokenizer(spec)
    run_id, config = logp_run_key(spec, dataset, split, chash, tok_config, tokenizer_signature(tokenizer))
    model_id = config["model_id"]
    with connect(db, read_only=True) as con:
        exists = runs.logp_run_exists(con, run_id)
    dist.barrier()  # every rank has read the database before rank 0 writes to it
    if exists:
        if dist.main and (name or role):
            with connect(db) as con:
                _register(con, db, spec, model_id, name, role)
        log.info("log-probs of %s on %s: cached run %s", name or spec.path, dataset, run_id)
        return run_id
    run_dir = runs_dir(db) / run_id
    if dist.main:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    dist.barrier()
    # 1. what is missing: every rank reads the shards before any rank writes a new one
    have = read_shards(run_dir)
    done_ids = set(have.column("pair_id").to_pylist()) if have is not None else set()
    missing = [r for r in rows if r["pair_id"] not in done_ids]
    dist.barrier()
    # 2. compute this rank's deterministic slice
    mine = missing[dist.rank :: dist.world]
    if mine:
        label = f"log-probs {name or Path(spec.path).name}"
        done = len(rows) - len(missing)
        _compute(spec, tokenizer, mine, tok_config, batch_tokens, run_dir, dist, label, len(rows), done)
    dist.barrier()
    # 3. rank 0 merges once and commits in one short transaction
    if dist.main:
        table = read_shards(run_dir)
        got = set(table.column("pair_id").to_pylist()) if table is not None else set()
        want = {r["pair_id"] for r in rows}
        if not want <= got:
            raise UserError(
                f"log-prob run {run_id} is incomplete ({len(want - got)} pairs missing): run it again"
            )
        keep = pa.array([p in want for p in table.column("pair_id").to_pylist()])
        table = table.filter(keep)
        with connect(db) as con:
            _register(con, db, spec, model_id, name, role)
            runs.save_logp_run(con, run_id, model_id, dataset, config, table)
        log.info(
            "log-probs of %s on %s: committed run %s (%d pairs)",
            name or spec.path,
            dataset,
            run_id,
            table.num_rows,
        )
    dist.barrier()
    return run_id


def _register(con, db, spec: ModelSpec, model_id: str, name: str | None, role: str | None) -> None:
    from prefsift.storage import runs
    from prefsift.storage.paths import stored_path

    adapter = stored_path(db, spec.adapter) if spec.adapter else None
    runs.register_model(
        con,
        model_id,
        stored_path(db, spec.path),
        name=name,
        revision=spec.revision,
        adapter_path=adapter,
        role=role,
    )


# ---------------------------------------------------------------- scores
def aligned_logps(
    con, run_ids: list[str], pair_ids: list[str] | None = None
) -> tuple[list[str], list[np.ndarray]]:
    """`pair_ids` (default: those in every run, sorted) and each run's chosen and rejected log-probs
    aligned on them, float64: [chosen of run 0, rejected of run 0, chosen of run 1, ...]."""
    from prefsift.storage import runs

    frames = [runs.get_logps(con, r).to_pandas().set_index("pair_id") for r in run_ids]
    if pair_ids is None:
        pair_ids = sorted(set.intersection(*(set(f.index) for f in frames)))
    arrays = []
    for run_id, f in zip(run_ids, frames):
        missing = [p for p in pair_ids if p not in f.index]
        if missing:
            raise UserError(f"log-prob run {run_id} lacks {len(missing)} pairs (e.g. {missing[0]})")
        f = f.loc[pair_ids]
        arrays += [f["chosen_logp"].to_numpy(np.float64), f["rejected_logp"].to_numpy(np.float64)]
    return pair_ids, arrays


def score_dataset(
    db,
    dataset: str,
    ref: ModelSpec,
    policy: ModelSpec,
    val: ModelSpec | None = None,
    beta: float = ScoreConfig.beta,
    split: str | None = ScoreConfig.split,
    tok_config: TokenizeConfig | None = None,
    batch_tokens: int = ScoreConfig.batch_tokens,
    names: dict[str, str | None] | None = None,
) -> dict[str, str]:
    """metric -> score run_id for `irm`, `policy_loss` and, with `val`, `lossdiff` (and `val_loss`)."""
    from prefsift.scoring import metrics
    from prefsift.storage import connect, runs

    if not (beta > 0):
        raise UserError(f"--beta must be positive, got {beta}")
    tok_config = tok_config or TokenizeConfig()
    names = names or {}
    common = {"split": split, "tok_config": tok_config, "batch_tokens": batch_tokens}
    ref_run = ensure_logps(db, ref, dataset, name=names.get("ref"), role="reference", **common)
    pol_run = ensure_logps(db, policy, dataset, name=names.get("policy"), role="policy", **common)
    val_run = (
        ensure_logps(db, val, dataset, name=names.get("val"), role="validation", **common) if val else None
    )

    inputs = {"ref": ref_run, "policy": pol_run}
    if val_run:
        inputs["val"] = val_run
    wanted = ["irm", "policy_loss"] + (["lossdiff", "val_loss"] if val_run else [])

    def key(metric: str) -> tuple[str, dict]:
        cfg = {
            "metric": metric,
            "beta": float(beta),
            "logp_runs": inputs,
            "dataset": dataset,
            "split": split,
            "version": SCORE_VERSION,
        }
        return "sc-" + run_hash(cfg), cfg

    out = {m: key(m)[0] for m in wanted}
    if not Dist().main:
        return out
    with connect(db, read_only=True) as con:
        todo = [m for m in wanted if not runs.score_run_exists(con, out[m])]
        if not todo:
            return out
        logp_runs = [ref_run, pol_run] + ([val_run] if val_run else [])
        pair_ids, arr = aligned_logps(con, logp_runs)
        dropped = runs.fully_truncated_pairs(con, logp_runs)
    # Pairs with no response token left (the prompt filled max_length) score 0 by construction:
    # they would sit mid-band and be kept by every middle-band rule. TRL drops them; so do we.
    drop = set(dropped)
    keep = np.array([p not in drop for p in pair_ids], dtype=bool)
    pair_ids = [p for p, k in zip(pair_ids, keep) if k]
    arr = [a[keep] for a in arr]
    ref_c, ref_r, pol_c, pol_r = arr[:4]
    values = {
        "irm": lambda: metrics.irm(pol_c, pol_r, ref_c, ref_r, beta),
        "policy_loss": lambda: metrics.dpo_loss(metrics.margin(pol_c, pol_r, ref_c, ref_r, beta)),
        "lossdiff": lambda: metrics.lossdiff(pol_c, pol_r, arr[4], arr[5], ref_c, ref_r, beta),
        "val_loss": lambda: metrics.dpo_loss(metrics.margin(arr[4], arr[5], ref_c, ref_r, beta)),
    }
    with connect(db) as con:
        for m in todo:
            cfg = key(m)[1]
            cfg["models"] = {
                k: fingerprint(s) for k, s in (("ref", ref), ("policy", policy), ("val", val)) if s
            }
            cfg["tokenize"] = tok_config.to_dict()
            cfg["fully_truncated"] = {"n": len(dropped), "pair_ids": dropped}
            runs.save_score_run(
                con, out[m], dataset, m, cfg, pa.table({"pair_id": pair_ids, "value": values[m]()})
            )
    return out
