"""Evaluate a model on held-out pairs: DPO loss, reward accuracy and mean margin vs π_ref.

Per pair: m = β[(log π(y_w|x) − log π_ref(y_w|x)) − (log π(y_l|x) − log π_ref(y_l|x))],
loss = softplus(−m); reported are the means over the split and the share of m > 0 (TRL's
`rewards/accuracies`). The log-probs come from the scoring engine, cached per (model, data,
tokenization) through `prefsift.score.ensure_logps`, with TRL's tokenization and the model's
own training max_length, so an evaluation equals what a TRL eval pass would log.
The result is stored in `evaluations`, next to every other model of the dataset (ledger).
"""

from __future__ import annotations

import logging

import numpy as np

from prefsift.config import EvaluateConfig
from prefsift.errors import UserError

log = logging.getLogger(__name__)


def pair_margins(
    db,
    model: str,
    dataset: str,
    split: str = EvaluateConfig.split,
    beta: float | None = None,
    reference: str | None = None,
    max_length: int | None = None,
    batch_tokens: int = EvaluateConfig.batch_tokens,
    device: str = EvaluateConfig.device,
    dtype: str = EvaluateConfig.dtype,
) -> tuple[list[str], np.ndarray, dict]:
    """(pair ids sorted, each pair's margin m vs the reference, what was used): the per-pair
    numbers behind `evaluate` (paired comparisons of models need them pair by pair)."""
    from prefsift.models import resolve, resolve_reference
    from prefsift.score import aligned_logps, ensure_logps
    from prefsift.scoring.metrics import margin
    from prefsift.scoring.models import ModelSpec
    from prefsift.scoring.tokenize import TokenizeConfig
    from prefsift.storage import connect
    from prefsift.storage import pairs as pstore

    with connect(db, read_only=True) as con:
        n = pstore.count_pairs(con, dataset, split)
    if n == 0:
        raise UserError(f"dataset {dataset!r} has no {split!r} pairs (run `prefsift split` or pass --split)")
    pol = resolve(db, model)
    ref = resolve(db, reference) if reference else resolve_reference(db, pol)
    dpo = (pol.lineage.get("config") or {}).get("dpo") or {}  # how the model was trained
    if beta is None:
        beta = float(dpo.get("beta", 0.1))
    tok_config = TokenizeConfig(
        max_length=max_length if max_length is not None else dpo.get("max_length", 1024),
        truncation_mode=dpo.get("truncation_mode", "keep_start"),
    )
    pol_spec = ModelSpec(path=pol.path, adapter=pol.adapter, dtype=dtype, device=device)
    ref_spec = ModelSpec(path=ref.path, adapter=ref.adapter, dtype=dtype, device=device)

    # 1. log-probs of both models (cached by the scoring engine)
    pol_run = ensure_logps(db, pol_spec, dataset, split, tok_config, batch_tokens, pol.name or model, None)
    ref_run = pol_run  # the reference against itself: margins are 0, loss log 2
    if ref.model_id != pol.model_id:
        ref_run = ensure_logps(
            db, ref_spec, dataset, split, tok_config, batch_tokens, ref.name or "ref", "reference"
        )
    with connect(db, read_only=True) as con:
        ids, (pc, pr, rc, rr) = aligned_logps(con, [pol_run, ref_run])
    if not ids:
        raise UserError("no pairs have log-probs under both the model and the reference")

    m = margin(pc, pr, rc, rr, beta)
    used = {"model": pol.name or model, "model_id": pol.model_id, "reference": ref.model_id, "beta": beta}
    return ids, m, {**used, "tokenize": tok_config.to_dict(), "dtype": dtype}


def evaluate(db, model: str, dataset: str, split: str = EvaluateConfig.split, **options) -> dict:
    """The ledger row of `model` on `split`: DPO loss, reward accuracy and mean margin vs its
    reference. `options`: those of `pair_margins` (beta, reference, max_length, batch_tokens,
    device, dtype)."""
    from prefsift.scoring.metrics import dpo_loss, reward_accuracy
    from prefsift.storage import connect
    from prefsift.storage import training as tstore

    ids, m, used = pair_margins(db, model, dataset, split, **options)
    beta = used["beta"]

    # 2. the numbers TRL would log on this split
    loss = float(dpo_loss(m).mean())
    acc = reward_accuracy(m)
    mean_margin = float(m.mean())
    config = {k: used[k] for k in ("beta", "reference", "tokenize", "dtype")}
    with connect(db) as con:
        tstore.save_evaluation(
            con, used["model_id"], dataset, split, len(ids), loss, acc, mean_margin, config
        )
    text = (
        f"{used['model']} on {dataset}/{split} ({len(ids)} pairs, β={beta}): loss {loss:.4f}, "
        f"reward accuracy {acc:.3f}, mean margin {mean_margin:+.4f}"
    )
    return {
        "model": used["model"],
        "model_id": used["model_id"],
        "reference": used["reference"],
        "dataset": dataset,
        "split": split,
        "n_pairs": len(ids),
        "loss": loss,
        "reward_accuracy": acc,
        "mean_margin": mean_margin,
        "beta": beta,
        "_text": text,
    }


def ledger_text(db, dataset: str) -> str:
    from prefsift.storage import connect
    from prefsift.storage import training as tstore

    with connect(db, read_only=True) as con:
        df = tstore.ledger(con, dataset)
    if df.empty:
        return "(no evaluations yet)"
    cols = [
        "model",
        "role",
        "selection",
        "n_kept",
        "split",
        "n_pairs",
        "loss",
        "reward_accuracy",
        "accuracy_lo",
        "accuracy_hi",
        "mean_margin",
    ]
    return df[cols].to_string(index=False)
