"""Memory of a training stage, decided before any model is loaded.

Training holds every activation of a micro-batch until its backward pass, so memory grows with
the tokens of one forward: `2 × pairs × longest row` (DPO runs chosen and rejected as rows of one
batch, padded to the longest). As scoring does with `--batch-tokens`, training sizes its
micro-batches from a token budget: the largest divisor of the batch whose tokens fit, with
gradient accumulation making up the rest, so the effective batch (and the number of optimizer
steps) is the one asked for. When a single pair is over the budget, activation checkpointing
pays: it keeps one tensor per layer instead of a dozen. When even that cannot fit in the memory
the device has, the stage is refused before it starts, with the estimate and the flag that fixes it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from prefsift.errors import UserError

log = logging.getLogger(__name__)

GIB = 2**30
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
# Bytes kept per token and layer until the backward pass, in units of hidden (or intermediate)
# size x 4 bytes: q, k, v, attention output, two norms, residuals and the MLP's three
# intermediate-size tensors (a rough count for Llama-style blocks, float32 activations).
HIDDEN_TENSORS, INTERMEDIATE_TENSORS = 16, 3
LOGIT_TENSORS = 4  # logits, their log-softmax, its gradient, and the reference model's logits


@dataclass(frozen=True)
class Shape:
    """What the estimate needs of a model, read from its config (nothing loaded)."""

    n_params: int
    layers: int
    hidden: int
    intermediate: int
    vocab: int

    @classmethod
    def of(cls, path: str) -> Shape:
        from transformers import AutoConfig

        c = AutoConfig.from_pretrained(path)
        c = getattr(c, "text_config", None) or c
        h, i, v, n = c.hidden_size, c.intermediate_size, c.vocab_size, c.num_hidden_layers
        kv = h * getattr(c, "num_key_value_heads", c.num_attention_heads) // c.num_attention_heads
        block = 2 * h * h + 2 * h * kv + 3 * h * i + 2 * h
        embeddings = v * h * (1 if getattr(c, "tie_word_embeddings", False) else 2)
        return cls(n_params=n * block + embeddings, layers=n, hidden=h, intermediate=i, vocab=v)

    def activation_bytes_per_token(self, checkpointing: bool) -> int:
        layer = (HIDDEN_TENSORS * self.hidden + INTERMEDIATE_TENSORS * self.intermediate) * 4
        kept = self.layers * self.hidden * 4 + layer if checkpointing else self.layers * layer
        return kept + LOGIT_TENSORS * self.vocab * 4


@dataclass(frozen=True)
class Plan:
    micro_batch: int  # pairs per forward and backward
    accumulation: int  # micro-batches per optimizer step
    checkpointing: bool
    tokens_per_pair: int  # 2 x the longest row (prompt + answer), at most 2 x max_length
    estimate_gib: float  # weights, gradients, optimizer state and activations of one micro-batch

    def describe(self) -> str:
        return (
            f"micro-batches of {self.micro_batch} pair(s) x {self.accumulation} accumulation step(s), "
            f"about {self.estimate_gib:.1f} GiB"
            + (", activation checkpointing" if self.checkpointing else "")
        )


def micro_batch(batch: int, tokens_per_pair: int, budget: int) -> int:
    """The largest divisor of `batch` whose micro-batches hold at most `budget` tokens (at least 1)."""
    for m in range(batch, 0, -1):
        if batch % m == 0 and m * tokens_per_pair <= budget:
            return m
    return 1


def estimate_gib(
    shape: Shape, dtype: str, lora: bool, ref_copy: bool, tokens: int, checkpointing: bool
) -> float:
    """Peak memory of one optimizer step beyond what the process holds before loading models."""
    weights = shape.n_params * DTYPE_BYTES[dtype] * (2 if ref_copy else 1)
    # full fine-tuning: float32 gradients and Adam's two moments; LoRA: a few MB, ignored
    training = 0 if lora else shape.n_params * 4 * 3
    return (weights + training + tokens * shape.activation_bytes_per_token(checkpointing)) / GIB


def available_gib(device: str) -> float:
    import torch

    if device.startswith("cuda") or (device == "auto" and torch.cuda.is_available()):
        index = torch.device(device if device.startswith("cuda") else "cuda").index
        return torch.cuda.mem_get_info(index or 0)[0] / GIB
    import psutil

    return psutil.virtual_memory().available / GIB


def plan_training(
    shape: Shape,
    *,
    batch: int,
    longest_row: int,
    max_length: int | None,
    budget: int,
    dtype: str,
    lora: bool,
    ref_copy: bool,
    checkpointing: bool | None,
    available: float,
    what: str,
) -> Plan:
    """Micro-batch, accumulation and checkpointing for one stage; refuses when it cannot fit.
    `checkpointing`: the user's choice, or None to decide here (on when one pair is over the
    budget, or when it makes the stage fit)."""
    row = min(longest_row, max_length) if max_length else longest_row
    per_pair = 2 * row
    m = micro_batch(batch, per_pair, budget)
    tokens = m * per_pair

    def need(n_tokens: float, ckpt: bool) -> float:
        return estimate_gib(shape, dtype, lora, ref_copy, n_tokens, ckpt)

    def tokens_that_fit(ckpt: bool) -> float:
        return (available - need(0, ckpt)) * GIB / shape.activation_bytes_per_token(ckpt)

    ckpt = checkpointing
    if ckpt is None:
        ckpt = tokens > budget or (need(tokens, False) > available and need(tokens, True) <= available)
    estimate = need(tokens, ckpt)
    if estimate <= available:
        return Plan(m, batch // m, ckpt, per_pair, round(estimate, 2))
    if m > 1 and tokens_that_fit(ckpt) >= per_pair:
        fix = f"--batch-tokens {int(tokens_that_fit(ckpt)) // per_pair * per_pair}"
    elif not ckpt and tokens_that_fit(True) >= per_pair:
        fix = "--set activation_checkpointing=true"
    elif tokens_that_fit(True) // 2 >= 16:
        fix = f"--max-length {min(int(tokens_that_fit(True) // 2), row - 1)}"
    else:
        fix = "--dtype bfloat16, LoRA (not --full), or a machine with more memory"
    raise UserError(
        f"{what} will not fit in memory: about {estimate:.1f} GiB for micro-batches of {m} pair(s) of up "
        f"to {row} tokens (weights, training state, activations), {available:.1f} GiB available. "
        f"Use {fix}"
    )
