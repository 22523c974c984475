"""Sequence log-probs of completions: log π(y|x) = Σ log p(y_t | x, y_<t) over completion tokens.

Three entry points:
- `sequence_logps(model, batch)`: differentiable (autograd, `torch.func.jvp`), used by the
  influence code and the tests. `batch` is either padded rows (`collate`: one sequence a row)
  or packed pairs (`scoring.packing.pack`: prompt once, then chosen, then rejected, several
  pairs a row behind a block-diagonal 4D attention mask).
- `pair_logps(model, tokenized, ...)`: the fast inference path for whole datasets, packed by
  default (every unique token through the transformer once, see `scoring/packing.py`); the
  padded layout (length-sorted rows under a token budget) serves models whose attention cannot
  take a 4D mask with position ids.
- `pair_token_logps(model, tokenized, ...)`: the same pass, each counted token's log-prob kept
  (what `prefsift explain-pair` shows).

All apply the LM head only at the positions whose next token is a counted completion token
and take `logit[target] - logsumexp(logits)` there, so the (B, T, V) logits tensor of a full
forward is never built. In a 135M model with a 49k vocabulary the head is ~25% of the FLOPs
of a full forward, and the prompt positions (often most of the sequence) don't need it.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from prefsift.scoring.packing import pack_batches
from prefsift.scoring.tokenize import TokenizedPair

log = logging.getLogger(__name__)

HEAD_CHUNK_ELEMENTS = 1 << 25  # logits elements per LM-head chunk (~128 MB in float32)


# ---------------------------------------------------------------- batching
def collate(
    seqs: Sequence[tuple[list[int], list[int]]],
    pad_token_id: int,
    padding_side: str = "right",
    device=None,
) -> dict:
    """Pad (prompt, completion) id lists into a batch.

    `completion_mask` is True at the completion tokens whose log-prob is counted: every
    completion token except one at the very start of a sequence (nothing predicts it; TRL
    drops it the same way by shifting).
    """
    if padding_side not in ("right", "left"):
        raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
    lengths = [len(p) + len(c) for p, c in seqs]
    width = max(max(lengths, default=1), 1)
    n = len(seqs)
    input_ids = torch.full((n, width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((n, width), dtype=torch.long)
    completion_mask = torch.zeros((n, width), dtype=torch.bool)
    for i, (prompt, completion) in enumerate(seqs):
        length = lengths[i]
        start = 0 if padding_side == "right" else width - length
        if length:
            input_ids[i, start : start + length] = torch.tensor(
                list(prompt) + list(completion), dtype=torch.long
            )
            attention_mask[i, start : start + length] = 1
            first = start + max(len(prompt), 1)  # the first token of a sequence is never predicted
            completion_mask[i, first : start + length] = True
    out = {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}
    if device is not None:
        out = {k: v.to(device) for k, v in out.items()}
    return out


# ---------------------------------------------------------------- model plumbing
def causal_lm(model):
    """The transformers CausalLM under a PEFT wrapper (LoRA layers stay injected in it)."""
    if hasattr(model, "peft_config") and hasattr(model, "get_base_model"):
        return model.get_base_model()
    return model


def backbone_and_head(model):
    """(backbone returning last_hidden_state, LM head module) of a causal LM, or (None, None)."""
    lm = causal_lm(model)
    prefix = getattr(lm, "base_model_prefix", "")
    backbone = getattr(lm, prefix, None) if prefix else None
    head = lm.get_output_embeddings() if hasattr(lm, "get_output_embeddings") else None
    if backbone is None or backbone is lm or head is None:
        return None, None
    return backbone, head


def logit_transform(config) -> tuple[float, float | None]:
    """(scale, softcap) applied to a model's logits, read from its config the way TRL reads it."""
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    softcap = getattr(text, "final_logit_softcapping", None)
    scale = getattr(text, "logit_scale", None)
    if scale is None:
        scale = getattr(text, "output_multiplier", None)
    if scale is None:
        scale = getattr(text, "lm_head_multiplier", None)
    if scale is None and getattr(text, "logits_scaling", None) is not None:
        ls = text.logits_scaling
        scale = ls if getattr(text, "model_type", "") == "hyperclovax" else 1 / ls
    return (1.0 if scale is None else float(scale)), softcap


def out_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 models sum in float64; every other dtype sums in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def token_logps(head, hidden: torch.Tensor, targets: torch.Tensor, config) -> torch.Tensor:
    """log p(target) for each row of hidden (N, H) -> (N,), chunked over rows to bound memory."""
    scale, softcap = logit_transform(config)
    dtype = out_dtype(hidden.dtype)
    vocab = head.weight.shape[0]
    rows = max(1, HEAD_CHUNK_ELEMENTS // max(vocab, 1))
    parts = []
    for s in range(0, hidden.shape[0], rows):
        logits = head(hidden[s : s + rows]).to(dtype)  # (n, V)
        if scale != 1.0:
            logits = logits * scale
        if softcap is not None:
            logits = torch.tanh(logits / softcap) * softcap
        tgt = targets[s : s + rows]
        parts.append(logits.gather(1, tgt.unsqueeze(1)).squeeze(1) - torch.logsumexp(logits, dim=-1))
    if not parts:
        return hidden.new_zeros((0,), dtype=dtype)
    return torch.cat(parts)


def position_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that skip left padding, so a left-padded row equals the same row right-padded."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)


class _LogpModule(torch.nn.Module):
    """`sequence_logps` as a module, so `torch.func.functional_call` can swap its parameters."""

    def __init__(self, model) -> None:
        super().__init__()
        self.m = model

    def forward(self, batch: dict) -> torch.Tensor:
        return sequence_logps(self.m, batch)


def packed_supported(model) -> bool:
    """Whether `model` computes a packed batch exactly: its attention takes a ready 4D mask
    (eager or SDPA), it takes position ids, and no sliding window could cut a packed row."""
    lm = causal_lm(model)
    cfg = getattr(lm, "config", None)
    if cfg is None or getattr(cfg, "_attn_implementation", None) not in ("eager", "sdpa"):
        return False
    text = cfg.get_text_config() if hasattr(cfg, "get_text_config") else cfg
    if getattr(text, "sliding_window", None) and getattr(text, "use_sliding_window", True):
        return False
    backbone, _ = backbone_and_head(model)
    fwd = (backbone or lm).forward
    return "position_ids" in inspect.signature(fwd).parameters


def _model_mask(lm, mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A (B, 1, T, T) bool mask as the model's attention takes it: bool for SDPA, additive for eager."""
    if lm.config._attn_implementation == "sdpa":
        return mask
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill_(
        ~mask, torch.finfo(dtype).min
    )


def _token_logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probs of the counted tokens (N,), their output sequence (N,)) of a packed batch or of
    padded rows; a sequence's tokens come in the order of its positions."""
    ids = batch["input_ids"]
    lm = causal_lm(model)
    if "target_pos" in batch:  # packed: flat positions, targets and outputs come with the batch
        pos, where = batch["position_ids"], batch["target_pos"]
        targets, out = batch["target_ids"], batch["target_out"]
        mask = _model_mask(lm, batch["attention_mask"], lm.get_input_embeddings().weight.dtype)
    else:  # padded rows: a counted token t + 1 of row b is predicted from position t
        mask = batch["attention_mask"]
        pos = position_ids(mask)
        b, t = batch["completion_mask"].bool()[:, 1:].nonzero(as_tuple=True)  # (N,) each, row-major
        where, targets, out = b * ids.shape[1] + t, ids[b, t + 1], b
    backbone, head = backbone_and_head(model)
    if backbone is None:  # unusual architecture: full logits, then the counted positions
        logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits  # (B, T, V)
        rows = logits.reshape(-1, logits.shape[-1])[where].to(out_dtype(logits.dtype))
        return torch.log_softmax(rows, dim=-1).gather(1, targets.unsqueeze(1)).squeeze(1), out
    hidden = backbone(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).last_hidden_state
    h = hidden.reshape(-1, hidden.shape[-1])[where]  # (N, H): the positions predicting a counted token
    return token_logps(head, h, targets, lm.config), out


def sequence_logps(model, batch: dict, params: dict | None = None) -> torch.Tensor:
    """Σ completion-token log-probs per output sequence, differentiable: (B,) for padded rows,
    (2k,) [chosen; rejected] for k packed pairs.

    `params` (optional): {parameter name: tensor} of `model` to use instead of its own, via
    `torch.func.functional_call` (what `torch.func.jvp` needs).
    """
    if params is not None:
        wrapped = _LogpModule(model)
        return torch.func.functional_call(
            wrapped, {f"m.{k}": v for k, v in params.items()}, (batch,), strict=False
        )
    tok, row = _token_logps(model, batch)
    n_out = batch["n_out"] if "target_pos" in batch else batch["input_ids"].shape[0]
    return torch.zeros(n_out, dtype=tok.dtype, device=tok.device).index_add(0, row, tok)


# ---------------------------------------------------------------- the fast path
def length_batches(lengths: Sequence[int], batch_tokens: int) -> list[list[int]]:
    """Indices sorted by length (longest first) and cut so that rows × longest row ≤ batch_tokens."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        width = lengths[cur[0]] if cur else lengths[i]
        if cur and (len(cur) + 1) * width > batch_tokens:
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def _counts(tokenized: list[TokenizedPair]) -> dict[str, np.ndarray]:
    def counted(prompt, completion) -> int:
        return max(len(completion) - (0 if prompt else 1), 0)

    return {
        "prompt_tokens": np.array([len(t.prompt_ids) for t in tokenized], dtype=np.int32),
        "chosen_tokens": np.array([counted(*t.chosen_seq()) for t in tokenized], dtype=np.int32),
        "rejected_tokens": np.array([counted(*t.rejected_seq()) for t in tokenized], dtype=np.int32),
        "truncated": np.array([t.truncated for t in tokenized], dtype=bool),
    }


def model_device(model) -> torch.device:
    return next(model.parameters()).device


LAYOUTS = ("auto", "packed", "padded")
ROW_TOKENS = 512  # packed row length: a longer row spends more attention FLOPs on its masked-out blocks


def use_packed(model, layout: str) -> bool:
    """Whether `layout` ("auto" | "packed" | "padded") means packed batches for `model`."""
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS}, got {layout!r}")
    return layout == "packed" or (layout == "auto" and packed_supported(model))


def pair_batches(
    model,
    tokenized: Sequence[TokenizedPair],
    pad_token_id: int,
    batch_tokens: int,
    layout: str = "auto",
    row_tokens: int = ROW_TOKENS,
    device=None,
) -> Iterator[tuple[list[int], dict]]:
    """(pair indices, batch) covering `tokenized`, each batch's outputs laid out [chosen of its k
    pairs; rejected of them] (what `scoring.influence` takes): packed pairs (`use_packed`), or
    2k padded rows, pairs sorted by their longer side so that rows x longest row <= batch_tokens.
    Lazy: each batch is built when it is asked for."""
    if use_packed(model, layout):
        yield from pack_batches(tokenized, batch_tokens, row_tokens, device)
        return
    seqs = [(t.chosen_seq(), t.rejected_seq()) for t in tokenized]
    widths = [max(len(c[0]) + len(c[1]), len(r[0]) + len(r[1])) for c, r in seqs]
    for idx in length_batches(widths, max(batch_tokens // 2, 1)):
        rows = [seqs[i][0] for i in idx] + [seqs[i][1] for i in idx]
        yield idx, collate(rows, pad_token_id, "right", device)


def pair_token_logps(
    model,
    tokenized: Sequence[TokenizedPair],
    pad_token_id: int,
    batch_tokens: int = 8192,
    layout: str = "auto",
    row_tokens: int = ROW_TOKENS,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """(chosen, rejected) log-probs of each counted response token of each pair, float64, in input
    order, for inspection (`prefsift explain-pair`): the terms whose sums `pair_logps` returns,
    computed in the same layout (`pair_batches`: packed where the model supports it)."""
    out: list = [None] * len(tokenized)
    if not tokenized:
        return out
    batches = pair_batches(
        model, tokenized, pad_token_id, batch_tokens, layout, row_tokens, model_device(model)
    )
    with torch.inference_mode():
        for idx, batch in batches:
            tok, seq = _token_logps(model, batch)
            tok, seq = tok.double().cpu().numpy(), seq.cpu().numpy()
            k = len(idx)
            for j, i in enumerate(idx):  # outputs [chosen of the k pairs; rejected of them]
                out[i] = (tok[seq == j], tok[seq == k + j])
    return out


def pair_logps(
    model,
    tokenized: list[TokenizedPair],
    pad_token_id: int,
    batch_tokens: int = 8192,
    padding_side: str = "right",
    progress=None,
    layout: str = "auto",
    row_tokens: int = ROW_TOKENS,
) -> dict[str, np.ndarray]:
    """chosen/rejected log-probs (float64), token counts (int32) and truncation flags, in input order.

    `layout`: "packed" (each pair one sequence, several pairs a row, `scoring/packing.py`),
    "padded" (each side its own row, length-sorted, padded to the batch's longest), or "auto":
    packed where the model supports it (`packed_supported`), else padded. `padding_side` applies
    to the padded layout only. `progress`: anything with `update(n_pairs)` (prefsift.progress.Progress).
    """
    packed = use_packed(model, layout)
    n = len(tokenized)
    out = _counts(tokenized)
    out["chosen_logp"] = np.zeros(n, dtype=np.float64)
    out["rejected_logp"] = np.zeros(n, dtype=np.float64)
    if n == 0:
        return out
    device = model_device(model)
    if packed:
        with torch.inference_mode():
            # longest rows first: a batch that does not fit fails at once, not at the end
            for idx, batch in pack_batches(tokenized, batch_tokens, row_tokens, device):
                values = sequence_logps(model, batch).double().cpu().numpy()  # (2k,)
                out["chosen_logp"][idx] = values[: len(idx)]
                out["rejected_logp"][idx] = values[len(idx) :]
                if progress is not None:
                    progress.update(len(idx))
        return out
    # 1. every sequence once: rows 0..n-1 chosen, n..2n-1 rejected
    seqs = [t.chosen_seq() for t in tokenized] + [t.rejected_seq() for t in tokenized]
    lengths = [len(p) + len(c) for p, c in seqs]
    values = np.zeros(2 * n, dtype=np.float64)
    done_seqs = reported = 0
    with torch.inference_mode():
        # 2. longest first: a batch that does not fit fails at once, not at the end
        for idx in length_batches(lengths, batch_tokens):
            batch = collate([seqs[i] for i in idx], pad_token_id, padding_side, device)
            values[idx] = sequence_logps(model, batch).double().cpu().numpy()
            done_seqs += len(idx)
            if progress is not None and done_seqs // 2 > reported:
                progress.update(done_seqs // 2 - reported)
                reported = done_seqs // 2
    out["chosen_logp"] = values[:n]
    out["rejected_logp"] = values[n:]
    return out
