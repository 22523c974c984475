"""Exact influence on a GPU: IF by JVP vs per-sequence gradients vs IRM scoring, tokens/s.

A randomly initialised causal LM of a real shape (Llama-3.2-1B: 1.24B parameters; or
SmolLM2-135M), bf16, one batch of R rows x T tokens (a P-token prompt, the rest completion),
laid out as R/2 pairs [chosen; rejected] exactly as prefsift scores them. All timings use the
scoring engine's own functions (scoring.logprobs.sequence_logps, scoring.influence.*), so they
are what `prefsift score` / `prefsift influence` run:

  IRM scoring     two forwards (pi_ref and theta), LM head only at completion positions
  naive forward   the peer: full-vocabulary logits + log_softmax + gather (what a plain
                  `model(...).logits` reference, e.g. TRL's, computes)
  g_val           forward + backward of the DPO loss of the batch (one validation batch)
  IF by JVP       forward-mode directional derivatives (dual tensors), math SDPA / eager
  IF by FD        central finite differences in the model's dtype (two forwards)
  IF by grads     one autograd backward per sequence, dotted with v (the reference)

over the LoRA adapter (r 16, all linear layers; the default in prefsift) and over every
parameter (full fine-tuning). Each time is the median of --reps runs after a warm-up, with
CUDA events; peak memory from torch.cuda.max_memory_allocated.

The packed section (--layouts packed; scoring/packing.py, what `prefsift score` and `prefsift
influence` run by default) takes the same pairs packed, each pair one sequence with its prompt
once, and times the scoring pass (a plain forward: θ's LoRA is merged for scoring, so π_ref and θ
cost one base forward each) with its tokens/s and model FLOP utilisation (MFU: the useful FLOPs
of the forward, counted from the batch, over the time, against the bf16 dense peak and against
a bf16 matmul timed in the same run), and the IF passes on the packed batch (g_val, JVP, FD)
with their cost relative to IRM scoring.

    python benchmarks/influence_gpu.py --shape llama-1b --rows 16 --seq 1024 --out DIR
    python benchmarks/influence_gpu.py --shape llama-1b --modes lora --layouts packed --rows 32 --out DIR
    python benchmarks/influence_gpu.py --shape tiny --device cpu --rows 4 --seq 64 --prompt 16   # smoke test
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import statistics
import sys
from pathlib import Path

import _common as C
import torch
import torch.autograd.forward_ad as fwAD

from prefsift.scoring import attention_jvp as A
from prefsift.scoring import influence as I
from prefsift.scoring.logprobs import ROW_TOKENS, sequence_logps
from prefsift.scoring.packing import pack, pack_rows, unit_length
from prefsift.scoring.tokenize import TokenizedPair

BF16_PEAK_TFLOPS = {"H100": 989.4, "H200": 989.4}  # dense bf16, the vendor's datasheet (SXM)

SHAPES = {
    # Llama-3.2-1B (1.24B parameters, tied embeddings)
    "llama-1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=True,
        rope_theta=500000.0,
    ),
    # SmolLM2-135M-Instruct (the demo model)
    "smollm2": dict(
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        vocab_size=49152,
        tie_word_embeddings=True,
        rope_theta=100000.0,
    ),
    "tiny": dict(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=512,
        tie_word_embeddings=True,
    ),
}


def build(shape: str, dtype: torch.dtype, device: str, attn: str):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(**SHAPES[shape], max_position_embeddings=8192)
    torch.manual_seed(0)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            model = LlamaForCausalLM(cfg)
    finally:
        torch.set_default_dtype(prev)
    model.set_attn_implementation(attn)
    return model.eval()


def add_lora(model, r: int, std: float, adapter_dtype: str = "fp32"):
    """LoRA r on all linear layers. PEFT keeps adapters of a bf16 model in float32 by default
    (autocast_adapter_dtype), which is what `prefsift` loads; "base" keeps the base dtype."""
    from peft import LoraConfig, get_peft_model

    pm = get_peft_model(
        model,
        LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", lora_dropout=0.0),
        autocast_adapter_dtype=adapter_dtype == "fp32",
    )
    if adapter_dtype == "base":
        pm = pm.to(next(model.parameters()).dtype)
    g = torch.Generator(device="cpu").manual_seed(1)
    for n, p in pm.named_parameters():
        if "lora_B" in n:  # nonzero B: theta differs from pi_ref, as after a warm-up
            with torch.no_grad():
                p.copy_(torch.randn(p.shape, generator=g).mul_(std).to(p))
    return pm.eval()


def make_batch(rows: int, seq: int, prompt: int, vocab: int, device: str) -> dict:
    """R rows of T tokens: rows i and R/2+i share their prompt (a pair), completions differ;
    completions of uneven length (right padding), as real batches have."""
    g = torch.Generator().manual_seed(2)
    k = rows // 2
    ids = torch.randint(0, vocab, (rows, seq), generator=g)
    ids[k:, :prompt] = ids[:k, :prompt]
    lengths = torch.full((rows,), seq)
    lengths[1::2] = seq - torch.randint(0, (seq - prompt) // 2, (rows // 2,), generator=g)
    attn = (torch.arange(seq)[None, :] < lengths[:, None]).long()
    comp = attn.bool() & (torch.arange(seq)[None, :] >= prompt)
    return {
        "input_ids": ids.to(device),
        "attention_mask": attn.to(device),
        "completion_mask": comp.to(device),
    }


class Clock:
    def __init__(self, device: str, reps: int) -> None:
        self.cuda = device.startswith("cuda")
        self.reps = reps

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def time(self, fn) -> tuple[float, float, object]:
        """(median seconds over reps after one warm-up, peak GiB during the runs, last output)."""
        out = fn()
        self.sync()
        if self.cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        ts = []
        for _ in range(self.reps):
            if self.cuda:
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                out = fn()
                b.record()
                b.synchronize()
                ts.append(a.elapsed_time(b) / 1e3)
            else:
                with C.Stopwatch() as sw:
                    out = fn()
                ts.append(sw.wall)
        peak = torch.cuda.max_memory_allocated() / 2**30 if self.cuda else float("nan")
        return statistics.median(ts), peak, out


def naive_logps(model, batch: dict) -> torch.Tensor:
    """The peer: full logits for every position, float32 log_softmax, gather, masked sum."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    lp = torch.log_softmax(logits.float(), dim=-1)
    tok = lp.gather(2, batch["input_ids"][:, 1:, None]).squeeze(2)
    return (tok * batch["completion_mask"][:, 1:]).sum(1)


def jvp_default_kernels(logp_fn, params, v, batch):
    """Dual tensors WITHOUT forcing the math SDPA kernel (works only where the fused kernel
    has a forward-AD formula)."""
    with torch.no_grad(), fwAD.dual_level():
        dual = {k: fwAD.make_dual(t, v[k].to(t)) for k, t in params.items()}
        out = fwAD.unpack_dual(logp_fn(dual, batch))
    return out.primal.double(), out.tangent.double()


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    return float((a * b).sum() / (a.norm() * b.norm()).clamp_min(1e-300))


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-300))


def run_mode(model, base, mode: str, batch: dict, args, clock: Clock) -> dict:
    """All timings for one parameter set (lora or full) on one model."""
    tokens = int(batch["attention_mask"].sum())
    logp_fn = I.make_logp_fn(model)
    params = I.select_params(model)
    n_params = sum(t.numel() for t in params.values())
    res: dict = {"mode": mode, "params": n_params, "tokens": tokens, "rows": batch["input_ids"].shape[0]}
    peft = hasattr(model, "disable_adapter")
    ref_ctx = model.disable_adapter if peft else contextlib.nullcontext

    def fwd_theta():
        with torch.inference_mode():
            return sequence_logps(model, batch)

    def fwd_ref():
        with torch.inference_mode(), ref_ctx():
            return sequence_logps(model, batch)

    def naive():
        with torch.inference_mode():
            return naive_logps(model, batch)

    t, m, pol = clock.time(fwd_theta)
    res["forward_theta"] = (t, m)
    t, m, ref = clock.time(fwd_ref)
    res["forward_ref"] = (t, m)
    try:
        t, m, nv = clock.time(naive)
        res["naive_forward"] = (t, m)
        res["naive_vs_ours_max_abs"] = float((nv.double() - pol.double()).abs().max())
    except torch.OutOfMemoryError as exc:  # the full-vocab logits are the peer's weak point
        res["naive_forward"] = (float("nan"), float("nan"))
        res["naive_error"] = f"out of memory: {str(exc)[:80]}"
        torch.cuda.empty_cache()
    k = batch["input_ids"].shape[0] // 2
    ref_c, ref_r = ref[:k].double(), ref[k:].double()

    def gval():
        return I.validation_gradient(logp_fn, params, [(batch, ref_c, ref_r)], k, args.beta)

    t, m, (g, val_loss) = clock.time(gval)
    res["g_val_batch"] = (t, m)
    res["val_loss"] = val_loss
    g = {n: x.detach() for n, x in g.items()}

    results = {}
    for name, fn in (
        ("jvp", lambda: I.directional_logps(logp_fn, params, g, batch, method="jvp")),
        ("jvp_math", lambda: I.directional_logps(logp_fn, params, g, batch, method="jvp", attention="math")),
        ("fd", lambda: I.directional_logps(logp_fn, params, g, batch, method="fd")),
        ("grad", lambda: I.directional_logps(logp_fn, params, g, batch, method="grad")),
    ):
        try:
            t, m, out = clock.time(fn)
            res[name] = (t, m)
            results[name] = out
        except (RuntimeError, NotImplementedError, torch.OutOfMemoryError) as exc:
            res[name] = (float("nan"), float("nan"))
            res[f"{name}_error"] = str(exc).splitlines()[0][:160]
            if clock.cuda:
                torch.cuda.empty_cache()
    try:
        t, m, _ = clock.time(lambda: jvp_default_kernels(logp_fn, params, g, batch))
        res["jvp_default_kernels"] = (t, m)
    except (RuntimeError, NotImplementedError) as exc:
        res["jvp_default_kernels"] = (float("nan"), float("nan"))
        res["jvp_default_kernels_error"] = str(exc).splitlines()[0][:160]
    if args.eager_jvp:
        base.set_attn_implementation("eager")
        try:
            t, m, _ = clock.time(
                lambda: I.directional_logps(logp_fn, params, g, batch, method="jvp", attention="math")
            )
            res["jvp_eager"] = (t, m)
        finally:
            base.set_attn_implementation(args.attn)

    def pair_if(f, df):
        pc, pr = f[:k], f[k:]
        mrg = I.dpo_margin(pc, pr, ref_c, ref_r, args.beta)
        return I.influence_from_directional(mrg, df[:k], df[k:], args.beta), mrg

    if "grad" in results:
        if_grad, _ = pair_if(*results["grad"])
        for name in ("jvp", "fd"):
            if name in results:
                if_x, mrg = pair_if(*results[name])
                res[f"pearson_{name}_grad"] = pearson(if_x, if_grad)
                res[f"relerr_{name}_grad"] = rel_err(if_x, if_grad)
    if "jvp" in results:
        irm = I.dpo_margin(pol[:k].double(), pol[k:].double(), ref_c, ref_r, args.beta)
        res["jvp_primal_vs_irm_max_abs"] = float((pair_if(*results["jvp"])[1] - irm).abs().max())
    res["fused_attention"] = A.supports(model, batch)
    if "jvp" in results and "jvp_math" in results:
        res["relerr_jvp_fused_math"] = rel_err(results["jvp"][1], results["jvp_math"][1])
    if args.profile:
        profile(lambda: I.directional_logps(logp_fn, params, g, batch, method="jvp"), "JVP", args)
        profile(fwd_theta, "forward", args)
    return res


# ---------------------------------------------------------------- the packed path
def batch_pairs(batch: dict, prompt: int) -> list[TokenizedPair]:
    """The pairs of a `make_batch` batch (rows i and R/2+i share a P-token prompt) as token ids."""
    ids, n = batch["input_ids"].cpu(), batch["attention_mask"].cpu().sum(1)
    k = ids.shape[0] // 2
    return [
        TokenizedPair(
            prompt_ids=ids[i, :prompt].tolist(),
            chosen_ids=ids[i, prompt : int(n[i])].tolist(),
            rejected_ids=ids[k + i, prompt : int(n[k + i])].tolist(),
        )
        for i in range(k)
    ]


def forward_flops(cfg, batch: dict, real_tokens: int) -> float:
    """Useful FLOPs of one forward over `batch` as prefsift runs it: the linear layers over every
    real token, attention over the (query, key) pairs the mask allows among real tokens, the LM
    head only at the counted positions. Padding slots count nothing."""
    layers, hidden, vocab = cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads
    hd = getattr(cfg, "head_dim", None) or hidden // heads
    linear = (
        2 * layers * (2 * hidden * heads * hd + 2 * hidden * kv * hd + 3 * hidden * cfg.intermediate_size)
    )
    if "target_pos" in batch:  # packed: a padding slot attends to itself only
        pads = batch["input_ids"].numel() - real_tokens
        attn_pairs = int(batch["attention_mask"].sum()) - pads
        targets = int(batch["target_ids"].numel())
    else:  # right-padded rows, causal
        n = batch["attention_mask"].sum(1).double()
        attn_pairs = int((n * (n + 1) / 2).sum())
        targets = int(batch["completion_mask"][:, 1:].sum())
    return float(linear * real_tokens + 4 * layers * heads * hd * attn_pairs + 2 * hidden * vocab * targets)


def matmul_tflops(device: str, n: int = 8192, reps: int = 10) -> float:
    """bf16 n x n x n matmul rate on this device (TFLOP/s): the attainable ceiling, measured."""
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        a @ b
    end.record()
    end.synchronize()
    return 2 * n**3 * reps / (start.elapsed_time(end) / 1e3) / 1e12


def run_packed(model, plain, mode: str, batch: dict, args, clock: Clock) -> dict:
    """The same pairs packed: the scoring pass (plain forwards) packed vs padded with tokens/s and
    MFU, and the IF passes on the packed batch, relative to IRM scoring on it."""
    pairs = batch_pairs(batch, args.prompt)
    lengths = [unit_length(t) for t in pairs]
    packed = pack(pairs, pack_rows(lengths, args.row_tokens), device=args.device)
    k = len(pairs)
    real = {"packed": sum(lengths), "padded": int(batch["attention_mask"].sum())}
    res: dict = {
        "mode": mode,
        "dtype": args.dtype,
        "pairs": k,
        "row_tokens": args.row_tokens,
        "real_tokens": real,
        "slots": {"packed": packed["input_ids"].numel(), "padded": batch["input_ids"].numel()},
        "packed_rows": list(packed["input_ids"].shape),
    }
    layouts = {"packed": packed, "padded": batch}
    outs = {}
    for name, b in layouts.items():

        def fwd(b=b):
            with torch.inference_mode():
                return sequence_logps(plain, b)

        def irm(b=b):  # pi_ref and the merged theta: one plain forward each
            with torch.inference_mode():
                return sequence_logps(plain, b), sequence_logps(plain, b)

        t, m, outs[name] = clock.time(fwd)
        res[f"forward_{name}"] = (t, m)
        res[f"irm_{name}"] = clock.time(irm)[:2]
        res[f"flops_{name}"] = forward_flops(plain.config, b, real[name])
    res["packed_vs_padded_logp_max_abs"] = float(
        (outs["packed"].double() - outs["padded"].double()).abs().max()
    )

    logp_fn, params = I.make_logp_fn(model), I.select_params(model)
    res["params"] = sum(t.numel() for t in params.values())
    ref = outs["packed"].double()
    ref_c, ref_r = ref[:k], ref[k:]
    t, m, (g, _) = clock.time(
        lambda: I.validation_gradient(logp_fn, params, [(packed, ref_c, ref_r)], k, args.beta)
    )
    res["g_val_packed"] = (t, m)
    g = {n: x.detach() for n, x in g.items()}
    results = {}
    for name, b, method, attention in (
        ("jvp_packed", packed, "jvp", "auto"),  # the fused Triton kernel where it applies (its 4D mask)
        ("jvp_packed_math", packed, "jvp", "math"),  # the unfused math SDPA kernel, for comparison
        ("jvp_padded", batch, "jvp", "auto"),  # right-padded rows: the fused kernel where it applies
        ("fd_packed", packed, "fd", "auto"),
    ):
        try:
            t, m, results[name] = clock.time(
                lambda b=b, method=method, attention=attention: I.directional_logps(
                    logp_fn, params, g, b, method=method, attention=attention
                )
            )
            res[name] = (t, m)
        except (RuntimeError, NotImplementedError, torch.OutOfMemoryError) as exc:
            res[name] = (float("nan"), float("nan"))
            res[f"{name}_error"] = str(exc).splitlines()[0][:160]
            if clock.cuda:
                torch.cuda.empty_cache()
    res["fused_attention_padded"] = A.supports(model, batch)
    res["fused_attention_packed"] = A.supports(model, packed)
    if "jvp_packed" in results and "jvp_packed_math" in results:
        res["relerr_jvp_packed_fused_math"] = rel_err(results["jvp_packed"][1], results["jvp_packed_math"][1])

    def pair_if(f, df):
        mrg = I.dpo_margin(f[:k], f[k:], ref_c, ref_r, args.beta)
        return I.influence_from_directional(mrg, df[:k], df[k:], args.beta)

    if "jvp_packed" in results and "jvp_padded" in results:
        a, b = pair_if(*results["jvp_packed"]), pair_if(*results["jvp_padded"])
        res["pearson_if_packed_padded"] = pearson(a, b)
        res["relerr_if_packed_padded"] = rel_err(a, b)
    return res


def packed_report(r: dict, peaks: dict[str, float]) -> list[str]:
    """Markdown for one `run_packed` result; peaks: {label: TFLOP/s} the MFU is taken against."""
    lines = [
        f"### {r['shape']}, {r['mode']}: the packed path ({r['pairs']} pairs; packed rows {r['packed_rows'][0]} x "
        f"{r['packed_rows'][1]} (row target {r['row_tokens']}), {r['slots']['packed']:,} slots for "
        f"{r['real_tokens']['packed']:,} unique tokens; padded rows {r['slots']['padded']:,} slots for "
        f"{r['real_tokens']['padded']:,} real tokens)",
        "",
        "Scoring pass (one plain forward: π_ref, or θ with its LoRA merged, as `prefsift score` runs it); "
        "tokens/s counts the pairs' unique tokens (prompt once), the same number for both layouts; MFU = the "
        "forward's useful FLOPs (linear layers on real tokens, attention over the allowed pairs, LM head at "
        "the counted positions) / time / peak, each layout's own work (the padded rows' second copy of each "
        "prompt counts as work there).",
        "",
        "| "
        + " | ".join(["layout", "one forward ms", "pair tokens/s", "model TFLOP/s"])
        + "".join(f" | MFU vs {k}" for k in peaks)
        + " | IRM (2 forwards) ms | peak GiB |",
        "| --- | ---: | ---: | ---:" + " | ---:" * len(peaks) + " | ---: | ---: |",
    ]
    unique = r["real_tokens"]["packed"]
    for name in ("packed", "padded"):
        t, mem = r[f"forward_{name}"]
        tf = r[f"flops_{name}"] / t / 1e12
        lines.append(
            f"| {name} | {t * 1e3:,.1f} | {unique / t:,.0f} | {tf:,.1f}"
            + "".join(f" | {tf / p:.1%}" for p in peaks.values())
            + f" | {r[f'irm_{name}'][0] * 1e3:,.1f} | {mem:.1f} |"
        )
    irm = r["irm_packed"][0]
    lines += [
        "",
        f"IF passes on the same pairs ({r['params'] / 1e6:,.1f}M parameters in the direction v), against IRM "
        f"scoring on the packed path ({irm * 1e3:,.1f} ms):",
        "",
        "| step | ms | x IRM (packed) | peak GiB |",
        "| --- | ---: | ---: | ---: |",
    ]
    for key, label in (
        ("g_val_packed", "g_val, one batch (forward + backward), packed"),
        (
            "jvp_packed",
            "**D_v log-probs by JVP, packed** ("
            + ("fused Triton attention JVP, 4D mask" if r.get("fused_attention_packed") else "math SDPA")
            + ")",
        ),
        ("jvp_packed_math", "D_v log-probs by JVP, packed (math SDPA)"),
        (
            "jvp_padded",
            "D_v log-probs by JVP, padded rows ("
            + ("fused Triton attention JVP" if r.get("fused_attention_padded") else "math SDPA")
            + ")",
        ),
        ("fd_packed", "D_v log-probs by central FD (2 forwards), packed"),
    ):
        t, mem = r[key]
        lines.append(f"| {label} | {t * 1e3:,.1f} | {t / irm:.2f} | {mem:.1f} |")
    best = min(r["jvp_packed"][0], r["jvp_padded"][0])
    lines += [
        "",
        f"IF/IRM (JVP, reference log-probs reused, g_val amortised): **{r['jvp_packed'][0] / irm:.2f}x on the "
        f"packed path** (goal <= 1.5x); {best / irm:.2f}x with the cheaper JVP layout against packed IRM. "
        f"Packed vs padded sequence log-probs ({r['dtype']} forward): max |Δ| {r['packed_vs_padded_logp_max_abs']:.3g}.",
    ]
    if "pearson_if_packed_padded" in r:
        lines.append(
            f"IF from the packed JVP vs the padded JVP: Pearson {r['pearson_if_packed_padded']:.6f}, relative "
            f"difference {r['relerr_if_packed_padded']:.2e}."
        )
    if "relerr_jvp_packed_fused_math" in r:
        lines.append(
            f"Packed JVP, fused vs math kernel: relative difference {r['relerr_jvp_packed_fused_math']:.2e}."
        )
    for key in ("jvp_packed_error", "jvp_packed_math_error", "jvp_padded_error", "fd_packed_error"):
        if key in r:
            lines.append(f"`{key}`: {r[key]}")
    return lines + [""]


def profile(fn, label: str, args) -> None:
    """Print the ops that take the most device time in one call of fn."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as tprofile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if args.device.startswith("cuda") else [])
    fn()
    with tprofile(activities=acts) as prof:
        fn()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
    key = "cuda_time_total" if args.device.startswith("cuda") else "cpu_time_total"
    print(f"--- profile: {label}")
    print(prof.key_averages().table(sort_by=key, row_limit=args.profile_rows, max_name_column_width=60))


def fmt_row(label: str, t: float, m: float, tokens: int, irm: float) -> str:
    tps = tokens / t if t == t and t > 0 else float("nan")
    return f"| {label} | {t * 1e3:,.0f} | {tps:,.0f} | {t / irm:.2f} | {m:.1f} |"


def report(all_res: list[dict], args, device_name: str, packed_res=(), peaks=None) -> str:
    lines = [
        "## Exact influence on a GPU (random-weight models of real shapes)",
        "",
        f"- {C.about()} Device: {device_name}; torch {torch.__version__}.",
        f"- Command: `python benchmarks/influence_gpu.py {' '.join(sys.argv[1:])}`",
        f"- Batch: {args.rows} rows x {args.seq} tokens ({args.rows // 2} pairs; prompt {args.prompt} tokens, "
        "completions of uneven length, right padding); dtype "
        f"{args.dtype} (LoRA weights {'float32, as PEFT loads them' if args.adapter_dtype == 'fp32' else 'in the base dtype'}); "
        f"attention `{args.attn}` for forwards. The JVP row uses the fused Triton forward-mode attention kernel "
        "(scoring/attention_jvp.py) where it applies, as `prefsift influence` does; the math row forces torch's "
        "unfused math SDPA kernel (the only SDPA kernel with forward AD). Median of "
        f"{args.reps} runs after a warm-up, CUDA events. IRM scoring = forward under pi_ref + forward under theta.",
        "",
    ]
    for r in all_res:
        irm = r["forward_theta"][0] + r["forward_ref"][0]
        tok = r["tokens"]
        lines += [
            f"### {r['shape']}, {r['mode']} ({r['params'] / 1e6:,.1f}M parameters in the direction v; "
            f"{tok:,} real tokens)",
            "",
            "| step | ms | tokens/s | x IRM | peak GiB |",
            "| --- | ---: | ---: | ---: | ---: |",
            fmt_row(
                "IRM scoring (pi_ref + theta forwards)",
                irm,
                max(r["forward_theta"][1], r["forward_ref"][1]),
                tok,
                irm,
            ),
            fmt_row("one forward (theta), prefsift head-at-completions", *r["forward_theta"], tok, irm),
            fmt_row("one forward, naive full-vocab logits (peer)", *r["naive_forward"], tok, irm),
            fmt_row("g_val, one batch (forward + backward)", *r["g_val_batch"], tok, irm),
            fmt_row(
                "**D_v log-probs by JVP** ("
                + ("fused Triton attention JVP" if r.get("fused_attention") else "math SDPA")
                + ", what prefsift runs)",
                *r["jvp"],
                tok,
                irm,
            ),
            fmt_row("D_v log-probs by JVP, unfused math SDPA", *r["jvp_math"], tok, irm),
        ]
        if "jvp_eager" in r:
            lines.append(fmt_row("D_v log-probs by JVP, eager attention", *r["jvp_eager"], tok, irm))
        lines += [
            fmt_row("D_v log-probs by JVP, default SDPA kernels", *r["jvp_default_kernels"], tok, irm),
            fmt_row("D_v log-probs by central FD (2 forwards)", *r["fd"], tok, irm),
            fmt_row("D_v log-probs by per-sequence gradients", *r["grad"], tok, irm),
            "",
        ]
        jvp = r["jvp"][0]
        lines.append(
            f"IF by JVP for all pairs, reference log-probs reused from IRM scoring and g_val amortised over "
            f"a large set: **{jvp / irm:.2f}x IRM scoring** (target <= 2x); per-sequence gradients take "
            f"{r['grad'][0] / jvp:.2f}x the JVP's time."
        )
        fid = []
        for name in ("jvp", "fd"):
            if f"pearson_{name}_grad" in r:
                fid.append(
                    f"Pearson({name.upper()}, grads) {r[f'pearson_{name}_grad']:.6f}, relative error "
                    f"{r[f'relerr_{name}_grad']:.2e}"
                )
        if fid:
            lines.append("Fidelity of IF (in " + args.dtype + "): " + "; ".join(fid) + ".")
        if "relerr_jvp_fused_math" in r:
            lines.append(
                f"D_v log-probs, fused kernel vs math SDPA: relative difference {r['relerr_jvp_fused_math']:.2e}."
            )
        for key in (
            "jvp_error",
            "jvp_math_error",
            "fd_error",
            "grad_error",
            "jvp_default_kernels_error",
            "naive_error",
        ):
            if key in r:
                lines.append(f"`{key}`: {r[key]}")
        if "naive_vs_ours_max_abs" in r:
            lines.append(
                f"Sequence log-probs, prefsift vs naive: max abs difference {r['naive_vs_ours_max_abs']:.3g}."
            )
        lines.append("")
    for r in packed_res:
        lines += packed_report(r, peaks or {})
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", nargs="+", default=["llama-1b"], choices=sorted(SHAPES))
    ap.add_argument("--modes", nargs="+", default=["lora", "full"], choices=["lora", "full"])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32"])
    ap.add_argument("--attn", default="sdpa", choices=["sdpa", "eager"])
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--prompt", type=int, default=256)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--beta", type=float, default=0.1)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--eager-jvp", action="store_true", help="also time the JVP with eager attention")
    ap.add_argument("--adapter-dtype", default="fp32", choices=["fp32", "base"], help="LoRA weights' dtype")
    ap.add_argument("--profile", action="store_true", help="print the top ops of one JVP and one forward")
    ap.add_argument("--profile-rows", type=int, default=25)
    ap.add_argument(
        "--layouts",
        nargs="+",
        default=["padded", "packed"],
        choices=["padded", "packed"],
        help="padded: the full table on right-padded rows; packed: the scoring pass (tokens/s, MFU) and "
        "the IF passes on the same pairs packed (default both)",
    )
    ap.add_argument(
        "--row-tokens", type=int, default=ROW_TOKENS, help="packed row length (prefsift's default)"
    )
    ap.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="bf16 dense peak for the MFU (default: the datasheet's for an H100/H200, 989.4)",
    )
    ap.add_argument("--out", default=None, help="folder for influence_gpu.md and influence_gpu.json")
    args = ap.parse_args()
    dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
    if args.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        device_name = torch.cuda.get_device_name()
    else:
        device_name = f"CPU ({C.cpu_name() or platform.machine()})"
    clock = Clock(args.device, args.reps)
    peaks = {}
    if clock.cuda:
        spec = args.peak_tflops or next((v for k, v in BF16_PEAK_TFLOPS.items() if k in device_name), None)
        if spec:
            peaks["bf16 peak " + (f"{spec:g}" if args.peak_tflops else f"{spec:g} (datasheet)")] = spec
        here = matmul_tflops(args.device)
        peaks[f"bf16 matmul here {here:.0f}"] = here
        print(f"MFU against: {peaks}", flush=True)
    all_res, packed_res = [], []
    for shape in args.shape:
        for mode in args.modes:
            sw = C.Stopwatch()
            base = build(shape, dtype, args.device, args.attn)
            model = add_lora(base, args.lora_r, 0.02, args.adapter_dtype) if mode == "lora" else base
            batch = make_batch(args.rows, args.seq, args.prompt, base.config.vocab_size, args.device)
            if "padded" in args.layouts:
                r = run_mode(model, base, mode, batch, args, clock)
                r["shape"] = shape
                all_res.append(r)
                print(json.dumps(r), flush=True)
            if "packed" in args.layouts:
                # the scoring pass runs a plain model (LoRA merged): the same seed gives the base weights
                plain = build(shape, dtype, args.device, args.attn) if mode == "lora" else base
                r = run_packed(model, plain, mode, batch, args, clock)
                r["shape"] = shape
                packed_res.append(r)
                print(json.dumps(r), flush=True)
                del plain
            print(f"[{shape}/{mode}] {sw.wall:.1f} s", flush=True)
            del model, base
            if clock.cuda:
                torch.cuda.empty_cache()
    text = report(all_res, args, device_name, packed_res, peaks)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "influence_gpu.md").write_text(text + "\n")
        (out / "influence_gpu.json").write_text(
            json.dumps({"padded": all_res, "packed": packed_res}, indent=1)
        )


if __name__ == "__main__":
    main()
