"""Causal attention with a fused forward-mode rule, for exact IF by JVP on CUDA.

Forward-mode AD cannot go through the fused (flash / cuDNN) attention kernels, so without this
module the JVP runs the unfused math kernel for primal and tangent: on an H100 that was 53% of
the JVP's time on a 1.24B model (benchmarks/results/influence_gpu.md). Here one Triton kernel
computes, block by block with an online softmax (flash-attention style), both

    O  = softmax(S) V                           S  = scale * Q K^T (causal)
    dO = P dV + (P * dS) V - rowsum(P * dS) O    dS = scale * (dQ K^T + Q dK^T),  P = softmax(S)

so the tangent costs about three fused attention passes instead of a materialised T x T score
matrix and its tangent. Grouped-query attention (fewer K/V heads) is handled by indexing.

Two layouts, the two prefsift's influence pass uses: causal attention over RIGHT-padded rows
(`scoring.logprobs.collate`: every real token before every pad token, so no real query attends to
a pad key), and an explicit boolean mask inside the causal triangle (`scoring.packing`: several
pairs a row, the rejected response kept apart from the chosen one), read tile by tile next to the
keys. A query always attends to itself (a pad row's softmax is never empty); the key blocks before
the first key any query of a block may attend to (a packed row's earlier pairs) are skipped, and a
block that masks a whole query row out adds nothing to its online softmax. `supports` checks the batch and the
model; everything else falls back to the math kernel. The kernel runs on CPU under Triton's
interpreter (TRITON_INTERPRET=1), which is how the CPU tests check its maths.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

try:  # Triton ships with CUDA builds of torch; CPU-only installs lack it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the torch build
    triton = None
    tl = None

NAME = "prefsift_fwad"  # the attention implementation registered with transformers
BLOCK_M = 64
BLOCK_N = 64


if triton is not None:

    @triton.jit
    def _block(
        q, dq, K, V, DK, DV, kv_base, skt, start_n, offs_m, offs_n, offs_d, scale, T,
        M, m_base, smq, m_i, l_i, r_i, acc, dacc, HAS_MASK: tl.constexpr,
    ):  # fmt: skip
        """One key block: online-softmax update of the output and tangent accumulators."""
        cols = start_n + offs_n
        kv_off = kv_base + cols[:, None] * skt + offs_d[None, :]
        col_ok = cols[:, None] < T
        k = tl.load(K + kv_off, mask=col_ok, other=0.0)
        v = tl.load(V + kv_off, mask=col_ok, other=0.0)
        dk = tl.load(DK + kv_off, mask=col_ok, other=0.0)
        dv = tl.load(DV + kv_off, mask=col_ok, other=0.0)
        s = tl.dot(q, tl.trans(k)) * scale
        ds = (tl.dot(dq, tl.trans(k)) + tl.dot(q, tl.trans(dk))) * scale
        keep = (offs_m[:, None] >= cols[None, :]) & (cols[None, :] < T)
        if HAS_MASK:  # the batch's mask (row-major T x T bytes), and the diagonal always
            ok = (offs_m[:, None] < T) & (cols[None, :] < T)
            allowed = tl.load(M + m_base + offs_m[:, None] * smq + cols[None, :], mask=ok, other=0)
            keep = keep & ((allowed != 0) | (offs_m[:, None] == cols[None, :]))
        s = tl.where(keep, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row with no key yet: adds nothing
        alpha = tl.exp(m_i - m_safe)
        p = tl.exp(s - m_safe[:, None])
        pds = tl.where(keep, p * ds, 0.0)
        l_i = l_i * alpha + tl.sum(p, 1)
        r_i = r_i * alpha + tl.sum(pds, 1)
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        dacc = dacc * alpha[:, None] + tl.dot(p.to(v.dtype), dv) + tl.dot(pds.to(v.dtype), v)
        return m_new, l_i, r_i, acc, dacc

    @triton.jit
    def _attn_jvp_kernel(
        Q, K, V, DQ, DK, DV, OUT, DOUT, M, LO,
        scale, T, H, GROUP,
        sqb, sqh, sqt,
        skb, skh, skt,
        smb, smq, slb,
        HEAD_DIM: tl.constexpr,
        HAS_MASK: tl.constexpr,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        INTERPRET: tl.constexpr,
    ):  # fmt: skip
        start_m = tl.program_id(0)
        bh = tl.program_id(1)
        b = bh // H
        h = bh % H
        kv_base = b * skb + (h // GROUP) * skh
        m_base = b * smb
        offs_m = start_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_n = tl.arange(0, BLOCK_N)
        offs_d = tl.arange(0, HEAD_DIM)
        q_off = b * sqb + h * sqh + offs_m[:, None] * sqt + offs_d[None, :]
        row_ok = offs_m[:, None] < T
        q = tl.load(Q + q_off, mask=row_ok, other=0.0)
        dq = tl.load(DQ + q_off, mask=row_ok, other=0.0)
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l_i = tl.zeros([BLOCK_M], tl.float32)
        r_i = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        dacc = tl.zeros([BLOCK_M, HEAD_DIM], tl.float32)
        if HAS_MASK:  # the first key block any row of this block may attend to (a packed row's
            # pairs before this block's are skipped whole)
            lo = tl.min(tl.load(LO + b * slb + offs_m, mask=offs_m < T, other=T), 0)
            lo = (lo // BLOCK_N) * BLOCK_N
        else:
            lo = 0
        if INTERPRET:  # Triton's CPU interpreter cannot bound a loop by program_id: skip instead
            for start_n in range(0, T, BLOCK_N):
                if start_n >= lo and start_n < (start_m + 1) * BLOCK_M:
                    m_i, l_i, r_i, acc, dacc = _block(
                        q, dq, K, V, DK, DV, kv_base, skt, start_n, offs_m, offs_n, offs_d, scale, T,
                        M, m_base, smq, m_i, l_i, r_i, acc, dacc, HAS_MASK,
                    )  # fmt: skip
        else:  # causal: no key after the block's last row
            for start_n in range(lo, (start_m + 1) * BLOCK_M, BLOCK_N):
                m_i, l_i, r_i, acc, dacc = _block(
                    q, dq, K, V, DK, DV, kv_base, skt, start_n, offs_m, offs_n, offs_d, scale, T,
                    M, m_base, smq, m_i, l_i, r_i, acc, dacc, HAS_MASK,
                )  # fmt: skip
        l_i = tl.where(l_i == 0.0, 1.0, l_i)  # rows past T (not stored) have no key
        o = acc / l_i[:, None]
        do = dacc / l_i[:, None] - (r_i / l_i)[:, None] * o
        tl.store(OUT + q_off, o.to(OUT.dtype.element_ty), mask=row_ok)
        tl.store(DOUT + q_off, do.to(DOUT.dtype.element_ty), mask=row_ok)


def attention_and_tangent(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    dq: torch.Tensor,
    dk: torch.Tensor,
    dv: torch.Tensor,
    scale: float,
    mask: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(O, dO) of causal attention. q, dq: (B, H, T, D); k, v, dk, dv: (B, Hkv, T, D); `mask`
    (B, 1, T, T) or (B, T, T) bool, True = may attend, taken inside the causal triangle and with
    the diagonal always allowed (None: causal only)."""
    if triton is None:
        raise RuntimeError("Triton is not installed: the fused attention JVP needs a CUDA build of torch")
    B, H, T, D = q.shape
    Hkv = k.shape[1]
    if H % Hkv or D & (D - 1) or D < 16:
        raise ValueError(f"unsupported attention shape: {H} heads, {Hkv} K/V heads, head dim {D}")
    q, dq = q.contiguous(), dq.to(q.dtype).contiguous()
    k, v = k.contiguous(), v.contiguous()
    dk, dv = dk.to(k.dtype).contiguous(), dv.to(v.dtype).contiguous()
    if mask is not None:
        mask = mask.reshape(mask.shape[0], T, T)
        if mask.dtype != torch.bool or mask.shape[0] not in (1, B):
            raise ValueError(
                f"the mask must be bool, (B or 1, [1,] T, T); got {mask.dtype} {tuple(mask.shape)}"
            )
        mask = mask | torch.eye(T, dtype=torch.bool, device=mask.device)
        first = mask.to(torch.uint8).argmax(-1).to(torch.int32).contiguous()  # (B, T) first allowed key
        mask = mask.to(torch.uint8).contiguous()  # one byte per (query, key)
    o, do = torch.empty_like(q), torch.empty_like(q)
    grid = (triton.cdiv(T, BLOCK_M), B * H)
    _attn_jvp_kernel[grid](
        q, k, v, dq, dk, dv, o, do, q if mask is None else mask, q if mask is None else first,
        scale, T, H, H // Hkv,
        q.stride(0), q.stride(1), q.stride(2),
        k.stride(0), k.stride(1), k.stride(2),
        0 if mask is None or mask.shape[0] == 1 else T * T, T, 0 if mask is None or mask.shape[0] == 1 else T,
        HEAD_DIM=D, HAS_MASK=mask is not None, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N,
        INTERPRET=os.environ.get("TRITON_INTERPRET") == "1",
    )  # fmt: skip
    return o, do


class _FusedCausalAttention(torch.autograd.Function):
    """Primal by torch's fused SDPA; tangent by the Triton kernel. Forward mode only. `mask`:
    None (causal) or (B, 1, T, T) bool already inside the causal triangle, diagonal included."""

    @staticmethod
    def forward(q, k, v, scale, mask):
        return torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=mask is None, scale=scale, enable_gqa=k.shape[1] != q.shape[1]
        )

    @staticmethod
    def setup_context(ctx, inputs, output):
        q, k, v, scale, mask = inputs
        ctx.save_for_forward(q, k, v)
        ctx.scale, ctx.mask = scale, mask

    @staticmethod
    def jvp(ctx, dq, dk, dv, _dscale, _dmask):
        q, k, v = ctx.saved_tensors
        dq = torch.zeros_like(q) if dq is None else dq
        dk = torch.zeros_like(k) if dk is None else dk
        dv = torch.zeros_like(v) if dv is None else dv
        return attention_and_tangent(q, k, v, dq, dk, dv, ctx.scale, ctx.mask)[1]

    @staticmethod
    def backward(ctx, grad):  # pragma: no cover - reverse mode never routes here
        raise RuntimeError(f"the {NAME} attention is forward-mode only")


def _attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, is_causal=None, **kw):
    """transformers' attention interface: (B, H, T, D) in, (B, T, H, D) out."""
    for name in ("softcap", "s_aux"):  # variants this kernel does not compute
        if kw.get(name) is not None:
            raise ValueError(f"the {NAME} attention does not support {name}; use attention='math'")
    window = kw.get("sliding_window")
    if window is not None and query.shape[2] > window:  # a window shorter than the rows changes the maths
        raise ValueError(f"the {NAME} attention does not support a sliding window shorter than the sequence")
    scale = scaling if scaling is not None else query.shape[-1] ** -0.5
    out = _FusedCausalAttention.apply(query, key, value, scale, causal_mask(attention_mask, query.shape[2]))
    return out.transpose(1, 2).contiguous(), None


def causal_mask(attention_mask: torch.Tensor | None, T: int) -> torch.Tensor | None:
    """The (B, 1, T, T) bool mask the kernel and the primal share: the model's 4D mask (bool, or
    additive with 0 = attend) inside the causal triangle, diagonal included; None for none."""
    if attention_mask is None:
        return None
    if attention_mask.ndim != 4 or tuple(attention_mask.shape[-2:]) != (T, T):
        raise ValueError(
            f"the {NAME} attention needs a (B, 1, {T}, {T}) mask, got {tuple(attention_mask.shape)}"
        )
    allowed = attention_mask if attention_mask.dtype == torch.bool else attention_mask == 0
    eye = torch.eye(T, dtype=torch.bool, device=allowed.device)
    return (allowed | eye) & torch.ones_like(eye).tril()


_registered = False


def register() -> None:
    """Register NAME as an attention implementation (and its mask function) with transformers."""
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, _attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
    _registered = True


def right_padded(attention_mask: torch.Tensor) -> bool:
    """Every row is 1...1 0...0 (real tokens first)."""
    m = attention_mask.bool()
    return bool((m[:, 1:] <= m[:, :-1]).all())


# Model families whose attention is plain causal softmax attention through transformers'
# attention interface (GQA allowed): the kernel computes exactly what they compute.
FAMILIES = frozenset({"llama", "qwen2", "qwen3", "mistral", "olmo", "olmo2", "granite", "phi3"})


def supports(model, batch) -> bool:
    """Whether the fused path applies: CUDA, Triton, right-padded rows or a packed batch's causal
    4D mask, and `model_supported`."""
    if triton is None or not torch.cuda.is_available():
        return False
    ids, mask = batch["input_ids"], batch["attention_mask"]
    if ids.device.type != "cuda":
        return False
    if mask.ndim == 4:  # scoring.packing: bool, nothing above the diagonal
        T = ids.shape[1]
        upper = torch.ones(T, T, dtype=torch.bool, device=mask.device).triu(1)
        if mask.dtype != torch.bool or bool((mask & upper).any()):
            return False
    elif not right_padded(mask):
        return False
    return model_supported(getattr(model, "config", None), ids.shape[1])


def model_supported(cfg, length: int) -> bool:
    """A causal LM of a known plain-attention family, swappable through transformers' attention
    interface, with a power-of-two head dim, and a sliding window (if any) no shorter than
    `length`. Anything else takes the math kernel."""
    if cfg is None or getattr(cfg, "_attn_implementation", None) not in ("sdpa", "eager", NAME):
        return False
    if getattr(cfg, "model_type", None) not in FAMILIES:
        return False
    window = getattr(cfg, "sliding_window", None) if getattr(cfg, "use_sliding_window", True) else None
    if window and length > window:
        return False
    heads = getattr(cfg, "num_attention_heads", 0)
    hidden = getattr(cfg, "hidden_size", 0)
    head_dim = getattr(cfg, "head_dim", None) or (hidden // heads if heads else 0)
    return head_dim >= 16 and not head_dim & (head_dim - 1)


@contextlib.contextmanager
def fused_jvp_attention(model) -> Iterator[None]:
    """Run `model` with the fused forward-mode attention, then restore its implementation."""
    register()
    cfg = model.config
    before = cfg._attn_implementation
    model.set_attn_implementation(NAME)
    try:
        yield
    finally:
        model.set_attn_implementation(before)
