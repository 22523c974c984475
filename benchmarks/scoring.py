"""Log-prob pass: prefsift (packed, padded) vs TRL's own reference-log-prob precompute, same model, same pairs.

    python benchmarks/scoring.py --n 512 --max-length 512 --dtypes float32 [--time-n 96] [--data ../shared/data]

For each dtype: SmolLM2-135M-Instruct (the embedded model), HH-RLHF harmless test pairs
(prompt = the dialogue up to the last "\\n\\nAssistant:"), tokenized TRL's way. Timed, in ONE run,
chunk by chunk with the order of the methods rotated (the machine is shared):
- prefsift `pair_logps(layout="packed")`: each pair one sequence (prompt once, then chosen, then
  rejected behind a mask that keeps them apart), several pairs a row (scoring/packing.py);
- prefsift `pair_logps(layout="padded")`: each side its own row, length-sorted token-budget batches;
- TRL 1.16 `DPOTrainer`: its `_precompute_ref_logps` (what `precompute_ref_log_probs=True` runs).
The work (tokens through the transformer, padding included) is counted for all `--n` pairs; the
timing runs on the first `--time-n` of them (all by default). Tokens/s counts the real tokens of
both sequences of every pair (prompt twice), the same numerator for every method. Prints a Markdown
report and writes it to benchmarks/results/scoring.md (and the rows as .json).
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
from pathlib import Path

import _common as C


def time_ours(model, tokenized, pad_id, batch_tokens, layout, row_tokens):
    from prefsift.scoring.logprobs import pair_logps

    with C.Stopwatch() as sw:
        out = pair_logps(
            model, tokenized, pad_id, batch_tokens=batch_tokens, layout=layout, row_tokens=row_tokens
        )
    return out, sw.wall


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
    with C.Stopwatch() as sw:
        res = trainer._precompute_ref_logps(chunk, f"bench{start}", batch_size)
    return (
        np.asarray(res["ref_chosen_logps"], np.float64),
        np.asarray(res["ref_rejected_logps"], np.float64),
        sw.wall,
    )


METHODS = {
    "trl": "TRL DPOTrainer precompute",
    "padded": "prefsift pair_logps (padded)",
    "packed": "prefsift pair_logps (packed)",
}


def work_counts(tokenized, batch_tokens: int, row_tokens: int, trl_bs: int, config) -> list[dict]:
    """Deterministic work of each method: tokens through the transformer (padding included)
    and positions through the LM head, turned into GFLOPs with the usual 2·params per token
    (attention scores left out). No timing noise: this is what the machine has to do."""
    from prefsift.scoring.logprobs import length_batches
    from prefsift.scoring.packing import packed_tokens, unit_length

    seqs = [(len(t.prompt_ids), len(t.chosen_ids)) for t in tokenized] + [
        (len(t.prompt_ids), len(t.rejected_ids)) for t in tokenized
    ]
    real = sum(p + c for p, c in seqs)
    unique = sum(unit_length(t) for t in tokenized)
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
    out.append({"method": METHODS["trl"], "body_tokens": trl_tok, "head_positions": trl_tok})
    lengths = [p + c for p, c in seqs]
    plain = sum(len(b) * max(lengths[i] for i in b) for b in length_batches(lengths, batch_tokens))
    out.append({"method": METHODS["padded"], "body_tokens": plain, "head_positions": completion})
    packed = packed_tokens(tokenized, batch_tokens, row_tokens)
    out.append({"method": METHODS["packed"], "body_tokens": packed, "head_positions": completion})
    for r in out:
        r["real_tokens"] = real
        r["unique_tokens"] = unique
        r["gflops"] = (r["body_tokens"] * body + r["head_positions"] * head) / 1e9
    return out


def work_table(work: list[dict], title: str) -> list[str]:
    lines = [
        title,
        "",
        "| method | transformer tokens (with padding) | LM-head positions | GFLOPs | × less work than TRL (tokens) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for w in work:
        lines.append(
            f"| {w['method']} | {w['body_tokens']:,} | {w['head_positions']:,} | {w['gflops']:,.0f} | "
            f"{work[0]['body_tokens'] / w['body_tokens']:.2f} |"
        )
    lines += [
        "",
        f"Real tokens (prompt counted twice, as two sequences): {work[0]['real_tokens']:,}; "
        f"unique tokens (prompt once + chosen + rejected, the floor): {work[0]['unique_tokens']:,} "
        f"({work[0]['body_tokens'] / work[0]['unique_tokens']:.2f}× less than TRL).",
    ]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=512, help="pairs whose work is counted")
    ap.add_argument("--time-n", type=int, default=None, help="time the first N of them (default: all)")
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--dtypes", nargs="+", default=["float32"])
    ap.add_argument("--batch-tokens", type=int, default=8192)
    ap.add_argument("--row-tokens", type=int, default=None, help="packed row length (default: pair_logps')")
    ap.add_argument("--trl-batch-size", type=int, default=8)
    ap.add_argument("--chunk", type=int, default=32, help="pairs per interleaved timing chunk")
    C.add_data_arg(ap)
    ap.add_argument("--out", default=str(C.RESULTS / "scoring.md"))
    ap.add_argument(
        "--work-only", action="store_true", help="only count the work of each method (no model run)"
    )
    args = ap.parse_args()

    import numpy as np
    import torch

    from prefsift.embedded import smollm2_path
    from prefsift.scoring.logprobs import ROW_TOKENS
    from prefsift.scoring.models import ModelSpec, load_model, load_tokenizer
    from prefsift.scoring.tokenize import TokenizeConfig, tokenize_pairs

    row_tokens = args.row_tokens or ROW_TOKENS
    load_start = C.load()
    path = str(smollm2_path())
    pairs = C.hh_pairs(Path(args.data) / C.HH_FILE, args.n * 2)
    spec = ModelSpec(path=path, dtype="float32", device="cpu")
    tok = load_tokenizer(spec)
    cfg = TokenizeConfig(max_length=args.max_length)
    tokenized = tokenize_pairs(tok, pairs, cfg)
    # TRL drops pairs whose prompt alone fills max_length: leave them out for both.
    keep = [i for i, t in enumerate(tokenized) if len(t.prompt_ids) < args.max_length][: args.n]
    pairs = [pairs[i] for i in keep]
    with C.Stopwatch() as sw:
        tokenized = tokenize_pairs(tok, pairs, cfg)
    tok_s = sw.wall
    from transformers import AutoConfig

    mcfg = AutoConfig.from_pretrained(path)
    budget = (
        f"batch_tokens {args.batch_tokens}, row_tokens {row_tokens}, TRL batch size {args.trl_batch_size}"
    )
    work = work_counts(tokenized, args.batch_tokens, row_tokens, args.trl_batch_size, mcfg)
    wlines = work_table(work, f"Work for all {len(pairs)} pairs ({budget}):")
    print("\n".join(wlines), flush=True)
    if args.work_only:
        Path(args.out).write_text("\n".join(wlines) + "\n")
        return
    n_time = min(args.time_n or len(pairs), len(pairs))
    pairs, tokenized = pairs[:n_time], tokenized[:n_time]
    n_tokens = sum(len(t.prompt_ids) * 2 + len(t.chosen_ids) + len(t.rejected_ids) for t in tokenized)
    prompt_share = sum(len(t.prompt_ids) * 2 for t in tokenized) / n_tokens
    n_trunc = sum(t.truncated for t in tokenized)
    print(
        f"timing {n_time} pairs, {n_tokens} tokens (prompt share {prompt_share:.0%}), {n_trunc} truncated; "
        f"tokenization {tok_s:.2f}s; torch threads {torch.get_num_threads()}; load {load_start}",
        flush=True,
    )

    rows = []
    for dtype in args.dtypes:
        model = load_model(ModelSpec(path=path, dtype=dtype, device="cpu"))
        pad = tok.pad_token_id
        for layout in ("packed", "padded"):  # warm-up (allocator, kernels)
            time_ours(model, tokenized[:4], pad, args.batch_tokens, layout, row_tokens)
        trainer = trl_trainer(model, tok, pairs, args.max_length, args.trl_batch_size)
        # The machine is shared and its load swings: run the methods on the same chunk of pairs
        # back to back (rotating their order), so each sees about the same load.
        secs = dict.fromkeys(METHODS, 0.0)
        res: dict[str, list] = {m: [] for m in METHODS}
        for k, start in enumerate(range(0, len(pairs), args.chunk)):
            stop = min(start + args.chunk, len(pairs))
            steps = list(METHODS)
            steps = steps[k % 3 :] + steps[: k % 3]
            for step in steps:
                if step == "trl":
                    c, r, t = time_trl(trainer, start, stop, args.trl_batch_size)
                    res[step].append(np.concatenate([c, r]))
                else:
                    o, t = time_ours(model, tokenized[start:stop], pad, args.batch_tokens, step, row_tokens)
                    res[step].append(np.concatenate([o["chosen_logp"], o["rejected_logp"]]))
                secs[step] += t
            print(
                f"[{dtype}] pairs {stop}/{len(pairs)}: "
                + " ".join(f"{m} {secs[m]:.1f}s" for m in METHODS)
                + f" (load {C.load()})",
                flush=True,
            )
        del trainer
        values = {m: np.concatenate(res[m]) for m in METHODS}
        # chunked work: what the timed runs did (each chunk packed / batched on its own)
        chunk_work = dict.fromkeys(METHODS, 0)
        for start in range(0, len(pairs), args.chunk):
            cw = work_counts(
                tokenized[start : start + args.chunk],
                args.batch_tokens,
                row_tokens,
                args.trl_batch_size,
                mcfg,
            )
            for m, w in zip(METHODS, cw):
                chunk_work[m] += w["body_tokens"]
        for m, name in METHODS.items():
            rows.append(
                {
                    "dtype": dtype,
                    "method": name,
                    "transformer_tokens": chunk_work[m],
                    "seconds": secs[m],
                    "tokens_per_s": n_tokens / secs[m],
                    "transformer_tokens_per_s": chunk_work[m] / secs[m],
                    "speedup": secs["trl"] / secs[m],
                    "max_abs_diff_vs_trl": float(np.abs(values[m] - values["trl"]).max()),
                }
            )
        del model
    load_end = C.load()

    subset = n_time < len(keep)
    lines = [
        "## Scoring: log-prob pass, prefsift (packed, padded) vs TRL",
        "",
        f"- {C.about(load_start, torch=True, load_at_end=load_end)} No GPU. Seconds are noisy on a shared "
        "machine; the work counts are exact.",
        f"- Command: `python benchmarks/scoring.py --n {args.n} --time-n {n_time} --max-length {args.max_length} "
        f"--dtypes {' '.join(args.dtypes)} --batch-tokens {args.batch_tokens} --row-tokens {row_tokens} "
        f"--trl-batch-size {args.trl_batch_size} --chunk {args.chunk}` (the methods run back to back on each "
        f"chunk of {args.chunk} pairs, order rotated).",
        f"- Data: HH-RLHF harmless-base test pairs, max_length {args.max_length}. Work counted on all "
        f"{len(keep)} pairs; timed on the first {n_time}"
        + (" (a subset: the full timing does not fit this machine's load)" if subset else "")
        + f": {n_tokens:,} real tokens (prompts {prompt_share:.0%} of them), {n_trunc} pairs truncated. "
        f"Model: SmolLM2-135M-Instruct (embedded). Tokenization: {tok_s:.2f} s for all pairs, not timed.",
        f"- TRL 1.16: a `DPOTrainer` over the same pairs, timing its own `_precompute_ref_logps` (the code "
        f"`precompute_ref_log_probs=True` runs) with batch size {args.trl_batch_size}. prefsift: "
        f"`pair_logps(batch_tokens={args.batch_tokens}, row_tokens={row_tokens}, layout=...)`, "
        "each chunk packed or batched on its own.",
        "",
        f"Timed ({n_time} pairs; transformer tokens = what each method ran for these chunks, padding included; "
        "tokens/s = real tokens / seconds, the same numerator for every method):",
        "",
        "| dtype | method | transformer tokens | seconds | tokens/s | transformer tokens/s | × TRL (time) "
        "| max abs Δ vs TRL |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(
            f"| {r['dtype']} | {r['method']} | {r['transformer_tokens']:,} | {r['seconds']:.1f} | "
            f"{r['tokens_per_s']:,.0f} | {r['transformer_tokens_per_s']:,.0f} | {r['speedup']:.2f} | "
            f"{r['max_abs_diff_vs_trl']:.2e} |"
        )
    text = "\n".join(lines + [""] + wlines) + "\n"
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    meta = {"work": work, "rows": rows, "load_start": load_start, "load_end": load_end, "cpu": C.cpu_name()}
    Path(args.out).with_suffix(".json").write_text(json.dumps(meta, indent=2))


if __name__ == "__main__":
    main()
