"""Log-prob pass: prefsift vs TRL's own reference-log-prob precompute, same model, same pairs.

    python benchmarks/scoring.py --n 512 --max-length 512 --dtypes float32 bfloat16

For each dtype: SmolLM2-135M-Instruct (the embedded model), HH-RLHF harmless test pairs
(prompt = the dialogue up to the last "\\n\\nAssistant:"), tokenized TRL's way. Timed:
- prefsift `pair_logps` (length-sorted token-budget batches), plain and with the prompt's KV
  cache shared between chosen and rejected (`share_prompt=True`);
- TRL 1.16 `DPOTrainer`: the time of its `_precompute_ref_logps` (what `precompute_ref_log_probs=True`
  runs), called on each chunk of pairs right next to prefsift's pass on the same chunk.
Tokens/s counts the real (unpadded) tokens of both sequences of every pair, the same numerator
for every method. Prints a Markdown table and writes it to benchmarks/results/scoring.md.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import gzip
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from machine import cpu_name  # noqa: E402  (benchmarks/ is on sys.path: the script's folder)

HH = Path("/work/shared/data/hh-rlhf-harmless-base-test.jsonl.gz")
MARK = "\n\nAssistant:"


def hh_pairs(path: Path, n: int) -> list[dict]:
    """prompt = shared dialogue up to and including the last '\\n\\nAssistant:'."""
    out = []
    with gzip.open(path, "rt") as f:
        for line in f:
            row = json.loads(line)
            cut = row["chosen"].rfind(MARK) + len(MARK)
            prompt = row["chosen"][:cut]
            if cut < len(MARK) or not row["rejected"].startswith(prompt):
                continue
            chosen, rejected = row["chosen"][cut:], row["rejected"][cut:]
            if chosen.strip() and rejected.strip() and chosen != rejected:
                out.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
            if len(out) >= n:
                break
    return out


def time_ours(model, tokenized, pad_id, batch_tokens, share_prompt):
    from scoring.logprobs import pair_logps

    t0 = time.perf_counter()
    out = pair_logps(model, tokenized, pad_id, batch_tokens=batch_tokens, share_prompt=share_prompt)
    return out, time.perf_counter() - t0


def trl_trainer(model, tok, pairs, max_length, batch_size):
    """A DPOTrainer over the pairs (tokenized by TRL); its precompute is called chunk by chunk."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(
        output_dir=tempfile.mkdtemp(prefix="prefsift-bench-trl-"),  # TRL writes nothing there
        use_cpu=True,
        bf16=False,
        max_length=max_length,
        precompute_ref_log_probs=False,  # we call its `_precompute_ref_logps` ourselves, per chunk
        precompute_ref_batch_size=batch_size,
        per_device_train_batch_size=batch_size,
        activation_checkpointing=False,
        report_to=[],
        dataloader_num_workers=0,
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=copy.deepcopy(model),
        args=args,
        train_dataset=Dataset.from_list(pairs),
        processing_class=tok,
    )
    trainer.ref_model = None  # its precompute then runs `trainer.model`: the very model prefsift times
    assert len(trainer.train_dataset) == len(pairs)
    return trainer


def time_trl(trainer, start, stop, batch_size):
    """TRL's own `DPOTrainer._precompute_ref_logps` on pairs [start, stop): (chosen, rejected, seconds)."""
    import numpy as np

    chunk = trainer.train_dataset.select(range(start, stop))
    t0 = time.perf_counter()
    res = trainer._precompute_ref_logps(chunk, f"bench{start}", batch_size)
    secs = time.perf_counter() - t0
    return (
        np.asarray(res["ref_chosen_logps"], np.float64),
        np.asarray(res["ref_rejected_logps"], np.float64),
        secs,
    )


def work_counts(tokenized, batch_tokens: int, trl_bs: int, config) -> list[dict]:
    """Deterministic work of each method: tokens through the transformer (padding included)
    and positions through the LM head, turned into GFLOPs with the usual 2·params per token.
    No timing noise: this is what the machine has to do, whatever its load."""
    from scoring.logprobs import length_batches

    seqs = [(len(t.prompt_ids), len(t.chosen_ids)) for t in tokenized] + [
        (len(t.prompt_ids), len(t.rejected_ids)) for t in tokenized
    ]
    real = sum(p + c for p, c in seqs)
    completion = sum(c for _, c in seqs)
    h, v = config.hidden_size, config.vocab_size
    kv = config.num_key_value_heads / config.num_attention_heads
    # q, o: h×h each; k, v: h×(h·kv) each; gated MLP: 3·h·I
    body_params = config.num_hidden_layers * (2 * h * h * (1 + kv) + 3 * h * config.intermediate_size)
    body, head = 2 * body_params, 2 * h * v  # FLOPs per token
    out = []
    # TRL: batches of trl_bs pairs in dataset order; chosen and rejected rows padded to the batch's longest;
    # on CPU its fused head scores every position.
    trl_tok = 0
    for s in range(0, len(tokenized), trl_bs):
        rows = [p + c for p, c in seqs[s : s + trl_bs]] + [
            p + c for p, c in seqs[len(tokenized) + s : len(tokenized) + s + trl_bs]
        ]
        trl_tok += len(rows) * max(rows)
    out.append({"method": "TRL DPOTrainer precompute", "body_tokens": trl_tok, "head_positions": trl_tok})
    lengths = [p + c for p, c in seqs]
    plain = sum(len(b) * max(lengths[i] for i in b) for b in length_batches(lengths, batch_tokens))
    out.append({"method": "prefsift pair_logps (plain)", "body_tokens": plain, "head_positions": completion})
    cost = [len(t.prompt_ids) + 2 * max(len(t.chosen_ids), len(t.rejected_ids)) for t in tokenized]
    shared = 0
    for b in length_batches(cost, batch_tokens):
        pmax = max(len(tokenized[i].prompt_ids) for i in b)
        cmax = max(max(len(tokenized[i].chosen_ids), len(tokenized[i].rejected_ids)) for i in b)
        shared += len(b) * pmax + 2 * len(b) * cmax
    out.append(
        {"method": "prefsift pair_logps (shared prompt)", "body_tokens": shared, "head_positions": completion}
    )
    for r in out:
        r["real_tokens"] = real
        r["gflops"] = (r["body_tokens"] * body + r["head_positions"] * head) / 1e9
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--batch-tokens", type=int, default=8192)
    ap.add_argument("--trl-batch-size", type=int, default=8)
    ap.add_argument("--chunk", type=int, default=8, help="pairs per interleaved timing chunk")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scoring.md"))
    ap.add_argument(
        "--work-only", action="store_true", help="only count the work of each method (no model run)"
    )
    args = ap.parse_args()

    import numpy as np
    import torch

    from prefsift.embedded import smollm2_path
    from scoring.models import ModelSpec, load_model, load_tokenizer
    from scoring.tokenize import TokenizeConfig, tokenize_pairs

    path = str(smollm2_path())
    pairs = hh_pairs(HH, args.n * 2)
    spec = ModelSpec(path=path, dtype="float32", device="cpu")
    tok = load_tokenizer(spec)
    cfg = TokenizeConfig(max_length=args.max_length)
    tokenized = tokenize_pairs(tok, pairs, cfg)
    # TRL drops pairs whose prompt alone fills max_length: leave them out for both.
    keep = [i for i, t in enumerate(tokenized) if len(t.prompt_ids) < args.max_length][: args.n]
    pairs = [pairs[i] for i in keep]
    t0 = time.perf_counter()
    tokenized = tokenize_pairs(tok, pairs, cfg)
    tok_s = time.perf_counter() - t0
    n_tokens = sum(len(t.prompt_ids) * 2 + len(t.chosen_ids) + len(t.rejected_ids) for t in tokenized)
    prompt_share = sum(len(t.prompt_ids) * 2 for t in tokenized) / n_tokens
    n_trunc = sum(t.truncated for t in tokenized)
    from transformers import AutoConfig

    work = work_counts(tokenized, args.batch_tokens, args.trl_batch_size, AutoConfig.from_pretrained(path))
    wlines = [
        f"Work for these {len(pairs)} pairs (batch_tokens {args.batch_tokens}, TRL batch size {args.trl_batch_size}):",
        "",
        "| method | transformer tokens (with padding) | LM-head positions | GFLOPs | × TRL work |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for w in work:
        wlines.append(
            f"| {w['method']} | {w['body_tokens']:,} | {w['head_positions']:,} | {w['gflops']:,.0f} | "
            f"{work[0]['gflops'] / w['gflops']:.2f} |"
        )
    print("\n".join(wlines), flush=True)
    if args.work_only:
        Path(args.out).write_text("\n".join(wlines) + "\n")
        return
    print(
        f"{len(pairs)} pairs, {n_tokens} tokens (prompt share {prompt_share:.0%}), {n_trunc} truncated; "
        f"tokenization {tok_s:.2f}s; torch threads {torch.get_num_threads()}",
        flush=True,
    )

    rows = []
    ref32 = None
    for dtype in args.dtypes:
        model = load_model(ModelSpec(path=path, dtype=dtype, device="cpu"))
        pad = tok.pad_token_id
        time_ours(model, tokenized[:4], pad, args.batch_tokens, False)  # warm-up (allocator, kernels)
        trainer = trl_trainer(model, tok, pairs, args.max_length, args.trl_batch_size)
        # The machine is shared and its load swings: run the three methods on the same chunk of
        # pairs back to back (rotating their order), so each sees about the same load.
        t_ours = t_shared = t_trl = 0.0
        res = {"plain": [], "shared": [], "trl_c": [], "trl_r": []}
        for k, start in enumerate(range(0, len(pairs), args.chunk)):
            stop = min(start + args.chunk, len(pairs))
            steps = ["plain", "shared", "trl"]
            steps = steps[k % 3 :] + steps[: k % 3]
            for step in steps:
                if step == "trl":
                    c, r, t = time_trl(trainer, start, stop, args.trl_batch_size)
                    res["trl_c"].append(c)
                    res["trl_r"].append(r)
                    t_trl += t
                else:
                    o, t = time_ours(model, tokenized[start:stop], pad, args.batch_tokens, step == "shared")
                    res[step].append(o)
                    if step == "plain":
                        t_ours += t
                    else:
                        t_shared += t
            print(
                f"[{dtype}] pairs {stop}/{len(pairs)}: plain {t_ours:.1f}s shared {t_shared:.1f}s TRL {t_trl:.1f}s",
                flush=True,
            )
        ours = {
            key: np.concatenate([o[key] for o in res["plain"]]) for key in ("chosen_logp", "rejected_logp")
        }
        shared = {
            key: np.concatenate([o[key] for o in res["shared"]]) for key in ("chosen_logp", "rejected_logp")
        }
        trl_c, trl_r = np.concatenate(res["trl_c"]), np.concatenate(res["trl_r"])
        del trainer
        ours_v = np.concatenate([ours["chosen_logp"], ours["rejected_logp"]])
        shared_v = np.concatenate([shared["chosen_logp"], shared["rejected_logp"]])
        trl_v = np.concatenate([trl_c, trl_r])
        if dtype == "float32":
            ref32 = ours_v

        def vs32(v, ref=ref32):
            return float(np.abs(v - ref).max()) if ref is not None else float("nan")

        for name, secs, v in (
            ("TRL DPOTrainer precompute", t_trl, trl_v),
            ("prefsift pair_logps (plain)", t_ours, ours_v),
            ("prefsift pair_logps (shared prompt)", t_shared, shared_v),
        ):
            rows.append(
                {
                    "dtype": dtype,
                    "method": name,
                    "seconds": secs,
                    "tokens_per_s": n_tokens / secs,
                    "speedup": t_trl / secs,
                    "max_abs_diff_vs_trl": float(np.abs(v - trl_v).max()),
                    "max_abs_diff_vs_fp32": vs32(v),
                }
            )
        del model

    lines = [
        "## Scoring: log-prob pass, prefsift vs TRL",
        "",
        f"- Date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC. Machine: {cpu_name()}, "
        f"{os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), no GPU. "
        f"Load average at the end: {os.getloadavg()[0]:.1f} (other engineers' jobs shared the CPU), so timings are noisy.",
        f"- Command: `python benchmarks/scoring.py --n {args.n} --max-length {args.max_length} "
        f"--dtypes {' '.join(args.dtypes)} --batch-tokens {args.batch_tokens} --trl-batch-size {args.trl_batch_size} "
        f"--chunk {args.chunk}` (the three methods run back to back on each chunk of {args.chunk} pairs, order rotated)",
        f"- Data: {len(pairs)} HH-RLHF harmless-base test pairs, {n_tokens:,} real tokens over chosen + rejected "
        f"(prompts {prompt_share:.0%} of them), max_length {args.max_length} ({n_trunc} pairs truncated). "
        f"Model: SmolLM2-135M-Instruct (embedded). Tokenization (ours): {tok_s:.2f} s, not in the timings.",
        f"- TRL 1.16: a `DPOTrainer` over the same pairs, timing its own `_precompute_ref_logps` (the code "
        f"`precompute_ref_log_probs=True` runs) with batch size {args.trl_batch_size}, chunk by chunk. prefsift: `pair_logps(batch_tokens="
        f"{args.batch_tokens})`. bfloat16 = weights loaded in bf16 for both (TRL's bf16 autocast is refused on CPU).",
        "",
        "| dtype | method | seconds | tokens/s | × TRL | max abs Δ vs TRL | max abs Δ vs prefsift fp32 |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['dtype']} | {r['method']} | {r['seconds']:.1f} | {r['tokens_per_s']:,.0f} | {r['speedup']:.2f} | "
            f"{r['max_abs_diff_vs_trl']:.2e} | {r['max_abs_diff_vs_fp32']:.2e} |"
        )
    text = "\n".join(lines + [""] + wlines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    (Path(args.out).with_suffix(".json")).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
