"""Sequence log-probs: batched fast paths (packed, padded) vs a naive float64 loop, packed vs padded
per pair, and margins vs TRL's DPOTrainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from prefsift.scoring.logprobs import (
    collate,
    length_batches,
    packed_supported,
    pair_logps,
    pair_token_logps,
    sequence_logps,
)
from prefsift.scoring.packing import pack, pack_batches, pack_rows, packed_tokens, unit_length
from prefsift.scoring.tokenize import TokenizeConfig, tokenize_pairs

EXTRA = [
    {"prompt": "", "chosen": "yes", "rejected": "no ."},  # empty prompt: the first token is never counted
    {
        "prompt": "please write a long answer about the city of paris and its water",
        "chosen": "ok",
        "rejected": "no",
    },
]


@pytest.fixture(scope="module")
def tok_and_model64(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float64).eval()
    return tok, model


def naive_logp(model, prompt: list[int], completion: list[int]) -> float:
    """One sequence, full logits, float64 log-softmax, sum over the predicted completion tokens."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    logp = torch.log_softmax(logits[:-1], dim=-1).gather(1, ids[0, 1:, None])[:, 0]
    return float(logp[max(len(prompt), 1) - 1 :].sum())


_NAIVE: dict = {}


def naive_reference(tok, model, pairs, max_length):
    """Tokenized pairs and their naive float64 log-probs (computed once per max_length)."""
    if max_length not in _NAIVE:
        mode = "keep_end" if max_length else "keep_start"
        tp = tokenize_pairs(tok, pairs, TokenizeConfig(max_length=max_length, truncation_mode=mode))
        ref_c = np.array([naive_logp(model, *t.chosen_seq()) for t in tp])
        ref_r = np.array([naive_logp(model, *t.rejected_seq()) for t in tp])
        _NAIVE[max_length] = (tp, ref_c, ref_r)
    return _NAIVE[max_length]


@pytest.mark.parametrize("max_length", [None, 16])
@pytest.mark.parametrize(
    ("layout", "padding_side", "batch_tokens"),
    [
        ("padded", "right", 1),
        ("padded", "left", 40),
        ("padded", "right", 100_000),
        ("padded", "left", 100_000),
        ("packed", "right", 1),
        ("packed", "right", 40),
        ("packed", "right", 100_000),
    ],
)
def test_pair_logps_equal_naive_float64_loop(
    tok_and_model64, tiny_pairs, max_length, layout, padding_side, batch_tokens
):
    tok, model = tok_and_model64
    tp, ref_c, ref_r = naive_reference(tok, model, tiny_pairs + EXTRA, max_length)
    out = pair_logps(
        model,
        tp,
        tok.pad_token_id,
        batch_tokens=batch_tokens,
        padding_side=padding_side,
        layout=layout,
        row_tokens=min(batch_tokens, 64),
    )
    assert out["chosen_logp"].dtype == np.float64
    assert np.abs(out["chosen_logp"] - ref_c).max() < 1e-6
    assert np.abs(out["rejected_logp"] - ref_r).max() < 1e-6
    # token counts = number of summed terms
    assert out["chosen_tokens"][-2] == len(tp[-2].chosen_ids) - 1  # empty prompt
    assert out["prompt_tokens"].dtype == np.int32 and out["truncated"].dtype == bool


@pytest.mark.parametrize(
    "config",
    [
        TokenizeConfig(max_length=None),
        TokenizeConfig(max_length=16),  # keep_start: each side cut on its own, prompt shared
        TokenizeConfig(max_length=16, truncation_mode="keep_end"),  # sides keep different prompts
        TokenizeConfig(max_length=8, truncation_mode="keep_end"),  # some prompts cut away entirely
    ],
)
def test_packed_equals_padded_per_pair_float64(tok_and_model64, tiny_pairs, config):
    """Each pair as one sequence (prompt once, rejected's positions restarted, the responses kept
    apart), several pairs a row: the same float64 numbers as one padded row per side."""
    tok, model = tok_and_model64
    assert model.config._attn_implementation == "sdpa"  # float64 end to end (eager softmaxes in float32)
    tp = tokenize_pairs(tok, tiny_pairs + EXTRA, config)
    padded = pair_logps(model, tp, tok.pad_token_id, layout="padded")
    batches = list(pack_batches(tp, batch_tokens=96, row_tokens=48))
    assert len(batches) > 1 and any(len(idx) > batches[0][1]["input_ids"].shape[0] for idx, _ in batches)
    packed = pair_logps(model, tp, tok.pad_token_id, layout="packed", batch_tokens=96, row_tokens=48)
    for key in ("chosen_logp", "rejected_logp"):
        assert np.abs(packed[key] - padded[key]).max() < 1e-9, key
    # the work: every unique token once plus the rows' end padding, less than the padded layout's
    unique = sum(unit_length(t) for t in tp)
    lengths = [len(p) + len(c) for t in tp for p, c in (t.chosen_seq(), t.rejected_seq())]
    padded_work = sum(len(b) * max(lengths[i] for i in b) for b in length_batches(lengths, 96))
    assert unique <= packed_tokens(tp, 96, 48)
    if config.truncation_mode == "keep_start":  # every prompt shared: run once instead of twice
        assert packed_tokens(tp, 96, 48) < padded_work


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_full_logits_fallback_equals_the_head_at_counted_positions(
    tok_and_model64, tiny_pairs, layout, monkeypatch
):
    """A model whose backbone and LM head cannot be told apart runs a plain forward (full logits):
    the same numbers as the head applied at the counted positions only."""
    from prefsift.scoring import logprobs

    tok, model = tok_and_model64
    tp, ref_c, ref_r = naive_reference(tok, model, tiny_pairs + EXTRA, None)
    fast = pair_logps(model, tp, tok.pad_token_id, batch_tokens=64, layout=layout, row_tokens=48)
    monkeypatch.setattr(logprobs, "backbone_and_head", lambda m: (None, None))
    full = pair_logps(model, tp, tok.pad_token_id, batch_tokens=64, layout=layout, row_tokens=48)
    for key, ref in (("chosen_logp", ref_c), ("rejected_logp", ref_r)):
        assert np.abs(full[key] - fast[key]).max() < 1e-9 and np.abs(full[key] - ref).max() < 1e-6


def naive_token_logps(model, prompt: list[int], completion: list[int]) -> np.ndarray:
    """Each counted completion token's log-prob: one sequence, full logits, float64 log-softmax."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].double()
    logp = torch.log_softmax(logits[:-1], dim=-1).gather(1, ids[0, 1:, None])[:, 0]
    return logp[max(len(prompt), 1) - 1 :].numpy()


@pytest.mark.parametrize(
    "config",
    [
        TokenizeConfig(max_length=None),
        TokenizeConfig(max_length=16),
        TokenizeConfig(max_length=16, truncation_mode="keep_end"),  # sides keep different prompts
        TokenizeConfig(max_length=8, truncation_mode="keep_end"),  # some prompts cut away entirely
    ],
)
def test_token_logps_packed_equal_padded_and_naive_float64(tok_and_model64, tiny_pairs, config):
    """explain-pair's per-token log-probs on the packed path (several pairs a row) are the padded
    path's and a naive one-sequence loop's, token by token, and sum to pair_logps' sequence log-probs."""
    tok, model = tok_and_model64
    tp = tokenize_pairs(tok, tiny_pairs + EXTRA, config)
    assert len(list(pack_batches(tp, batch_tokens=96, row_tokens=48))) < len(tp)  # rows hold several pairs
    packed = pair_token_logps(model, tp, tok.pad_token_id, batch_tokens=96, layout="packed", row_tokens=48)
    padded = pair_token_logps(model, tp, tok.pad_token_id, batch_tokens=96, layout="padded")
    sums = pair_logps(model, tp, tok.pad_token_id, layout="packed", batch_tokens=96, row_tokens=48)
    for i, t in enumerate(tp):
        for side, seq in enumerate((t.chosen_seq(), t.rejected_seq())):
            naive = naive_token_logps(model, *seq)
            assert packed[i][side].dtype == np.float64 and len(packed[i][side]) == len(naive)
            assert len(padded[i][side]) == len(naive)
            if len(naive):
                assert np.abs(packed[i][side] - padded[i][side]).max() < 1e-9, (i, side)
                assert np.abs(packed[i][side] - naive).max() < 1e-9, (i, side)
        assert abs(packed[i][0].sum() - sums["chosen_logp"][i]) < 1e-9
        assert abs(packed[i][1].sum() - sums["rejected_logp"][i]) < 1e-9
    assert pair_token_logps(model, [], tok.pad_token_id) == []


def test_pack_layout_positions_mask_and_targets():
    """Prompt [1 2], chosen [3 4], rejected [5 6 7] in one row, then a pair with an empty prompt."""
    from prefsift.scoring.tokenize import TokenizedPair

    a = TokenizedPair(prompt_ids=[1, 2], chosen_ids=[3, 4], rejected_ids=[5, 6, 7])
    b = TokenizedPair(prompt_ids=[], chosen_ids=[8, 9], rejected_ids=[10])
    batch = pack([a, b], [[0, 1]])
    assert batch["input_ids"].tolist() == [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 2, 3, 4, 0, 1, 0]]
    m = batch["attention_mask"][0, 0].int()
    assert m[4].tolist() == [1, 1, 0, 0, 1, 0, 0, 0, 0, 0]  # rejected's first token: prompt + itself
    assert m[6].tolist() == [1, 1, 0, 0, 1, 1, 1, 0, 0, 0]
    assert m[3].tolist() == [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]  # chosen never sees the rejected
    assert m[9].tolist() == [0] * 9 + [1]  # the second pair sees nothing of the first, nor its chosen
    # outputs [chosen a, chosen b, rejected a, rejected b]; predictions from the column before,
    # both first response tokens of `a` from its last prompt token (column 1); `b`'s first tokens uncounted
    assert batch["target_ids"].tolist() == [3, 4, 5, 6, 7, 9]
    assert batch["target_pos"].tolist() == [1, 2, 1, 4, 5, 7]
    assert batch["target_out"].tolist() == [0, 0, 2, 2, 2, 1]
    assert batch["n_out"] == 4


def test_pack_rows_first_fit_longest_first():
    rows = pack_rows([5, 3, 4, 2, 6], row_tokens=8)
    assert sorted(i for r in rows for i in r) == [0, 1, 2, 3, 4]
    assert all(sum([5, 3, 4, 2, 6][i] for i in r) <= 8 for r in rows)
    assert rows[0] == [4, 3]  # 6 + 2, the fullest row first
    assert pack_rows([10, 2], row_tokens=4) == [[0], [1]]  # a unit longer than a row gets its own


def test_pack_batches_respect_the_token_budget(tok_and_model64, tiny_pairs):
    """--batch-tokens bounds memory: a packed batch (end padding included) stays within it, or
    is one row holding one pair that alone is longer."""
    tok, _ = tok_and_model64
    tp = tokenize_pairs(tok, tiny_pairs + EXTRA, TokenizeConfig())
    for budget in (30, 48, 100):
        seen = []
        for idx, b in pack_batches(tp, batch_tokens=budget, row_tokens=512):
            rows, width = b["input_ids"].shape
            assert rows * width <= budget or (rows == 1 and len(idx) == 1)
            seen += idx
        assert sorted(seen) == list(range(len(tp)))


def test_packed_layout_only_where_the_model_computes_it(tok_and_model64):
    _, model = tok_and_model64
    assert packed_supported(model)
    cfg = model.config
    try:
        cfg._attn_implementation = "flex_attention"  # would take position ids as sequence starts
        assert not packed_supported(model)
        cfg._attn_implementation = "sdpa"
        cfg.sliding_window = 8  # a window the packed rows would not respect
        assert not packed_supported(model)
    finally:
        cfg._attn_implementation, cfg.sliding_window = "sdpa", None
    with pytest.raises(ValueError, match="layout"):
        pair_logps(model, [], 0, layout="shared")


def test_collate_masks():
    b = collate([([1, 2, 3], [4, 5]), ([], [6, 7, 8]), ([9], [])], pad_token_id=0, padding_side="left")
    assert b["input_ids"].tolist() == [[1, 2, 3, 4, 5], [0, 0, 6, 7, 8], [0, 0, 0, 0, 9]]
    assert b["attention_mask"].tolist() == [[1, 1, 1, 1, 1], [0, 0, 1, 1, 1], [0, 0, 0, 0, 1]]
    assert b["completion_mask"].tolist() == [
        [False, False, False, True, True],
        [False, False, False, True, True],  # the very first token has no prediction
        [False] * 5,
    ]
    assert b["completion_mask"].dtype == torch.bool and b["input_ids"].dtype == torch.long


def test_length_batches_respect_budget():
    lengths = [5, 50, 7, 20, 20, 3, 49]
    batches = length_batches(lengths, batch_tokens=60)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 60


def test_sequence_logps_is_differentiable_and_jvp_matches_autograd(tok_and_model64, tiny_pairs):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    tok, model = tok_and_model64
    tp = tokenize_pairs(tok, tiny_pairs[:3])
    batch = collate([t.chosen_seq() for t in tp], tok.pad_token_id, "left")
    params = {k: v.detach() for k, v in model.named_parameters()}
    gen = torch.Generator().manual_seed(0)
    tangent = {k: torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in params.items()}
    with sdpa_kernel(SDPBackend.MATH):  # the CPU flash kernel has no forward-mode AD
        value, jv = torch.func.jvp(lambda p: sequence_logps(model, batch, params=p), (params,), (tangent,))
    live = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    s = sequence_logps(model, batch, params=live)
    assert torch.allclose(s.detach(), value)
    rev = []
    for i in range(len(s)):
        grads = torch.autograd.grad(s[i], list(live.values()), retain_graph=True, allow_unused=True)
        rev.append(sum((g * tangent[k]).sum() for g, k in zip(grads, live) if g is not None))
    assert torch.allclose(jv, torch.stack(rev), rtol=1e-5, atol=1e-5)


def test_margins_equal_trl_dpo_trainer(tiny_model_dir, tiny_model_dir_b, tiny_pairs):
    """Per-pair margins and log-probs through DPOTrainer's own loss path (batch of one pair each)."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from prefsift.scoring import metrics
    from prefsift.scoring.models import ModelSpec, load_model

    beta, max_length = 0.1, 20  # several pairs get truncated
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    args = DPOConfig(
        output_dir=str(tiny_model_dir_b / "trl_out"),
        use_cpu=True,
        bf16=False,
        max_length=max_length,
        beta=beta,
        per_device_train_batch_size=1,
        report_to=[],
        activation_checkpointing=False,
    )
    from transformers import AutoModelForCausalLM

    trainer = DPOTrainer(
        model=str(tiny_model_dir_b),
        ref_model=AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        args=args,
        train_dataset=Dataset.from_list(tiny_pairs),
        processing_class=tok,
    )
    assert len(trainer.train_dataset) == len(tiny_pairs)
    trl_margin, trl_chosen = [], []
    with torch.no_grad():
        for row in trainer.train_dataset:
            batch = trainer.data_collator([{k: row[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")}])
            trainer._compute_loss(trainer.model, batch, return_outputs=False)
            mode = "train" if trainer.model.training else "eval"
            trl_margin.append(trainer._metrics[mode]["rewards/margins"][-1])
            trl_chosen.append(trainer._metrics[mode]["logps/chosen"][-1])
    tp = tokenize_pairs(tok, tiny_pairs, TokenizeConfig(max_length=max_length))
    assert any(t.truncated for t in tp)
    pol = pair_logps(
        load_model(ModelSpec(str(tiny_model_dir_b), device="cpu")), tp, tok.pad_token_id, batch_tokens=64
    )
    ref = pair_logps(
        load_model(ModelSpec(str(tiny_model_dir), device="cpu")), tp, tok.pad_token_id, batch_tokens=64
    )
    ours = metrics.margin(
        pol["chosen_logp"], pol["rejected_logp"], ref["chosen_logp"], ref["rejected_logp"], beta
    )
    assert np.abs(ours - np.array(trl_margin)).max() < 1e-5
    assert np.abs(pol["chosen_logp"] - np.array(trl_chosen)).max() < 1e-4  # sums of ~60 float32 terms
