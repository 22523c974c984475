"""Tokenize preference pairs exactly the way TRL 1.16's `DPOTrainer` does.

Parity matters: a margin we compute must equal the one a TRL run logs for the same pair.
TRL (`DPOTrainer._prepare_dataset` + `DataCollatorForPreference`) does, per pair:

1. Standard (plain-string) data: append `eos_token` to chosen and rejected unless they already
   end with it. Conversational data: no EOS (the chat template closes the turn).
2. Tokenize the prompt, prompt+chosen and prompt+rejected *as whole strings* (string
   concatenation, the tokenizer's default special tokens), or with the chat template
   (`add_generation_prompt=True` for the prompt alone).
3. The completion starts at the shortest common prefix of the prompt ids with both full
   sequences (tokens can merge across the boundary; some templates render the prompt alone
   differently).
4. Truncate each full sequence (prompt + completion) to `max_length`: `keep_start` keeps the
   first tokens, `keep_end` the last ones, independently for chosen and rejected.

TRL then drops pairs whose prompt alone fills `max_length` (keep_start); we keep them here and
flag them `truncated` (their completion log-prob is an empty sum, 0), and the scores leave them
out (`storage.runs.fully_truncated_pairs`: no IRM, LossDiff or IF, so no band keeps them).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field

from prefsift.scoring.errors import TokenizationError

TRUNCATION_MODES = ("keep_start", "keep_end")


@dataclass(frozen=True)
class TokenizeConfig:
    """How pairs become token ids. Every field changes the numbers, so all go into cache keys."""

    max_length: int | None = 1024  # prompt + completion; None = no truncation (TRL's DPOConfig default 1024)
    truncation_mode: str = "keep_start"  # TRL's default; "keep_end" is deprecated in TRL but still supported
    add_eos: bool = True  # TRL appends eos_token to plain-string completions
    chat_template_kwargs: tuple[tuple[str, str], ...] = field(default=())  # extra template variables, sorted

    def __post_init__(self) -> None:
        if self.truncation_mode not in TRUNCATION_MODES:
            raise ValueError(
                f"truncation_mode must be one of {TRUNCATION_MODES}, got {self.truncation_mode!r}"
            )
        if self.max_length is not None and (not isinstance(self.max_length, int) or self.max_length < 2):
            raise ValueError(f"max_length must be an integer >= 2 or None, got {self.max_length!r}")
        if list(self.chat_template_kwargs) != sorted(self.chat_template_kwargs):
            raise ValueError("chat_template_kwargs must be a sorted tuple of (key, value) pairs")

    def to_dict(self) -> dict:
        d = asdict(self)
        d["chat_template_kwargs"] = [list(kv) for kv in self.chat_template_kwargs]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> TokenizeConfig:
        """The config a run recorded (`to_dict`, read back from JSON)."""
        kwargs = tuple(tuple(kv) for kv in d.get("chat_template_kwargs") or ())
        return cls(**{**d, "chat_template_kwargs": kwargs})


@dataclass
class TokenizedPair:
    """One pair as token ids, after truncation.

    `prompt_ids` is the prompt kept in front of the chosen completion. With `keep_end`
    truncation the rejected side can keep a different part of the prompt:
    `rejected_prompt_ids` then holds it (None = same as `prompt_ids`).
    """

    prompt_ids: list[int]
    chosen_ids: list[int]
    rejected_ids: list[int]
    truncated: bool = False
    rejected_prompt_ids: list[int] | None = None
    # Tokens at the end of the prompt (tokenized alone) that prompt+completion does not share:
    # TRL's "tokenized prompt is not a prefix of the tokenized prompt+completion" (see step 3).
    prompt_cut: int = 0

    def chosen_seq(self) -> tuple[list[int], list[int]]:
        return self.prompt_ids, self.chosen_ids

    def rejected_seq(self) -> tuple[list[int], list[int]]:
        prompt = self.prompt_ids if self.rejected_prompt_ids is None else self.rejected_prompt_ids
        return prompt, self.rejected_ids


def tokenizer_signature(tokenizer) -> str:
    """A short hash of what in a tokenizer changes token ids (vocab size, specials, chat template)."""
    parts = {
        "class": type(tokenizer).__name__,
        "len": len(tokenizer),
        "eos": tokenizer.eos_token,
        "bos": getattr(tokenizer, "bos_token", None),
        "template": getattr(tokenizer, "chat_template", None),
        "name": getattr(tokenizer, "name_or_path", ""),
    }
    probe = tokenizer("The quick brown fox. 123 \n\n Assistant: ok")["input_ids"]
    parts["probe"] = list(probe)
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _is_conversational(value) -> bool:
    return isinstance(value, list) and (not value or isinstance(value[0], dict))


def _common_prefix_length(a: list[int], b: list[int]) -> int:
    return next((n for n, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def _truncate(
    prompt: list[int], completion: list[int], config: TokenizeConfig
) -> tuple[list[int], list[int], bool]:
    """TRL's collator truncation of prompt+completion, returned split back into its two parts."""
    n = len(prompt) + len(completion)
    if config.max_length is None or n <= config.max_length:
        return prompt, completion, False
    m = config.max_length
    if config.truncation_mode == "keep_start":
        if len(prompt) >= m:
            return prompt[:m], [], True
        return prompt, completion[: m - len(prompt)], True
    # keep_end: the last m tokens of prompt+completion
    if len(completion) >= m:
        return [], completion[len(completion) - m :], True
    return prompt[len(prompt) - (m - len(completion)) :], completion, True


def _template_ids(
    tokenizer, messages: list[dict], config: TokenizeConfig, add_generation_prompt: bool
) -> list[int]:
    out = tokenizer.apply_chat_template(
        messages,
        tokenize=True,
        return_dict=True,
        add_generation_prompt=add_generation_prompt,
        **dict(config.chat_template_kwargs),
    )
    return list(out["input_ids"])


def tokenize_pairs(tokenizer, pairs: list[dict], config: TokenizeConfig | None = None) -> list[TokenizedPair]:
    """Token ids of each pair (dicts with prompt/chosen/rejected), in input order."""
    config = config or TokenizeConfig()
    if not pairs:
        return []
    conv = [_is_conversational(p["prompt"]) or _is_conversational(p["chosen"]) for p in pairs]
    if any(conv) and not getattr(tokenizer, "chat_template", None):
        raise TokenizationError(
            "conversational pairs need a tokenizer with a chat template, and this tokenizer "
            f"({getattr(tokenizer, 'name_or_path', '?')}) has none: use a chat/instruct model's tokenizer "
            "or ingest the data as plain prompt/chosen/rejected strings"
        )
    # 1-2. ids of prompt, prompt+chosen, prompt+rejected (batched for the plain-string pairs)
    triples: list[tuple[list[int], list[int], list[int]] | None] = [None] * len(pairs)
    std_idx = [i for i, c in enumerate(conv) if not c]
    if std_idx:
        eos = tokenizer.eos_token or ""
        texts: list[str] = []
        for i in std_idx:
            p = pairs[i]
            chosen, rejected = p["chosen"], p["rejected"]
            if config.add_eos and eos:
                chosen = chosen if chosen.endswith(eos) else chosen + eos
                rejected = rejected if rejected.endswith(eos) else rejected + eos
            texts += [p["prompt"], p["prompt"] + chosen, p["prompt"] + rejected]
        ids = tokenizer(texts)["input_ids"]
        for k, i in enumerate(std_idx):
            triples[i] = (list(ids[3 * k]), list(ids[3 * k + 1]), list(ids[3 * k + 2]))
    for i, c in enumerate(conv):
        if not c:
            continue
        p = pairs[i]
        if not all(_is_conversational(p[k]) for k in ("prompt", "chosen", "rejected")):
            raise TokenizationError(f"pair {i}: mixes conversational (message list) and plain-string fields")
        try:
            triples[i] = (
                _template_ids(tokenizer, p["prompt"], config, add_generation_prompt=True),
                _template_ids(tokenizer, p["prompt"] + p["chosen"], config, add_generation_prompt=False),
                _template_ids(tokenizer, p["prompt"] + p["rejected"], config, add_generation_prompt=False),
            )
        except Exception as exc:  # jinja errors of a template, bad message dicts
            raise TokenizationError(f"pair {i}: the chat template failed: {exc}") from exc
    # 3-4. split at the common prefix, then truncate each side like TRL's collator
    out: list[TokenizedPair] = []
    for prompt_ids, pc_ids, pr_ids in triples:  # type: ignore[misc]
        plen = min(_common_prefix_length(prompt_ids, pc_ids), _common_prefix_length(prompt_ids, pr_ids))
        prompt = prompt_ids[:plen]
        c_prompt, chosen, c_trunc = _truncate(prompt, pc_ids[plen:], config)
        r_prompt, rejected, r_trunc = _truncate(prompt, pr_ids[plen:], config)
        out.append(
            TokenizedPair(
                prompt_ids=c_prompt,
                chosen_ids=chosen,
                rejected_ids=rejected,
                truncated=c_trunc or r_trunc,
                rejected_prompt_ids=None if r_prompt == c_prompt else r_prompt,
                prompt_cut=len(prompt_ids) - plen,
            )
        )
    return out
