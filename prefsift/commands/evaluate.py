"""`prefsift evaluate MODEL`: DPO loss, reward accuracy and mean margin on held-out pairs."""

from __future__ import annotations

NAME = "evaluate"
HELP = "evaluate a model on the held-out 'eval' pairs (loss, reward accuracy, margin vs the reference)"


def add_arguments(p) -> None:
    p.add_argument("model", help="registered model name (theta, theta_val, trained-...), fingerprint or path")
    p.add_argument("--dataset", required=True)
    from prefsift.config import EvaluateConfig, option

    option(p, EvaluateConfig, "--split", choices=["eval", "val", "train"])
    p.add_argument("--reference", help="reference model (default: the one the model was trained against)")
    p.add_argument("--beta", type=float, help="default: the model's training beta")
    p.add_argument("--max-length", type=int, help="default: the model's training max_length")
    option(
        p, EvaluateConfig, "--batch-tokens", "padded tokens per forward batch (memory, not results)", type=int
    )
    option(p, EvaluateConfig, "--device", "auto | cpu | cuda | cuda:N")
    option(p, EvaluateConfig, "--dtype", "model dtype", choices=["float32", "bfloat16", "float64"])
    p.add_argument("--ledger", action="store_true", help="also print every evaluated model of the dataset")


def run(args):
    from prefsift.evaluate import evaluate, ledger_text

    out = evaluate(
        args.db,
        args.model,
        args.dataset,
        split=args.split,
        beta=args.beta,
        reference=args.reference,
        max_length=args.max_length,
        batch_tokens=args.batch_tokens,
        device=args.device,
        dtype=args.dtype,
    )
    if args.ledger:
        out["_text"] += "\n\n" + ledger_text(args.db, args.dataset)
    return out
