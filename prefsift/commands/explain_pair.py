"""`prefsift explain-pair`: per-token log-probs of one pair under the policy and the reference."""

from __future__ import annotations

NAME = "explain-pair"
HELP = "per-token log-probs of a pair's chosen and rejected responses under policy and reference"


def add_arguments(p) -> None:
    p.add_argument("--dataset", required=True)
    p.add_argument("--pair", required=True, help="pair_id")
    p.add_argument("--policy", required=True, help="path, hub id or registered name")
    p.add_argument("--ref", required=True, help="path, hub id or registered name")
    p.add_argument("--policy-adapter")
    p.add_argument("--ref-adapter")
    from prefsift.commands.score import DTYPES
    from prefsift.config import ScoreConfig, option

    option(p, ScoreConfig, "--beta", "DPO β of the margin printed", type=float)
    p.add_argument(
        "--max-length",
        help="tokens per sequence (default: the policy's scoring run's, so the tokens match its scores; "
        f"else {ScoreConfig.max_length})",
    )
    option(
        p, ScoreConfig, "--truncation-mode", "which end a long pair keeps", choices=["keep_start", "keep_end"]
    )
    option(p, ScoreConfig, "--dtype", "model dtype", choices=DTYPES)
    option(p, ScoreConfig, "--device", "auto | cpu | cuda | cuda:N")


def explain(db, dataset: str, pair_id: str, policy, ref, tok_config=None) -> dict:
    """Compute and store the token rows; returns {run_id, ref_run, sides: {side: {...}}}.

    The rows are keyed by the log-prob runs the pair's scores came from (found by model
    fingerprint), and tokenized as those runs were unless `tok_config` says otherwise, so the
    inspector shows the tokens behind the scores and can name the policy."""

    from prefsift.config import ScoreConfig
    from prefsift.errors import UserError
    from prefsift.formats import pair_texts
    from prefsift.score import logp_run_key
    from prefsift.scoring.logprobs import pair_token_logps, use_packed
    from prefsift.scoring.models import fingerprint, load_model, load_tokenizer
    from prefsift.scoring.tokenize import TokenizeConfig, tokenize_pairs, tokenizer_signature
    from prefsift.storage import connect, pairs, tokens
    from prefsift.storage.runs import scoring_logp_run

    with connect(db, read_only=True) as con:
        pairs.require_dataset(con, dataset)
        row = pairs.get_pair(con, dataset, pair_id)
        chash = pairs.content_hash(con, dataset, row["split"]) if row else ""
        scored = {
            who: scoring_logp_run(con, fingerprint(spec), dataset, row["split"]) if row else None
            for who, spec in (("policy", policy), ("ref", ref))
        }
    if row is None:
        raise UserError(f"no pair {pair_id!r} in dataset {dataset!r}")
    if tok_config is None:
        pol_run = scored["policy"]
        tok_config = (
            TokenizeConfig.from_dict(pol_run[1]["tokenize"])
            if pol_run
            else TokenizeConfig(max_length=ScoreConfig.max_length)
        )
    row = {**row, **pair_texts(row)}
    tok = load_tokenizer(policy)
    tp = tokenize_pairs(tok, [row], tok_config)[0]
    seqs = [tp.chosen_seq(), tp.rejected_seq()]

    def key(spec, who: str) -> str:
        # The log-prob run the scores came from when it was tokenized the same way, else the id
        # `prefsift score` would give it: the dashboard names the model through logp_runs.
        run = scored[who]
        if run and TokenizeConfig.from_dict(run[1].get("tokenize") or {}) == tok_config:
            return run[0]
        sig = tokenizer_signature(tok if spec is policy else load_tokenizer(spec))
        return logp_run_key(spec, dataset, row["split"], chash, tok_config, sig)[0]

    # The scoring pass itself, as `prefsift score` runs it (an adapter merged, pairs packed where
    # the model takes them), each counted token's log-prob kept: the rows sum to the pair's
    # cached sequence log-probs.
    values, layouts = {}, {}
    for who, spec in (("policy", policy), ("ref", ref)):
        model = load_model(spec, merge_adapter=bool(spec.adapter))
        layouts[who] = "packed" if use_packed(model, "auto") else "padded"
        values[who] = pair_token_logps(model, [tp], tok.pad_token_id)[0]
        del model
    run_id, ref_run = key(policy, "policy"), key(ref, "ref")
    out_rows, sides = [], {}
    for k, side in enumerate(("chosen", "rejected")):
        prompt, completion = seqs[k]
        ids = completion if prompt else completion[1:]  # the counted tokens
        pieces = [tok.decode([i]) for i in ids]
        out_rows.append(
            {"side": side, "tokens": pieces, "logps": values["policy"][k], "ref_logps": values["ref"][k]}
        )
        sides[side] = {
            "tokens": pieces,
            "logp": float(values["policy"][k].sum()),
            "ref_logp": float(values["ref"][k].sum()),
        }
    with connect(db) as con:
        tokens.save_token_logps(con, run_id, ref_run, pair_id, out_rows)
    return {
        "run_id": run_id,
        "ref_run": ref_run,
        "truncated": tp.truncated,
        "layout": layouts,
        "sides": sides,
        "rows": out_rows,
    }


def run(args):
    from prefsift.commands.score import model_arg, tok_config_from
    from prefsift.scoring import metrics
    from prefsift.storage import resolve_db_path

    db = resolve_db_path(args.db)
    pol, _ = model_arg(db, args.policy, args.policy_adapter, args)
    ref, _ = model_arg(db, args.ref, args.ref_adapter, args)
    tok_config = None if args.max_length is None else tok_config_from(args)
    res = explain(db, args.dataset, args.pair, pol, ref, tok_config)
    s = res["sides"]
    m = float(
        metrics.margin(
            s["chosen"]["logp"],
            s["rejected"]["logp"],
            s["chosen"]["ref_logp"],
            s["rejected"]["ref_logp"],
            args.beta,
        )
    )
    lines = [
        f"pair {args.pair}: margin (IRM) {m:.4f} at beta={args.beta}; stored as token run {res['run_id']}"
    ]
    for r in res["rows"]:
        worst = sorted(zip(r["logps"] - r["ref_logps"], r["tokens"]))[:5]
        lines.append(
            f"  {r['side']:8s} {len(r['tokens'])} tokens, log-ratio {float((r['logps'] - r['ref_logps']).sum()):.3f}; "
            "lowest: " + ", ".join(f"{t!r}:{v:.2f}" for v, t in worst)
        )
    summary = {k: v for k, v in res.items() if k != "rows"}
    summary["margin"] = m
    return {"_text": "\n".join(lines), **summary}
