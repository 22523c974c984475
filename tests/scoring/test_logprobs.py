"""Sequence log-probs: batched fast path vs a naive float64 loop, and margins vs TRL's DPOTrainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scoring.logprobs import collate, length_batches, pair_logps, sequence_logps
from scoring.tokenize import TokenizeConfig, tokenize_pairs

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
    ("padding_side", "batch_tokens"), [("right", 1), ("left", 40), ("right", 100_000), ("left", 100_000)]
)
def test_pair_logps_equal_naive_float64_loop(
    tok_and_model64, tiny_pairs, max_length, padding_side, batch_tokens
):
    tok, model = tok_and_model64
    tp, ref_c, ref_r = naive_reference(tok, model, tiny_pairs + EXTRA, max_length)
    out = pair_logps(model, tp, tok.pad_token_id, batch_tokens=batch_tokens, padding_side=padding_side)
    assert out["chosen_logp"].dtype == np.float64
    assert np.abs(out["chosen_logp"] - ref_c).max() < 1e-6
    assert np.abs(out["rejected_logp"] - ref_r).max() < 1e-6
    # shared-prompt KV cache path: same numbers
    shared = pair_logps(model, tp, tok.pad_token_id, batch_tokens=batch_tokens, share_prompt=True)
    assert np.abs(shared["chosen_logp"] - ref_c).max() < 1e-6
    assert np.abs(shared["rejected_logp"] - ref_r).max() < 1e-6
    # token counts = number of summed terms
    assert out["chosen_tokens"][-2] == len(tp[-2].chosen_ids) - 1  # empty prompt
    assert out["prompt_tokens"].dtype == np.int32 and out["truncated"].dtype == bool


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

    from scoring import metrics
    from scoring.models import ModelSpec, load_model

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
