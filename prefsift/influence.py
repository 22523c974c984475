"""`prefsift influence`: exact IF and TIF for every pair of a dataset, cached and resumable.

1. reference log-probs of the training and validation pairs: the scoring engine's cached runs;
2. g_val over the selected parameters (LoRA adapters, --params REGEX, or all), cached as
   safetensors under runs/<gval_id>/ (key: policy and reference fingerprints via their runs,
   validation content, beta, tokenization, parameter selection, dtype);
3. D_v log pi_theta(y|x) for every training sequence (JVP, FD or per-sequence gradients),
   streamed to Parquet shards under runs/<if_run_id>/ (atomic, one per batch): a killed run
   resumes where it stopped, and the DuckDB file is never held while computing;
4. IF, TIF (middle percentile band) and diagnostics committed in one short connection.

Several processes (`torchrun --nproc_per_node N -m prefsift influence ...`, or `accelerate launch`,
as `prefsift score`): each rank takes a slice of the validation pairs and the ranks' g_val parts
are summed by an all-reduce (weighted by their share of the pairs: the mean over all of them);
each rank then takes a slice of the training pairs for step 3 and writes its own shards; rank 0
merges and commits. The shards, the resume and the g_val cache are those of one process.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path

import numpy as np
import pyarrow as pa

from prefsift.config import InfluenceConfig
from prefsift.errors import UserError
from prefsift.progress import Progress
from prefsift.shards import Dist, durable_replace, read_shards, run_hash, write_shard
from prefsift.storage.paths import runs_dir

log = logging.getLogger(__name__)

SIDES = ("pair_id", "side")  # an influence shard holds one row per pair and side
SHARD_SCHEMA = pa.schema(
    [
        ("pair_id", pa.string()),
        ("side", pa.string()),
        ("logp", pa.float64()),
        ("dlogp", pa.float64()),
        ("method", pa.string()),
    ]
)


def _gval(cfg, model, params, tok, val_records, val_ref, key: dict, folder: Path, logp_fn, dist: Dist):
    """The query vector (g_val, or (H + damping I)^-1 g_val with --precondition cg) from the
    cache, or computed and cached as safetensors with its key."""
    import torch
    from safetensors.torch import load_file, save_file

    from prefsift.scoring import influence as I
    from prefsift.scoring.logprobs import pair_batches
    from prefsift.scoring.tokenize import TokenizeConfig, tokenize_pairs

    path = folder / "gval.safetensors"
    dist.barrier()  # every rank looks for the cache before rank 0 writes it
    if (
        path.exists()
        and (folder / "key.json").exists()
        and json.loads((folder / "key.json").read_text()) == key
    ):
        g = load_file(str(path))
        if set(g) == set(params):
            log.info("g_val loaded from %s", path)
            meta = json.loads((folder / "meta.json").read_text())
            return {k: g[k].to(params[k]) for k in params}, meta["val_loss"], True
    toks = tokenize_pairs(
        tok, val_records, TokenizeConfig(max_length=cfg.max_length, truncation_mode=cfg.truncation_mode)
    )
    device = next(iter(params.values())).device
    budget = max(min(cfg.grad_batch_tokens, cfg.batch_tokens), 2)
    mine = list(range(dist.rank, len(toks), dist.world))  # this rank's validation pairs

    def batches():
        # packed pairs (the prompt once) where the model takes them, else 2 padded rows per pair
        sub = [toks[i] for i in mine]
        for idx, b in pair_batches(model, sub, tok.pad_token_id, budget, device=device):
            at = [mine[i] for i in idx]
            yield b, torch.as_tensor(val_ref[0][at]), torch.as_tensor(val_ref[1][at])

    with Progress(len(toks), "influence: g_val", unit="pair", main=dist.main) as prog:
        g, loss = I.validation_gradient(
            logp_fn, params, batches(), len(mine), cfg.beta, on_batch=lambda k: prog.update(k * dist.world)
        )
    if dist.world > 1:  # the mean over all pairs = sum over ranks of (share of the pairs) x rank mean
        share = len(mine) / len(toks)
        names = list(g)
        summed = dist.all_reduce_sum([g[k] * share for k in names] + [torch.tensor(loss * share)])
        g, loss = dict(zip(names, summed[:-1])), float(summed[-1])
    meta = {"val_loss": loss, "n_val": len(toks), "gval_norm": I.flat_norm(g)}
    if cfg.precondition == "cg":  # v = (H + damping I)^-1 g_val: still one vector, same fast path
        hvp = I.validation_hvp(logp_fn, params, list(batches()), len(toks), cfg.beta)
        with Progress(cfg.cg_iters, "influence: CG", unit="iter") as prog:
            g, info = I.damped_cg(lambda u: (prog.update(1), hvp(u))[1], g, cfg.damping, cfg.cg_iters)
        meta["cg"] = info
    if not dist.main:
        dist.barrier()  # rank 0 writes the cache
        return g, loss, False
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".gval.tmp{os.getpid()}"
    save_file(
        {
            k: t.detach().float().cpu().contiguous() if t.dtype != torch.float64 else t.cpu()
            for k, t in g.items()
        },
        str(tmp),
    )
    (folder / "meta.json").write_text(json.dumps({**meta, "norm": I.flat_norm(g)}))
    (folder / "key.json").write_text(json.dumps(key, sort_keys=True))
    durable_replace(tmp, path)
    dist.barrier()
    return g, loss, False


def compute_influence(db, cfg: InfluenceConfig) -> dict:
    """Run (or resume) an influence run and store IF, TIF and diagnostics. Returns a summary."""

    import torch

    from prefsift.evidence import influence_diagnostics
    from prefsift.formats import pair_texts
    from prefsift.models import resolve_model
    from prefsift.score import aligned_logps, ensure_logps
    from prefsift.scoring import influence as I
    from prefsift.scoring import metrics
    from prefsift.scoring.logprobs import pair_batches
    from prefsift.scoring.models import fingerprint, load_model, load_tokenizer
    from prefsift.scoring.tokenize import TokenizeConfig, tokenize_pairs, tokenizer_signature
    from prefsift.storage import connect, pairs, runs

    tok_cfg = TokenizeConfig(max_length=cfg.max_length, truncation_mode=cfg.truncation_mode)
    dist = Dist()
    if dist.world > 1 and cfg.precondition:
        raise UserError("--precondition cg runs in one process: launch it without torchrun/accelerate")
    # 1. the data and the models (short read-only connection)
    with connect(db, read_only=True) as con:
        pairs.require_dataset(con, cfg.dataset)
        cols = ("pair_id", "kind", "prompt", "chosen", "rejected")
        train_t = pairs.get_pairs(con, cfg.dataset, split=cfg.split, columns=cols)
        val_t = pairs.get_pairs(con, cfg.dataset, split=cfg.val_split, columns=cols)
        train_hash = pairs.content_hash(con, cfg.dataset, cfg.split)
        val_hash = pairs.content_hash(con, cfg.dataset, cfg.val_split)
    if train_t.num_rows == 0:
        raise UserError(f"dataset {cfg.dataset!r} has no {cfg.split!r} pairs to score")
    if val_t.num_rows == 0:
        raise UserError(
            f"dataset {cfg.dataset!r} has no {cfg.val_split!r} pairs: g_val needs a validation split "
            "(assign one at ingest, or pass --val-split)"
        )
    pol_spec = resolve_model(db, cfg.policy, adapter=cfg.adapter, dtype=cfg.dtype, device=cfg.device)
    ref_spec = resolve_model(db, cfg.ref, dtype=cfg.dtype, device=cfg.device)
    # Forward-mode AD needs eager attention (or the math SDPA kernel, forced in scoring.influence).
    pol_spec = dataclasses.replace(pol_spec, attn_implementation=pol_spec.attn_implementation or "eager")
    pol_spec, ref_spec = dist.device(pol_spec), dist.device(ref_spec)

    # 2. reference log-probs (cached runs of the scoring engine)
    ref_name = None if Path(cfg.ref).exists() else cfg.ref  # register a name the user referred to
    ref_train, ref_val = (
        ensure_logps(
            db, ref_spec, cfg.dataset, split, tok_cfg, cfg.batch_tokens, name=ref_name, role="reference"
        )
        for split in (cfg.split, cfg.val_split)
    )
    # Pairs with no response token left (the prompt fills max_length) have IF = 0 by construction
    # and add nothing to g_val but a constant ln 2 to the loss: TRL drops them, so they get no IF
    # and no TIF flag (a rule then counts them as missing) and stay out of g_val.
    with connect(db, read_only=True) as con:
        dropped = runs.fully_truncated_pairs(con, [ref_train])
        val_dropped = set(runs.fully_truncated_pairs(con, [ref_val]))
    drop = set(dropped)
    train_t = train_t.filter(pa.array([p not in drop for p in train_t.column("pair_id").to_pylist()]))
    val_t = val_t.filter(pa.array([p not in val_dropped for p in val_t.column("pair_id").to_pylist()]))
    if train_t.num_rows == 0 or val_t.num_rows == 0:
        raise UserError(
            f"every {cfg.split if train_t.num_rows == 0 else cfg.val_split!r} pair's prompt fills "
            f"--max-length {cfg.max_length}: no response token is left to score (raise --max-length)"
        )
    train_ids = train_t.column("pair_id").to_pylist()
    with connect(db, read_only=True) as con:
        rc, rr = aligned_logps(con, [ref_train], train_ids)[1]
        vref = aligned_logps(con, [ref_val], val_t.column("pair_id").to_pylist())[1]

    # 3. the policy and its query vector
    tok = load_tokenizer(pol_spec)
    model = load_model(pol_spec)
    params = I.select_params(model, cfg.params)
    logp_fn = I.make_logp_fn(model)
    n_params = sum(t.numel() for t in params.values())
    gkey = {
        "policy": fingerprint(pol_spec),
        "ref_val_run": ref_val,
        "val": val_hash,
        "beta": cfg.beta,
        "tokenize": tok_cfg.to_dict(),
        "tokenizer": tokenizer_signature(tok),
        "params": run_hash(sorted(params)),
        "regex": cfg.params,
        "dtype": cfg.dtype,
        "fully_truncated": "dropped",  # g_val of the pairs TRL trains on (earlier runs kept them)
    }
    if cfg.precondition:
        gkey.update(precondition=cfg.precondition, damping=cfg.damping, cg_iters=cfg.cg_iters)
    gval_id = "gval-" + run_hash(gkey)
    val_records = [pair_texts(r) for r in val_t.to_pylist()]
    g, val_loss, g_cached = _gval(
        cfg, model, params, tok, val_records, vref, gkey, runs_dir(db) / gval_id, logp_fn, dist
    )

    # 4. directional derivatives of every training sequence, streamed to shards
    run_key = {"gval": gval_id, "train": train_hash, "ref_run": ref_train, "method": cfg.method}
    if cfg.method == "fd":
        run_key["fd_rel_step"] = cfg.fd_rel_step
    run_id = "if-" + run_hash(run_key)
    folder = runs_dir(db) / run_id
    if dist.main:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "config.json").write_text(json.dumps({**run_key, "dataset": cfg.dataset}, sort_keys=True))
    dist.barrier()
    done = read_shards(folder, SIDES)
    done_keys = (
        set(zip(done.column("pair_id").to_pylist(), done.column("side").to_pylist())) if done else set()
    )
    toks = tokenize_pairs(tok, [pair_texts(r) for r in train_t.to_pylist()], tok_cfg)
    # a pair is redone unless both of its sides are in the shards
    todo = [i for i, pid in enumerate(train_ids) if not {(pid, "chosen"), (pid, "rejected")} <= done_keys]
    n_seqs, n_resumed = 2 * len(train_ids), 2 * (len(train_ids) - len(todo))
    dist.barrier()  # every rank has read the shards before any rank writes one
    todo = todo[dist.rank :: dist.world]
    device = next(iter(params.values())).device
    step = I.fd_step(params, g, cfg.fd_rel_step) if cfg.method == "fd" else None
    # Packed pairs (prompt once, several pairs a row) for jvp and fd; the per-sequence gradient
    # reference slices rows, so it keeps one padded row per sequence.
    layout = "padded" if cfg.method == "grad" else "auto"
    batches = pair_batches(
        model, [toks[i] for i in todo], tok.pad_token_id, cfg.batch_tokens, layout, device=device
    )
    with Progress(n_seqs, "influence: D_v log-probs", unit="seq", initial=n_resumed, main=dist.main) as prog:
        for idx, f, df, used in I.stream_directional(logp_fn, params, g, batches, cfg.method, step=step):
            pids = [train_ids[todo[i]] for i in idx]
            shard = pa.table(
                {
                    "pair_id": pids + pids,  # outputs are [chosen of the batch's pairs; rejected]
                    "side": ["chosen"] * len(pids) + ["rejected"] * len(pids),
                    "logp": f.cpu().numpy(),
                    "dlogp": df.cpu().numpy(),
                    "method": [used] * (2 * len(pids)),
                },
                schema=SHARD_SCHEMA,
            )
            write_shard(folder, dist.rank, shard)  # whole or absent, never overwriting an earlier one
            prog.update(2 * len(pids) * dist.world)  # every rank advances at about the same pace
    del model
    dist.barrier()
    if not dist.main:  # rank 0 merges every rank's shards and commits
        return {"run_id": run_id, "rank": dist.rank}

    # 5. IF per pair, TIF, diagnostics
    allt = read_shards(folder, SIDES).to_pandas()
    wide = allt.pivot(index="pair_id", columns="side", values=["logp", "dlogp"]).loc[train_ids]
    pc, pr = wide[("logp", "chosen")].to_numpy(), wide[("logp", "rejected")].to_numpy()
    dc, dr = (torch.as_tensor(wide[("dlogp", side)].to_numpy()) for side in ("chosen", "rejected"))
    margin = metrics.margin(pc, pr, rc, rr, cfg.beta)  # the scoring maths, not a copy of it
    influence = I.influence_from_directional(torch.as_tensor(margin), dc, dr, cfg.beta).numpy()
    from prefsift.storage.engine import band, get_scores

    tif = band(influence, np.ones(len(influence), bool), *cfg.band)[2]  # the selection engine's band
    methods_used = sorted(set(allt["method"]))
    with connect(db, read_only=True) as con:
        # LossDiff of this θ and β only (not the newest run of whatever policy)
        latest = runs.latest_score_runs(con, cfg.dataset, policy=fingerprint(pol_spec), beta=cfg.beta)
        others = (
            get_scores(con, cfg.dataset, {"lossdiff": latest["lossdiff"]}) if "lossdiff" in latest else None
        )
    compare = {"irm": margin}  # IRM(d) = m_theta(d), from the same theta and pi_ref
    if others is not None:
        compare["lossdiff"] = others.set_index("pair_id").reindex(train_ids)["lossdiff"].to_numpy(np.float64)
    diag = influence_diagnostics(influence, compare, band=cfg.band)  # with chance levels (docs/METHOD.md)

    # 6. commit (one short write connection)
    config = {
        **run_key,
        "models": {"policy": fingerprint(pol_spec), "ref": fingerprint(ref_spec)},
        "policy": dataclasses.asdict(pol_spec),
        "policy_model_id": fingerprint(pol_spec),  # θ as registered (the run is θ's, not π_ref's)
        "ref": dataclasses.asdict(ref_spec),
        "beta": cfg.beta,
        "method_used": methods_used[0] if len(methods_used) == 1 else methods_used,
        "params_regex": cfg.params,
        "precondition": (
            {"method": cfg.precondition, "damping": cfg.damping, "cg_iters": cfg.cg_iters}
            if cfg.precondition
            else None
        ),
        "n_params": n_params,
        "val_split": cfg.val_split,
        "val_loss": val_loss,
        "tokenize": tok_cfg.to_dict(),
        "fd_step": step,
        "lossdiff_run": latest.get("lossdiff") if others is not None else None,
        "fully_truncated": {"n": len(dropped), "pair_ids": dropped, "n_val": len(val_dropped)},
    }
    tif_id = f"tif-{run_id[3:]}-{cfg.band[0]:g}-{cfg.band[1]:g}"
    ids = pa.array(train_ids, pa.string())
    with connect(db) as con:
        runs.save_score_run(
            con, run_id, cfg.dataset, "if", config, pa.table({"pair_id": ids, "value": influence})
        )
        runs.save_score_run(
            con,
            tif_id,
            cfg.dataset,
            "tif",
            {**config, "band": list(cfg.band), "if_run": run_id},
            pa.table({"pair_id": ids, "value": tif.astype(np.float64)}),
        )
        runs.save_diagnostics(con, run_id, diag, {"band": list(cfg.band), "irm": "margins of this run"})
    return {
        "run_id": run_id,
        "tif_run_id": tif_id,
        "gval_id": gval_id,
        "gval_cached": g_cached,
        "method": config["method_used"],
        "n_pairs": len(train_ids),
        "n_resumed_seqs": n_resumed,
        "n_params": n_params,
        "val_loss": val_loss,
        "n_tif": int(tif.sum()),
        "diagnostics": diag,
        "fully_truncated": config["fully_truncated"],
        "lossdiff_run": config["lossdiff_run"],
    }
