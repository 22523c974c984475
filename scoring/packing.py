"""Pairs packed for the log-prob pass: every unique token once, no padding inside a row.

A DPO pair (x, y_w, y_l) becomes ONE sequence: the prompt once, then the chosen response, then
the rejected one (prefix sharing, Wang & Hegde, arXiv 2410.20305):

    tokens     x0 x1 x2 | w0 w1 | l0 l1 l2
    positions   0  1  2 |  3  4 |  3  4  5      the rejected response restarts after the prompt
    branch      0  0  0 |  1  1 |  2  2  2      0 = prompt, 1 = chosen, 2 = rejected

and a query attends to a key of the same pair at or before it whose branch is the prompt's or
its own, so the rejected response never sees the chosen one. Every token then has exactly the
context (and the position) it has in its own padded sequence: the numbers are those of the
plain path, up to float rounding. Several pairs share a row (first-fit, longest first), each in
its own block of the block-diagonal mask, so a row has no padding except at its end.

Counted tokens are predicted as in `scoring.logprobs.collate`: the last prompt position predicts
the first token of both responses; a response with an empty prompt has its first token uncounted.
A pair whose two sides keep different prompts (`keep_end` truncation) is packed as two plain
sequences, prompt + response each.

`pack_batches` returns batches whose outputs are laid out [chosen of k pairs; rejected of k pairs],
the layout `scoring.influence` expects from a `logp_fn`. The batch dict:
  input_ids, position_ids (B, C) long; attention_mask (B, 1, C, C) bool, True = may attend;
  target_pos (N,) flat index into B*C of the position that predicts each counted token;
  target_ids (N,) that token; target_out (N,) its output sequence in [0, 2k).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch

from prefsift.scoring.tokenize import TokenizedPair

PROMPT, CHOSEN, REJECTED = 0, 1, 2


def unit_length(t: TokenizedPair) -> int:
    """Tokens a pair occupies in a packed row."""
    if t.rejected_prompt_ids is None:
        return len(t.prompt_ids) + len(t.chosen_ids) + len(t.rejected_ids)
    return len(t.prompt_ids) + len(t.chosen_ids) + len(t.rejected_prompt_ids) + len(t.rejected_ids)


def pack_rows(lengths: Sequence[int], row_tokens: int) -> list[list[int]]:
    """Unit indices packed into rows of at most `row_tokens` tokens, first fit, longest first; a
    unit longer than that gets a row of its own. Rows come out fullest first, so the rows that
    `_group` batches together have about the same length."""
    rows: list[list[int]] = []
    free: list[int] = []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        for r, space in enumerate(free):
            if lengths[i] <= space:
                rows[r].append(i)
                free[r] -= lengths[i]
                break
        else:
            rows.append([i])
            free.append(max(row_tokens - lengths[i], 0))
    fill = [sum(lengths[i] for i in row) for row in rows]
    order = sorted(range(len(rows)), key=lambda r: -fill[r])
    return [rows[r] for r in order]


def _segments(t: TokenizedPair, i: int, k: int):
    """Blocks of pair i of k: (prompt, (chosen ids, output), (rejected ids, output)); one block
    if the two sides share their prompt, else one per side."""
    chosen, rejected = (t.chosen_ids, i), (t.rejected_ids, k + i)
    if t.rejected_prompt_ids is None:
        return [(t.prompt_ids, chosen, rejected)]
    return [(t.prompt_ids, chosen, ([], k + i)), (t.rejected_prompt_ids, ([], i), rejected)]


def pack(pairs: Sequence[TokenizedPair], rows: list[list[int]], device=None) -> dict:
    """The packed batch of `pairs` (row r holds pairs rows[r]); outputs [chosen; rejected] in the
    order of `pairs`."""
    k = len(pairs)
    width = max(max((sum(unit_length(pairs[i]) for i in row) for row in rows), default=1), 1)
    n_rows = len(rows)
    ids = torch.zeros((n_rows, width), dtype=torch.long)
    pos = torch.zeros((n_rows, width), dtype=torch.long)
    seg = torch.full((n_rows, width), -1, dtype=torch.long)  # block id in the row, -1 = padding
    branch = torch.zeros((n_rows, width), dtype=torch.long)
    t_pos: list[int] = []
    t_ids: list[int] = []
    t_out: list[int] = []
    for r, row in enumerate(rows):
        o = 0  # next free column of row r
        for block, (prompt, chosen, rejected) in enumerate(s for i in row for s in _segments(pairs[i], i, k)):
            p = len(prompt)
            ids[r, o : o + p] = torch.tensor(prompt, dtype=torch.long)
            pos[r, o : o + p] = torch.arange(p)
            seg[r, o : o + p] = block
            o += p
            last_prompt = r * width + o - 1  # predicts the first token of both responses
            for side, (resp, slot) in ((CHOSEN, chosen), (REJECTED, rejected)):
                n = len(resp)
                if not n:
                    continue
                ids[r, o : o + n] = torch.tensor(resp, dtype=torch.long)
                pos[r, o : o + n] = torch.arange(p, p + n)
                seg[r, o : o + n] = block
                branch[r, o : o + n] = side
                # response token j (j >= 1) is predicted at column o + j - 1; token 0 by the prompt's
                # last position, or by nothing when the prompt is empty (then it is not counted)
                t_pos += ([last_prompt] if p else []) + [r * width + o + j - 1 for j in range(1, n)]
                t_ids += resp if p else resp[1:]
                t_out += [slot] * (n if p else n - 1)
                o += n
    # may attend: same block, not in the future, and the key is prompt or the query's own branch
    same = (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] >= 0)  # (B, C, C)
    causal = torch.ones((width, width), dtype=torch.bool).tril()
    own = (branch[:, None, :] == PROMPT) | (branch[:, None, :] == branch[:, :, None])
    mask = same & causal & own
    mask |= torch.eye(width, dtype=torch.bool)  # padding attends to itself: no empty softmax row
    out = {
        "input_ids": ids,
        "position_ids": pos,
        "attention_mask": mask.unsqueeze(1),  # (B, 1, C, C)
        "target_pos": torch.tensor(t_pos, dtype=torch.long),
        "target_ids": torch.tensor(t_ids, dtype=torch.long),
        "target_out": torch.tensor(t_out, dtype=torch.long),
    }
    if device is not None:
        out = {key: v.to(device) for key, v in out.items()}
    out["n_out"] = 2 * k
    return out


def _group(rows: list[list[int]], lengths: Sequence[int], batch_tokens: int) -> list[list[list[int]]]:
    """Consecutive rows grouped so that rows x widest row <= batch_tokens (at least one row)."""
    groups: list[list[list[int]]] = []
    cur: list[list[int]] = []
    widest = 0
    for row in rows:
        width = sum(lengths[i] for i in row)
        if cur and (len(cur) + 1) * max(widest, width) > batch_tokens:
            groups.append(cur)
            cur, widest = [], 0
        cur.append(row)
        widest = max(widest, width)
    if cur:
        groups.append(cur)
    return groups


def pack_batches(
    tokenized: Sequence[TokenizedPair], batch_tokens: int, row_tokens: int, device=None
) -> Iterator[tuple[list[int], dict]]:
    """(pair indices, packed batch) covering `tokenized`, fullest rows first; rows of at most
    min(row_tokens, batch_tokens) tokens (or one pair), a batch at most max(batch_tokens, one row)
    tokens, the rows' end padding included. Lazy: a batch (and
    its (B, 1, C, C) mask) is built when it is asked for."""
    lengths = [unit_length(t) for t in tokenized]
    for group in _group(pack_rows(lengths, min(row_tokens, batch_tokens)), lengths, batch_tokens):
        idx = [i for row in group for i in row]
        local = {i: j for j, i in enumerate(idx)}
        yield idx, pack([tokenized[i] for i in idx], [[local[i] for i in row] for row in group], device)


def packed_tokens(tokenized: Sequence[TokenizedPair], batch_tokens: int, row_tokens: int) -> int:
    """Tokens the packed path runs through the transformer (the rows' end padding included)."""
    lengths = [unit_length(t) for t in tokenized]
    groups = _group(pack_rows(lengths, min(row_tokens, batch_tokens)), lengths, batch_tokens)
    return sum(len(g) * max(sum(lengths[i] for i in row) for row in g) for g in groups)
