"""Share the prompt's forward pass between the chosen and the rejected completion.

A DPO pair is (x, y_w, y_l): the plain path runs x twice. Here each batch of prompts runs
once (left-padded so every prompt ends at the same column), its KV cache is duplicated
row-wise (chosen, rejected, chosen, rejected, ...), and the completions run on top of it.
The last prompt position predicts the first completion token of both sides.

Pays when prompts are long compared to completions (multi-turn dialogues such as HH-RLHF);
costs a cache copy and two-dimensional padding otherwise. Measured in
benchmarks/results/scoring.md. Numbers equal the plain path (tests/scoring/test_logprobs.py).
"""

from __future__ import annotations

import inspect

import numpy as np
import torch

from scoring.logprobs import (
    backbone_and_head,
    causal_lm,
    collate,
    length_batches,
    sequence_logps,
    token_logps,
)
from scoring.tokenize import TokenizedPair


def _pad_left(rows: list[list[int]], width: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
            attn[i, width - len(r) :] = 1
    return ids, attn


def _pad_right(rows: list[list[int]], width: int, pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attn = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, : len(r)] = torch.tensor(r, dtype=torch.long)
            attn[i, : len(r)] = 1
    return ids, attn


def _cache_arg(backbone) -> str:
    """transformers >= 5.2x names the KV-cache argument `cache`; older versions `past_key_values`."""
    return "cache" if "cache" in inspect.signature(backbone.forward).parameters else "past_key_values"


def _batch(model, backbone, head, pairs: list[TokenizedPair], pad: int, device) -> np.ndarray:
    """(b, 2) log-probs [chosen, rejected] of pairs whose two sides share a non-empty prompt."""
    lm = causal_lm(model)
    b = len(pairs)
    plen = torch.tensor([len(p.prompt_ids) for p in pairs], device=device)
    width_p = int(plen.max())
    # 1. the prompts, once: (b, P), left-padded so each prompt's last token sits at column P-1
    p_ids, p_attn = _pad_left([p.prompt_ids for p in pairs], width_p, pad)
    p_ids, p_attn = p_ids.to(device), p_attn.to(device)
    pos = (p_attn.cumsum(-1) - 1).clamp(min=0)
    res = backbone(input_ids=p_ids, attention_mask=p_attn, position_ids=pos, use_cache=True)
    cache = res.cache if getattr(res, "cache", None) is not None else res.past_key_values
    last = res.last_hidden_state[:, -1]  # (b, H): predicts the first completion token
    # 2. completions on a duplicated cache: row 2i = chosen of pair i, row 2i+1 = rejected
    comps = [c for p in pairs for c in (p.chosen_ids, p.rejected_ids)]
    clen = torch.tensor([len(c) for c in comps], device=device)
    width_c = max(int(clen.max()), 1)
    c_ids, c_attn = _pad_right(comps, width_c, pad)
    c_ids, c_attn = c_ids.to(device), c_attn.to(device)
    cache.batch_repeat_interleave(2)
    attn = torch.cat([p_attn.repeat_interleave(2, dim=0), c_attn], dim=1)  # (2b, P + C)
    c_pos = plen.repeat_interleave(2).unsqueeze(1) + torch.arange(width_c, device=device)  # (2b, C)
    cache_kw = {_cache_arg(backbone): cache}
    hidden = backbone(
        input_ids=c_ids, attention_mask=attn, position_ids=c_pos, use_cache=True, **cache_kw
    ).last_hidden_state  # (2b, C, H)
    # 3. first completion token from the prompt's last state; the others from the completion states
    has_first = clen > 0
    first_h = last.repeat_interleave(2, dim=0)[has_first]  # (n1, H)
    first_t = c_ids[:, 0][has_first]
    rest_mask = c_attn[:, 1:].bool()  # (2b, C-1): token t+1 predicted at position t
    rest_h = hidden[:, :-1][rest_mask]
    rest_t = c_ids[:, 1:][rest_mask]
    rows = torch.arange(2 * b, device=device)
    row_idx = torch.cat([rows[has_first], rows.unsqueeze(1).expand_as(rest_mask)[rest_mask]])
    tok = token_logps(head, torch.cat([first_h, rest_h]), torch.cat([first_t, rest_t]), lm.config)
    sums = torch.zeros(2 * b, dtype=tok.dtype, device=device).index_add(0, row_idx, tok)
    return sums.double().cpu().numpy().reshape(b, 2)


def shared_prompt_logps(
    model, tokenized: list[TokenizedPair], pad_token_id: int, batch_tokens: int, out: dict, progress=None
) -> None:
    """Fill out['chosen_logp'] / out['rejected_logp'] in place, sharing each prompt's forward pass."""
    device = next(model.parameters()).device
    backbone, head = backbone_and_head(model)
    shareable = [
        i
        for i, t in enumerate(tokenized)
        if backbone is not None and t.prompt_ids and t.rejected_prompt_ids is None
    ]
    rest = sorted(set(range(len(tokenized))) - set(shareable))
    # Budget in processed tokens: prompt once + two completion rows, with padding.
    cost = [
        len(tokenized[i].prompt_ids) + 2 * max(len(tokenized[i].chosen_ids), len(tokenized[i].rejected_ids))
        for i in shareable
    ]
    with torch.inference_mode():
        for idx in length_batches(cost, batch_tokens):
            pairs = [tokenized[shareable[j]] for j in idx]
            vals = _batch(model, backbone, head, pairs, pad_token_id, device)
            ids = [shareable[j] for j in idx]
            out["chosen_logp"][ids] = vals[:, 0]
            out["rejected_logp"][ids] = vals[:, 1]
            if progress is not None:
                progress.update(len(ids))
        # Pairs without a shared non-empty prompt take the plain path.
        seqs = [tokenized[i].chosen_seq() for i in rest] + [tokenized[i].rejected_seq() for i in rest]
        if seqs:
            values = np.zeros(len(seqs))
            for idx in length_batches([len(p) + len(c) for p, c in seqs], batch_tokens):
                batch = collate([seqs[k] for k in idx], pad_token_id, "right", device)
                values[idx] = sequence_logps(model, batch).double().cpu().numpy()
            out["chosen_logp"][rest] = values[: len(rest)]
            out["rejected_logp"][rest] = values[len(rest) :]
            if progress is not None:
                progress.update(len(rest))
