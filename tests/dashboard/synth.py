"""A synthetic scored database for the dashboard's tests and its 1M-pair benchmark.

Seeded only through storage functions (insert_pairs, save_score_run, register_model), the
way real runs write: two policy models (theta_a, theta_b) each with IRM and LossDiff runs,
an IF run and its TIF band under theta_a, a 10% label-noise flag (noisy pairs get lower
IRM/LossDiff, as swapped pairs do), and a few pairs whose text holds HTML/script payloads.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa

XSS_PROMPT = 'Is this safe? <script>alert("xss-prompt")</script>'
XSS_CHOSEN = "No. <img src=x onerror=\"alert('xss-img')\"> **bold** [link](javascript:alert(1))"
XSS_REJECTED = "<b>Yes</b> <script>document.body.innerHTML='pwned'</script> $x^2$"

VOCAB = np.array(
    (
        "the a an is are was what how why who can could should would will do does i you he she it we they "
        "please thank help sure answer question good bad best right wrong python code function return list "
        "capital france paris city water boil sky blue light cat dog animal eat food sleep write poem story "
        "short long summary text word sentence reply refuse safe harm data model train test value"
    ).split()
)


def _texts(rng: np.random.Generator, n: int, lo: int, hi: int) -> list[str]:
    lengths = rng.integers(lo, hi, size=n)
    words = rng.integers(0, len(VOCAB), size=int(lengths.sum()))
    joined = VOCAB[words]
    out, start = [], 0
    for k in lengths:
        out.append(" ".join(joined[start : start + k]))
        start += k
    return out


def make_db(path, n: int = 400, seed: int = 0, dataset: str = "synth", payloads: bool = True) -> dict:
    """Create a scored database at `path`. Returns {dataset, runs: {name: run_id}, pair_ids, xss_pair}."""
    from prefsift.storage import connect
    from prefsift.storage.pairs import insert_pairs, upsert_dataset
    from prefsift.storage.runs import register_model, save_score_run

    rng = np.random.default_rng(seed)
    prompts = _texts(rng, n, 5, 20)
    chosen = _texts(rng, n, 8, 30)
    rejected = _texts(rng, n, 8, 30)
    # Row i gets its own token so that every pair is distinct (content-hash ids).
    prompts = [f"q{i} {t}" for i, t in enumerate(prompts)]
    xss_row = 3 if payloads and n > 3 else None
    if xss_row is not None:
        prompts[xss_row], chosen[xss_row], rejected[xss_row] = XSS_PROMPT, XSS_CHOSEN, XSS_REJECTED
    ids = [hashlib.sha1(p.encode()).hexdigest()[:16] for p in prompts]
    split = np.where(np.arange(n) % 10 == 9, "val", "train")
    noise = rng.random(n) < 0.1
    pairs = pa.table(
        {
            "pair_id": ids,
            "row_idx": np.arange(n, dtype=np.int64),
            "split": split,
            "kind": ["standard"] * n,
            "prompt": prompts,
            "chosen": chosen,
            "rejected": rejected,
            "noise": noise,
            "meta": ["{}"] * n,
        }
    )
    # Latent quality q: IRM and LossDiff are noisy views of it; theta_b is a different model.
    q = rng.normal(size=n) - 1.5 * noise
    irm_a = 0.8 * q + 0.6 * rng.normal(size=n)
    loss_a = 0.02 * (0.9 * q + 0.45 * rng.normal(size=n))
    if_a = 0.01 * (q + 0.5 * rng.normal(size=n))
    lo, hi = np.percentile(if_a, [10, 90])
    tif_a = ((if_a > lo) & (if_a < hi)).astype(float)
    q_b = 0.6 * q + 0.8 * rng.normal(size=n)
    irm_b = 0.8 * q_b + 0.6 * rng.normal(size=n)
    loss_b = 0.02 * (0.9 * q_b + 0.45 * rng.normal(size=n))
    models = {"theta_a": "m-theta-a", "theta_b": "m-theta-b", "ref": "m-ref"}
    specs = {
        "irm_a": ("irm", irm_a, "theta_a"),
        "lossdiff_a": ("lossdiff", loss_a, "theta_a"),
        "if_a": ("if", if_a, "theta_a"),
        "tif_a": ("tif", tif_a, "theta_a"),
        "irm_b": ("irm", irm_b, "theta_b"),
        "lossdiff_b": ("lossdiff", loss_b, "theta_b"),
    }
    runs = {}
    with connect(path) as con:
        upsert_dataset(con, dataset, "synthetic", "standard")
        insert_pairs(con, dataset, pairs)
        for name, mid in models.items():
            register_model(
                con, mid, f"/models/{name}", name=name, role="reference" if name == "ref" else "policy"
            )
        # theta_b's runs are written last, so "latest run per metric" is theta_b for irm/lossdiff.
        for name, (metric, values, policy) in specs.items():
            run_id = f"{metric}-{policy}-{seed}"
            # The shapes prefsift writes: `score` names models by fingerprint, `influence` by spec.
            if metric in ("if", "tif"):
                cfg = {"beta": 0.1, "policy": {"path": f"/models/{policy}"}, "ref": {"path": "/models/ref"}}
            else:
                cfg = {"beta": 0.1, "models": {"policy": models[policy], "ref": models["ref"]}}
            save_score_run(con, run_id, dataset, metric, cfg, pa.table({"pair_id": ids, "value": values}))
            runs[name] = run_id
        _ledger(con, dataset, models)
    return {
        "dataset": dataset,
        "runs": runs,
        "pair_ids": ids,
        "xss_pair": ids[xss_row] if xss_row is not None else None,
    }


def _ledger(con, dataset: str, models: dict) -> None:
    """A finished training run and held-out evaluations, so the ledger has rows to show."""
    from prefsift.storage.runs import register_model
    from prefsift.storage.training import finish_run, save_evaluation, start_run

    register_model(con, "m-trained", "/models/trained", name="trained-ldirm", role="trained")
    start_run(
        con, "tr-1", "train", dataset, "ldirm-10-90", models["theta_a"], "/models/trained", {"epochs": 2}
    )
    finish_run(con, "tr-1", "done", output_model="m-trained")
    for mid, loss, acc in (
        (models["ref"], 0.693, 0.50),
        (models["theta_a"], 0.61, 0.64),
        ("m-trained", 0.55, 0.71),
    ):
        save_evaluation(con, mid, dataset, "val", 40, loss, acc, 0.1 * (1 - loss), {})
