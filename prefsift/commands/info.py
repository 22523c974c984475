"""`prefsift info`: datasets, pair and quarantine counts, models and runs."""

from __future__ import annotations

NAME = "info"
HELP = "list datasets, quarantine counts, models, score runs, selections and training runs"


def add_arguments(p) -> None:
    p.add_argument("--dataset", help="only this dataset")
    p.add_argument(
        "--quarantine",
        action="store_true",
        help="also list quarantined rows (first 50, of --dataset or of all)",
    )


def _tables(con, dataset):
    from prefsift.storage import pairs, runs, selections, training

    out = {
        "datasets": pairs.list_datasets(con),
        "quarantine": pairs.quarantine_summary(con, dataset),
        "models": runs.list_models(con),
        "logp_runs": runs.list_logp_runs(con, dataset),
        "score_runs": runs.list_score_runs(con, dataset),
        "selections": selections.list_selections(con, dataset),
        "training_runs": training.list_runs(con, dataset),
        "evaluations": training.get_evaluations(con, dataset),
    }
    if dataset:
        out["datasets"] = out["datasets"][out["datasets"]["name"] == dataset]
    return out


def run(args):
    from prefsift.storage import connect

    with connect(args.db, read_only=True) as con:
        tables = _tables(con, args.dataset)
        if args.quarantine:
            from prefsift.storage import pairs

            tables["quarantined_rows"] = pairs.get_quarantine(con, args.dataset, limit=50)
    lines = []
    for name, df in tables.items():
        lines.append(f"== {name} ({len(df)})")
        if len(df):
            with __import__("pandas").option_context("display.width", 200, "display.max_colwidth", 60):
                lines.append(df.to_string(index=False))
    return {"_text": "\n".join(lines), **{k: v.to_dict(orient="records") for k, v in tables.items()}}
