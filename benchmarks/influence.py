"""Exact influence (IF) for every pair on SmolLM2-135M + LoRA, CPU: cost and fidelity.

All in one run, on the same model object and the same length-sorted batches:
  IRM scoring    log-probs of the training pairs under pi_ref and theta (forward only)
  g_val          gradient of the mean validation DPO loss over the LoRA parameters
  IF by JVP      forward-mode directional derivatives (exact), eager attention
  IF by FD       central finite differences in float32
  IF by grads    one autograd gradient per sequence dotted with g_val (reference)
  theta_val      1 epoch of DPO (Adam) from theta on the validation pairs -> LossDiff
  diagnostics    Pearson/Spearman of IF with LossDiff and IRM, TIF overlaps (docs/METHOD.md)

theta = SmolLM2-135M-Instruct + a LoRA adapter (r 16, all linear layers) whose B matrices
are randomly initialised (nonzero, std --lora-std), not trained: a stand-in for the warm-up
policy that a CPU run cannot afford. pi_ref = the same model with the adapter disabled.

Layouts as prefsift runs them (--layout packed, the default): IRM scoring as `prefsift score`
(the adapter merged into θ, --irm-attn attention, pairs packed: prompt once, several pairs a
row, scoring/packing.py); g_val, the JVP and FD as `prefsift influence` (PEFT θ, eager
attention, the same packed batches); the per-sequence gradients slice rows, so they keep one
padded row per sequence. --layout padded runs everything in padded rows (the earlier layout).

    python benchmarks/influence.py --data ../shared/data --pairs 128 --val 64 --out benchmarks/results/influence.md
"""

from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import sys
from pathlib import Path

import _common as C
import numpy as np
import torch
import torch.nn.functional as F

from prefsift.evidence import influence_diagnostics
from prefsift.scoring import diagnostics as D
from prefsift.scoring import influence as I
from prefsift.scoring.logprobs import ROW_TOKENS, collate, pair_batches, pair_logps
from prefsift.scoring.packing import packed_tokens
from prefsift.scoring.tokenize import TokenizeConfig, tokenize_pairs

HH_FILE = C.HH_FILE  # in --data


CPU: dict[str, float] = {}  # process CPU seconds per step: robust to other jobs sharing the cores


RSS: dict[str, tuple[float, float]] = {}  # (resident GiB after the step, peak GiB so far)


def rss_gib() -> tuple[float, float]:
    import resource

    with open("/proc/self/statm") as f:
        now = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30
    return now, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def timed(T: dict, key: str, fn):
    """Run fn, record wall seconds in T[key], process CPU seconds in CPU[key], memory in RSS[key]."""
    with C.Stopwatch() as sw:
        out = fn()
    T[key], CPU[key] = sw.wall, sw.cpu
    RSS[key] = rss_gib()
    print(
        f"  [{key}] wall {T[key]:.1f} s, cpu {CPU[key]:.1f} s, RSS {RSS[key][0]:.2f} GiB (peak {RSS[key][1]:.2f})",
        flush=True,
    )
    return out


def directional_all(logp_fn, params, v, batches, n, method, limit=None):
    """(f, D_v f) of every training sequence, laid out [chosen of the n pairs; rejected of them],
    over pair batches (`pair_batches`: each batch's outputs [chosen of its k pairs; rejected])."""
    f = np.full(2 * n, np.nan)
    df = np.full(2 * n, np.nan)
    for idx, fb, dfb, _ in I.stream_directional(
        logp_fn, params, v, batches[:limit], method=method, fallback=False
    ):
        idx, k = np.asarray(idx), len(idx)
        f[idx], f[n + idx] = fb[:k].numpy(), fb[k:].numpy()
        df[idx], df[n + idx] = dfb[:k].numpy(), dfb[k:].numpy()
    return f, df


def attention_timings(T, base, logp_fn, params, g, batches, n, args) -> None:
    """JVP on the first batches with eager attention, then with SDPA (math kernel forced)."""
    for impl in ("eager", "sdpa"):
        base.set_attn_implementation(impl)
        timed(
            T,
            f"jvp_{impl}_sub",
            lambda: directional_all(logp_fn, params, g, batches, n, "jvp", args.attn_batches),
        )
    base.set_attn_implementation("eager")


def pairs_if(f, df, ref_c, ref_r, beta, n):
    m = beta * ((f[:n] - ref_c) - (f[n:] - ref_r))
    return -beta / (1 + np.exp(m)) * (df[:n] - df[n:]), m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    C.add_data_arg(ap)
    ap.add_argument(
        "--layout",
        default="packed",
        choices=["packed", "padded"],
        help="batches of IRM scoring, g_val, JVP and FD: packed pairs (what prefsift runs) or padded rows",
    )
    ap.add_argument(
        "--irm-attn",
        default="sdpa",
        choices=["sdpa", "eager"],
        help="attention of the IRM forwards (prefsift score loads the model's default, sdpa)",
    )
    ap.add_argument("--pairs", type=int, default=512)
    ap.add_argument("--val", type=int, default=64)
    ap.add_argument("--max-length", type=int, default=512)
    ap.add_argument("--batch-tokens", type=int, default=4096)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--lora-std", type=float, default=0.02)
    ap.add_argument("--val-lr", type=float, default=5e-4)
    ap.add_argument("--val-batch", type=int, default=8)
    ap.add_argument(
        "--attn-batches", type=int, default=2, help="batches for the eager-vs-SDPA JVP timing (0: none)"
    )
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="write the results section to this markdown file")
    ap.add_argument("--json-out", default=None, help="also write the raw figures as JSON here")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="only IRM, g_val and JVP, and the attention timing (no FD/grad/theta_val)",
    )
    ap.add_argument(
        "--model", default=None, help="model folder (default: the embedded SmolLM2-135M-Instruct)"
    )
    ap.add_argument(
        "--adapter",
        default=None,
        help="a trained LoRA adapter folder as theta (e.g. a `prefsift warmup` output); "
        "default: a random LoRA (B ~ N(0, lora_std^2))",
    )
    ap.add_argument(
        "--reading-from-json",
        metavar="JSON",
        help="only print the 'Reading' section (per-pair costs, targets) of a finished run's --json-out",
    )
    args = ap.parse_args()
    if args.reading_from_json:
        raw = json.loads(Path(args.reading_from_json).read_text())
        print("\n".join(reading(raw["cpu"], args.pairs, args.val, raw["fidelity"])))
        return
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from prefsift.embedded import smollm2_path

    # 1. data: pairs that fit max_length untruncated; validation from the far end of the file
    model_dir = args.model or smollm2_path()
    tok = AutoTokenizer.from_pretrained(model_dir)
    cfg = TokenizeConfig(max_length=args.max_length)
    rows = C.hh_pairs(Path(args.data) / HH_FILE, keep_blank=True)  # as the recorded results drew them
    toks = tokenize_pairs(tok, rows, cfg)
    fit = [i for i, t in enumerate(toks) if not t.truncated and t.chosen_ids and t.rejected_ids]
    train_i, val_i = fit[: args.pairs], fit[::-1][: args.val]
    assert not set(train_i) & set(val_i), "not enough pairs for disjoint train/val"
    train = [toks[i] for i in train_i]
    val = [toks[i] for i in val_i]
    n = len(train)
    seqs = [t.chosen_seq() for t in train] + [t.rejected_seq() for t in train]
    lengths = [len(p) + len(c) for p, c in seqs]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    work = {
        "padded_real": sum(lengths),
        "packed": packed_tokens(train, args.batch_tokens, ROW_TOKENS),
    }
    print(
        f"{n} train pairs ({sum(lengths)} tokens, mean seq {np.mean(lengths):.0f}; packed: "
        f"{work['packed']} tokens through the transformer), {len(val)} val pairs"
    )

    # 2. theta = base + LoRA with random nonzero B; pi_ref = adapter disabled
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager")
    lcfg = LoraConfig(
        r=args.lora_r, lora_alpha=2 * args.lora_r, lora_dropout=0.0, target_modules="all-linear"
    )
    if args.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(base, args.adapter).eval()
    else:
        model = get_peft_model(base, lcfg).eval()
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, args.lora_std)
    for p in model.parameters():
        p.requires_grad_(False)
    params = I.select_params(model)
    print(f"LoRA params: {sum(t.numel() for t in params.values()):,} in {len(params)} tensors")
    logp_fn = I.make_logp_fn(model)
    T: dict[str, float] = {}

    def batches(pairs, layout=None):
        return list(pair_batches(model, pairs, pad, args.batch_tokens, layout or args.layout))

    # 3. IRM scoring alone, as `prefsift score` runs it: pi_ref's and theta's log-probs of the
    # training pairs, theta with its adapter merged (one plain forward), --irm-attn attention
    def score_with(m):
        m.set_attn_implementation(args.irm_attn)
        return pair_logps(m, train, pad, args.batch_tokens, layout=args.layout)

    # pi_ref: the base weights with the LoRA layers removed; theta: the adapter merged (copies: the
    # PEFT model itself stays as `prefsift influence` loads it)
    irm_model = copy.deepcopy(model).unload()
    ref = timed(T, "irm_ref", lambda: score_with(irm_model))
    irm_model = copy.deepcopy(model).merge_and_unload()
    pol = timed(T, "irm_policy", lambda: score_with(irm_model))
    irm_model = None  # free it before the forward-mode passes
    T["irm"] = T["irm_ref"] + T["irm_policy"]
    irm = args.beta * (
        (pol["chosen_logp"] - ref["chosen_logp"]) - (pol["rejected_logp"] - ref["rejected_logp"])
    )
    print(f"IRM scoring: {T['irm']:.1f} s (ref {T['irm_ref']:.1f} + policy {T['irm_policy']:.1f})")

    # 4. g_val (reference log-probs of the validation pairs are part of its cost)
    def gval():
        with model.disable_adapter():
            vref = pair_logps(model, val, pad, args.batch_tokens, layout=args.layout)
        vb = [
            (b, torch.tensor(vref["chosen_logp"][idx]), torch.tensor(vref["rejected_logp"][idx]))
            for idx, b in batches(val)
        ]
        return I.validation_gradient(logp_fn, params, vb, len(val), args.beta), vb

    ((g, val_loss), vb) = timed(T, "gval", gval)
    print(f"g_val: {T['gval']:.1f} s, val loss {val_loss:.4f}, |g| {I.flat_norm(g):.3e}")

    nan = float("nan")
    nan_seq = np.full(2 * n, nan)
    skipped = (("fd", "grad", "theta_val") if args.quick else ()) + (
        ("jvp_eager_sub", "jvp_sdpa_sub") if args.attn_batches <= 0 else ()
    )
    for k in skipped:
        T[k] = CPU[k] = nan
    # 5. attention implementation for forward AD: eager vs SDPA (math backend), a few batches
    train_batches = batches(train)
    if args.attn_batches > 0:
        attention_timings(T, base, logp_fn, params, g, train_batches, n, args)

    # 6. IF three ways over every training sequence
    (fj, dj) = timed(T, "jvp", lambda: directional_all(logp_fn, params, g, train_batches, n, "jvp"))
    print(f"IF by JVP: {T['jvp']:.1f} s")
    ff = dfd = fg = dg = nan_seq
    if not args.quick:
        (ff, dfd) = timed(T, "fd", lambda: directional_all(logp_fn, params, g, train_batches, n, "fd"))
        print(f"IF by FD: {T['fd']:.1f} s")
        # the per-sequence gradients slice rows: one padded row per sequence, as prefsift runs them
        (fg, dg) = timed(
            T, "grad", lambda: directional_all(logp_fn, params, g, batches(train, "padded"), n, "grad")
        )
        print(f"IF by per-sequence gradients: {T['grad']:.1f} s")
    if_j, m_j = pairs_if(fj, dj, ref["chosen_logp"], ref["rejected_logp"], args.beta, n)
    if_f, _ = pairs_if(ff, dfd, ref["chosen_logp"], ref["rejected_logp"], args.beta, n)
    if_g, _ = pairs_if(fg, dg, ref["chosen_logp"], ref["rejected_logp"], args.beta, n)
    fid = {
        "pearson_jvp_grad": D.pearson(if_j, if_g),
        "pearson_fd_grad": D.pearson(if_f, if_g),
        "relerr_jvp_grad": float(np.linalg.norm(if_j - if_g) / np.linalg.norm(if_g)),
        "relerr_fd_grad": float(np.linalg.norm(if_f - if_g) / np.linalg.norm(if_g)),
        "max_abs_margin_jvp_vs_irm": float(np.abs(m_j - irm).max()),
    }
    print(json.dumps(fid, indent=1))

    # 7. theta_val: 1 epoch of DPO from theta on the validation pairs (Adam, LoRA only) -> LossDiff
    def fit_val():
        ps = {k: t.clone().requires_grad_(True) for k, t in params.items()}
        opt = torch.optim.Adam(list(ps.values()), lr=args.val_lr)
        perm = torch.randperm(len(val)).tolist()
        with model.disable_adapter():
            vref = pair_logps(model, val, pad, args.batch_tokens)
        for s in range(0, len(val), args.val_batch):
            idx = perm[s : s + args.val_batch]
            sub = [val[i] for i in idx]
            b = collate([t.chosen_seq() for t in sub] + [t.rejected_seq() for t in sub], pad)
            pc, pr = I.split_pairs(logp_fn(ps, b))
            m = I.dpo_margin(
                pc,
                pr,
                torch.tensor(vref["chosen_logp"][idx]).float(),
                torch.tensor(vref["rejected_logp"][idx]).float(),
                args.beta,
            )
            opt.zero_grad()
            F.softplus(-m).mean().backward()
            opt.step()
        with torch.no_grad():
            for k, t in ps.items():
                dict(model.named_parameters())[k].copy_(t)
        return pair_logps(model, train, pad, args.batch_tokens)

    # params are views of the model's weights: fit_val overwrites them, so keep theta to restore it
    saved = {k: t.clone() for k, t in params.items()}
    pv = {"chosen_logp": nan_seq[:n], "rejected_logp": nan_seq[:n]}
    if not args.quick:
        pv = timed(T, "theta_val", fit_val)  # its training batches stay padded rows
    with torch.no_grad():
        for k, t in dict(model.named_parameters()).items():
            if k in saved:
                t.copy_(saved[k])
    m_val = args.beta * (
        (pv["chosen_logp"] - ref["chosen_logp"]) - (pv["rejected_logp"] - ref["rejected_logp"])
    )
    lossdiff = np.logaddexp(0, -irm) - np.logaddexp(0, -m_val)
    print(f"theta_val fit + log-probs: {T.get('theta_val', nan):.1f} s")

    # 8. diagnostics (IF by JVP vs the cheap scores)
    diag = influence_diagnostics(if_j, {"lossdiff": lossdiff, "irm": irm})
    print(json.dumps(diag, indent=1))
    for d in (T, CPU):
        d["irm"] = d["irm_ref"] + d["irm_policy"]
        d["if_total_cached_ref"] = d["gval"] + d["jvp"]
        d["if_total_with_ref"] = d["gval"] + d["jvp"] + d["irm_ref"]
    if args.json_out:
        raw = {
            "wall": T,
            "cpu": CPU,
            "fidelity": fid,
            "rss_gib": RSS,
            "diagnostics": diag,
            "val_loss": val_loss,
            "tokens": work,
            "n": n,
            "n_val": len(val),
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "load_avg": os.getloadavg(),
            "argv": sys.argv[1:],
        }
        Path(args.json_out).write_text(json.dumps(raw, indent=1))
    report(args, n, len(val), work, T, fid, diag, val_loss)


def reading(cpu: dict, n: int, n_val: int, fid: dict) -> list[str]:
    """Per-pair CPU costs and the issue's three targets, from the process CPU seconds of a run."""
    fwd = cpu["irm"] / 2 / n  # one forward over a pair (chosen + rejected) under one model
    lines = [
        "### Reading: cost per pair and the targets (process CPU seconds, this run)",
        "",
        "| per unit | CPU s |",
        "| --- | ---: |",
        f"| IRM scoring, per training pair (pi_ref and theta forwards) | {cpu['irm'] / n:.2f} |",
    ]
    for k, label in (
        ("jvp", "JVP (forward-mode D_v, LoRA tangents only), per training pair"),
        ("fd", "central FD (two forwards), per training pair"),
        ("grad", "per-sequence gradients (chosen + rejected), per training pair"),
    ):
        if cpu.get(k) == cpu.get(k):  # absent or nan: the step did not run (--quick)
            lines.append(f"| {label} | {cpu[k] / n:.2f} ({cpu[k] / n / fwd:.1f} forwards) |")
    lines.append(f"| g_val, per validation pair | {cpu['gval'] / n_val:.2f} |")
    ratio = cpu["if_total_cached_ref"] / cpu["irm"]
    lines += [
        "",
        "| target | measured here | met? |",
        "| --- | --- | --- |",
        f"| IF for all pairs <= 2x IRM scoring | {ratio:.2f}x at {n} pairs / {n_val} val (g_val + JVP, reference "
        f"log-probs reused); {cpu['if_total_with_ref'] / cpu['irm']:.2f}x with the reference forward too | "
        f"{'yes' if ratio <= 2 else 'no'} |",
    ]
    if cpu.get("grad") == cpu.get("grad"):  # absent or nan: not run
        j, f = cpu["jvp"] / cpu["grad"], cpu.get("fd", float("nan")) / cpu["grad"]
        lines.append(
            f"| IF no slower than per-pair gradients | JVP {j:.2f}x the per-sequence gradients' time; FD {f:.2f}x | "
            f"{'yes' if j <= 1 else 'no'} for the JVP, {'yes' if f <= 1 else 'no'} for FD |"
        )
    if fid and fid.get("pearson_jvp_grad") == fid.get("pearson_jvp_grad"):
        lines.append(
            f"| Pearson >= 0.999 between the two IFs | JVP vs gradients 1 - {1 - fid['pearson_jvp_grad']:.1e} "
            f"(relative error {fid['relerr_jvp_grad']:.1e}); FD vs gradients 1 - {1 - fid['pearson_fd_grad']:.1e} | "
            f"{'yes' if fid['pearson_jvp_grad'] >= 0.999 else 'no'} |"
        )
    return lines + [""]


def report(args, n, n_val, work, T, fid, diag, val_loss) -> None:
    theta = (
        f"theta = + the trained LoRA adapter `{args.adapter}`"
        if args.adapter
        else f"theta = + LoRA r={args.lora_r} on all linear layers, B random N(0, {args.lora_std}^2) (not trained)"
    )

    def row(label, k):
        return f"| {label} | {T[k]:.1f} | {T[k] / T['irm']:.2f} | {CPU[k]:.1f} | {CPU[k] / CPU['irm']:.2f} |"

    lines = [
        f"## Exact influence (IF/TIF): cost and fidelity on CPU ({args.layout} layout)",
        "",
        f"- {C.about(torch=True)} No GPU.",
        f"- Command: `python benchmarks/influence.py {' '.join(sys.argv[1:])}`",
        f"- Model: {args.model or 'SmolLM2-135M-Instruct'} fp32; {theta}; pi_ref = the base weights. "
        f"IRM scoring as `prefsift score` runs it: the adapter merged into theta, {args.irm_attn} attention; "
        f"g_val, JVP and FD as `prefsift influence` runs them: the PEFT model, eager attention. beta = {args.beta}.",
        f"- Data: {n} HH-RLHF harmless test pairs (`{HH_FILE}` in --data; prompt = dialogue up to "
        f"the last Assistant turn, untruncated at max_length {args.max_length}; {work['padded_real']} tokens over "
        f"{2 * n} sequences), {n_val} other HH pairs as validation.",
        "- Layout: "
        + (
            f"**packed** (scoring/packing.py: each pair one sequence, the prompt once, several pairs a row of "
            f"<= {ROW_TOKENS} tokens, batches of <= {args.batch_tokens} tokens; {work['packed']} tokens through "
            f"the transformer per pass over the training pairs, against {work['padded_real']} real tokens in "
            "padded rows) for IRM, g_val, JVP and FD; the per-sequence gradients in padded rows."
            if args.layout == "packed"
            else f"padded rows (one per sequence, length-sorted, batches of <= {args.batch_tokens} tokens)."
        ),
        "",
        "| step | wall s | x IRM | process CPU s | x IRM (CPU) |",
        "| --- | ---: | ---: | ---: | ---: |",
        row("IRM scoring (log-probs under pi_ref + theta)", "irm"),
        row(f"g_val (ref log-probs of val + backward over {n_val} val pairs)", "gval"),
        row("D_v log-probs by JVP (forward-mode, eager)", "jvp"),
        row("D_v log-probs by central FD (float32)", "fd"),
        row("D_v log-probs by per-sequence gradients", "grad"),
        row("**IF for all pairs, JVP, ref log-probs reused from IRM** (g_val + JVP)", "if_total_cached_ref"),
        row("IF for all pairs, JVP, from scratch (+ ref forward)", "if_total_with_ref"),
        row("theta_val (1 epoch DPO on val) + its log-probs, for LossDiff", "theta_val"),
        "",
        f"Eager vs SDPA (math backend) for the JVP, first {args.attn_batches} batches: eager {T['jvp_eager_sub']:.1f} s "
        f"(CPU {CPU['jvp_eager_sub']:.1f} s), SDPA-math {T['jvp_sdpa_sub']:.1f} s (CPU {CPU['jvp_sdpa_sub']:.1f} s). "
        "Wall times depend on what else shares the 2 cores (load average above); process CPU time is the steadier figure. "
        "Peak RSS of the benchmark process: "
        + ", ".join(f"{k} {v[1]:.1f} GiB" for k, v in RSS.items())
        + ".",
        "",
        f"Fidelity against per-sequence gradients: Pearson(JVP, grad) = {fid['pearson_jvp_grad']:.6f}, "
        f"relative L2 error {fid['relerr_jvp_grad']:.2e}; Pearson(FD, grad) = {fid['pearson_fd_grad']:.6f}, "
        f"relative error {fid['relerr_fd_grad']:.2e}. The JVP primal equals the IRM margins to "
        f"{fid['max_abs_margin_jvp_vs_irm']:.1e}. Mean validation loss at theta {val_loss:.4f}.",
        "",
        "| diagnostic (IF by JVP) | this run | paper |",
        "| --- | ---: | ---: |",
        f"| Pearson(IF, LossDiff) | {diag['pearson_lossdiff']:.3f} | 0.77 |",
        f"| Pearson(IF, IRM) | {diag['pearson_irm']:.3f} | 0.67 |",
        f"| Spearman(IF, LossDiff) / (IF, IRM) | {diag['spearman_lossdiff']:.3f} / {diag['spearman_irm']:.3f} | - |",
        f"| overlap LossDiff band with TIF | {diag['overlap_lossdiff']:.3f} | 0.66-0.70 |",
        f"| overlap IRM band with TIF | {diag['overlap_irm']:.3f} | 0.60-0.70 |",
        f"| overlap LossDiff-IRM with TIF | {diag['overlap_lossdiff_irm']:.3f} | 0.73-0.78 |",
        "",
        "Bands 10-90 percentiles for TIF, LossDiff and IRM. Caveats: "
        + (
            "theta is the given adapter (what it was trained on, and whether these pairs were among its "
            "training data, is the caller's to state)"
            if args.adapter
            else "theta is a random LoRA, not a DPO warm-up"
        )
        + ", and theta_val is 1 epoch of Adam on the validation pairs from it, so the diagnostics describe this "
        "setup, not the paper's (Llama/Mistral after a real warm-up).",
        "",
        *reading(CPU, n, n_val, fid),
    ]
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
