"""Tokenization parity with TRL 1.16's DPOTrainer (dataset preparation + collator truncation)."""

from __future__ import annotations

import pytest

from prefsift.scoring.errors import TokenizationError
from prefsift.scoring.logprobs import collate
from prefsift.scoring.tokenize import TokenizeConfig, tokenize_pairs

CONV_PAIRS = [
    {
        "prompt": [{"role": "user", "content": "what is the capital of france ?"}],
        "chosen": [{"role": "assistant", "content": "the capital of france is paris ."}],
        "rejected": [{"role": "assistant", "content": "it is a city ."}],
    },
    {
        "prompt": [
            {"role": "system", "content": "reply in one word ."},
            {"role": "user", "content": "is water wet ?"},
            {"role": "assistant", "content": "yes"},
            {"role": "user", "content": "why is the sky blue ?"},
        ],
        "chosen": [{"role": "assistant", "content": "because blue light is scattered more ."}],
        "rejected": [{"role": "assistant", "content": "the sky is green ."}],
    },
]


def trl_tokenized(model_dir, pairs, max_length=None):
    """TRL's own tokenized dataset (prompt_ids, chosen_ids, rejected_ids) and its collator."""
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tok = AutoTokenizer.from_pretrained(model_dir)
    args = DPOConfig(
        output_dir=str(model_dir / "trl_out"),
        use_cpu=True,
        bf16=False,
        max_length=max_length,
        precompute_ref_log_probs=False,
        report_to=[],
        activation_checkpointing=False,
    )
    trainer = DPOTrainer(
        model=str(model_dir), args=args, train_dataset=Dataset.from_list(pairs), processing_class=tok
    )
    return tok, trainer


def _rows(batch, i):
    n = int(batch["attention_mask"][i].sum())
    return batch["input_ids"][i, :n].tolist(), batch["completion_mask"][i, 1:n].bool().tolist()


@pytest.mark.parametrize("conversational", [False, True], ids=["standard", "conversational"])
def test_ids_and_truncation_equal_trl(tiny_model_dir, tiny_pairs, conversational):
    pairs = CONV_PAIRS if conversational else tiny_pairs
    tok, trainer = trl_tokenized(tiny_model_dir, pairs, max_length=None)
    ours = tokenize_pairs(tok, pairs, TokenizeConfig(max_length=None))
    ds = trainer.train_dataset
    assert len(ds) == len(pairs)
    for t, row in zip(ours, ds):
        assert (t.prompt_ids, t.chosen_ids, t.rejected_ids) == (
            row["prompt_ids"],
            row["chosen_ids"],
            row["rejected_ids"],
        )
        assert not t.truncated
    if not conversational:
        assert all(t.chosen_ids[-1] == tok.eos_token_id for t in ours)  # TRL appends EOS to plain strings
    # Truncation: TRL truncates in its collator; compare the token rows and the counted tokens.
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    for max_length in (12, 20):
        coll = DataCollatorForPreference(pad_token_id=tok.pad_token_id, max_length=max_length)
        trl_batch = coll([dict(r) for r in ds])
        cut = tokenize_pairs(tok, pairs, TokenizeConfig(max_length=max_length))
        seqs = [t.chosen_seq() for t in cut] + [t.rejected_seq() for t in cut]
        our_batch = collate(seqs, tok.pad_token_id)
        for i in range(len(seqs)):
            assert _rows(our_batch, i) == _rows(trl_batch, i)
        full = [len(r["prompt_ids"]) + max(len(r["chosen_ids"]), len(r["rejected_ids"])) for r in ds]
        assert [t.truncated for t in cut] == [f > max_length for f in full]


def test_keep_end_keeps_each_side_tail(tiny_model_dir, tiny_pairs):
    from transformers import AutoTokenizer
    from trl.trainer.dpo_trainer import DataCollatorForPreference

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    full = tokenize_pairs(tok, tiny_pairs, TokenizeConfig(max_length=None))
    cut = tokenize_pairs(tok, tiny_pairs, TokenizeConfig(max_length=14, truncation_mode="keep_end"))
    coll = DataCollatorForPreference(pad_token_id=tok.pad_token_id, max_length=14, truncation_mode="keep_end")
    trl_batch = coll(
        [
            {"prompt_ids": t.prompt_ids, "chosen_ids": t.chosen_ids, "rejected_ids": t.rejected_ids}
            for t in full
        ]
    )
    seqs = [t.chosen_seq() for t in cut] + [t.rejected_seq() for t in cut]
    our_batch = collate(seqs, tok.pad_token_id)
    for i in range(len(seqs)):
        assert _rows(our_batch, i) == _rows(trl_batch, i)
    assert any(t.rejected_prompt_ids is not None for t in cut)  # the two sides kept different prompt tails


def test_boundary_merge_uses_common_prefix(tiny_model_dir):
    """A prompt ending in a space merges with the completion: the split is at the common prefix."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    pair = {"prompt": "what is two plus three ? ", "chosen": "five", "rejected": "seven"}
    t = tokenize_pairs(tok, [pair])[0]
    full = tok(pair["prompt"] + pair["chosen"] + tok.eos_token)["input_ids"]
    assert t.prompt_ids + t.chosen_ids == full
    assert len(t.prompt_ids) <= len(tok(pair["prompt"])["input_ids"])


def test_conversational_without_template_is_a_clear_error(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    tok.chat_template = None
    with pytest.raises(TokenizationError, match="chat template"):
        tokenize_pairs(tok, CONV_PAIRS)


def test_config_validation_and_dict():
    with pytest.raises(ValueError):
        TokenizeConfig(truncation_mode="middle")
    with pytest.raises(ValueError):
        TokenizeConfig(max_length=1)
    d = TokenizeConfig(max_length=None).to_dict()
    assert d["max_length"] is None and d["truncation_mode"] == "keep_start"
    assert TokenizeConfig().to_dict() != TokenizeConfig(max_length=512).to_dict()


def test_prompt_cut_counts_the_prompt_tokens_trl_leaves_out():
    """TRL's "tokenized prompt is not a prefix of the tokenized prompt+completion": a prompt
    ending in a space loses that space token to the answer; a clean boundary or a chat template
    loses nothing."""
    from tests.conftest import build_tiny_tokenizer

    tok = build_tiny_tokenizer()
    cut, clean, chat = tokenize_pairs(
        tok,
        [
            {"prompt": "reply in one word : ", "chosen": "yes", "rejected": "no"},
            {"prompt": "reply in one word :", "chosen": " yes", "rejected": " no"},
            {
                "prompt": [{"role": "user", "content": "reply in one word :"}],
                "chosen": [{"role": "assistant", "content": "yes"}],
                "rejected": [{"role": "assistant", "content": "no"}],
            },
        ],
        TokenizeConfig(max_length=None),
    )
    assert cut.prompt_cut >= 1
    assert (clean.prompt_cut, chat.prompt_cut) == (0, 0)


def test_config_read_back_from_a_run_record_is_the_same_config():
    """explain-pair tokenizes a pair as its score run did: the run records `to_dict()` as JSON."""
    import json

    config = TokenizeConfig(
        max_length=64, truncation_mode="keep_end", chat_template_kwargs=(("a", 1), ("b", "x"))
    )
    assert TokenizeConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert TokenizeConfig.from_dict({}) == TokenizeConfig()
