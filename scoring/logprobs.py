"""Sequence log-probs of completions: log π(y|x) = Σ log p(y_t | x, y_<t) over completion tokens.

Two entry points:
- `sequence_logps(model, batch)`: differentiable (autograd, `torch.func.jvp`), used by the
  influence code and the tests.
- `pair_logps(model, tokenized, ...)`: the fast inference path for whole datasets. It sorts
  sequences by length and packs them into batches under a token budget (little padding),
  runs in `inference_mode`, and optionally shares the prompt's forward pass between the
  chosen and rejected completions through a prefix KV cache (see `scoring/prefix.py`).

Both apply the LM head only at the positions whose next token is a counted completion token
and take `logit[target] - logsumexp(logits)` there, so the (B, T, V) logits tensor of a full
forward is never built. In a 135M model with a 49k vocabulary the head is ~25% of the FLOPs
of a full forward, and the prompt positions (often most of the sequence) don't need it.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import numpy as np
import torch

from scoring.tokenize import TokenizedPair

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


def _completion_token_logps(model, batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probs of the counted completion tokens (N,), their row (N,)) in row-major order."""
    input_ids, attn, comp = batch["input_ids"], batch["attention_mask"], batch["completion_mask"].bool()
    tgt_mask = comp[:, 1:]  # (B, T-1): token t+1 is predicted from position t
    row = (
        torch.arange(input_ids.shape[0], device=input_ids.device).unsqueeze(1).expand_as(tgt_mask)[tgt_mask]
    )  # (N,)
    targets = input_ids[:, 1:][tgt_mask]  # (N,)
    backbone, head = backbone_and_head(model)
    if backbone is None:  # unusual architecture: plain forward, logits for every position
        logits = model(input_ids=input_ids, attention_mask=attn, position_ids=position_ids(attn)).logits
        logp = torch.log_softmax(logits[:, :-1][tgt_mask].to(out_dtype(logits.dtype)), dim=-1)  # (N, V)
        return logp.gather(1, targets.unsqueeze(1)).squeeze(1), row
    hidden = backbone(
        input_ids=input_ids, attention_mask=attn, position_ids=position_ids(attn), use_cache=False
    ).last_hidden_state  # (B, T, H)
    h = hidden[:, :-1][tgt_mask]  # (N, H): only the positions that predict a counted token
    return token_logps(head, h, targets, causal_lm(model).config), row


def sequence_logps(model, batch: dict, params: dict | None = None) -> torch.Tensor:
    """Σ completion-token log-probs per row (B,), differentiable.

    `params` (optional): {parameter name: tensor} of `model` to use instead of its own, via
    `torch.func.functional_call` (what `torch.func.jvp` needs).
    """
    if params is not None:
        wrapped = _LogpModule(model)
        return torch.func.functional_call(
            wrapped, {f"m.{k}": v for k, v in params.items()}, (batch,), strict=False
        )
    tok, row = _completion_token_logps(model, batch)
    bsz = batch["input_ids"].shape[0]
    return torch.zeros(bsz, dtype=tok.dtype, device=tok.device).index_add(0, row, tok)


def per_token_logps(
    model, seqs: Sequence[tuple[list[int], list[int]]], pad_token_id: int
) -> list[np.ndarray]:
    """Log-prob of each counted completion token of each (prompt, completion), for inspection."""
    if not seqs:
        return []
    with torch.inference_mode():
        batch = collate(seqs, pad_token_id, "right", model_device(model))
        tok, row = _completion_token_logps(model, batch)
    tok, row = tok.double().cpu().numpy(), row.cpu().numpy()
    return [tok[row == i] for i in range(len(seqs))]


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


def pair_logps(
    model,
    tokenized: list[TokenizedPair],
    pad_token_id: int,
    batch_tokens: int = 8192,
    padding_side: str = "right",
    progress=None,
    share_prompt: bool = False,
) -> dict[str, np.ndarray]:
    """chosen/rejected log-probs (float64), token counts (int32) and truncation flags, in input order.

    `share_prompt=True` runs each prompt once and reuses its KV cache for both completions
    (pays when prompts are long compared to completions; see benchmarks/results/scoring.md).
    `progress`: anything with `update(n_pairs)` (prefsift.progress.Progress).
    """
    n = len(tokenized)
    out = _counts(tokenized)
    out["chosen_logp"] = np.zeros(n, dtype=np.float64)
    out["rejected_logp"] = np.zeros(n, dtype=np.float64)
    if n == 0:
        return out
    device = model_device(model)
    if share_prompt:
        from scoring.prefix import shared_prompt_logps

        shared_prompt_logps(model, tokenized, pad_token_id, batch_tokens, out, progress)
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
