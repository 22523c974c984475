"""Preference-data formats: detect one from a row, and turn each raw row into a valid pair
or a precise reason why it cannot be one (field + reason), never guessing silently.

Formats (TRL's names where TRL has one):
- standard:       prompt / chosen / rejected strings
- conversational: prompt / chosen / rejected lists of {role, content} messages
- implicit:       only chosen / rejected, each holding the whole dialogue (HH-RLHF); the prompt
                  is the shared dialogue up to the last assistant turn (text or messages)
- pairwise:       two responses and a preference label through a column mapping
                  (AlpacaEval: instruction, output_1, output_2, preference 1|2, 0 = tie)
"""

from __future__ import annotations

import collections
import hashlib
import json
import re
from dataclasses import dataclass

from prefsift.errors import UserError

FORMATS = ("standard", "conversational", "implicit", "pairwise")
ROLES = frozenset({"system", "user", "assistant", "tool"})
ASSISTANT_MARK = "\n\nAssistant:"
HUMAN_MARK = "\n\nHuman:"
DEFAULT_MAX_CHARS = 200_000  # the largest accepted field, in characters
NOISE_KEYS = ("noise", "is_noise", "label_noise", "swapped")
ALPACA_KEYS = {"instruction", "output_1", "output_2", "preference"}


@dataclass(frozen=True)
class ColumnMap:
    """Which source column plays which part. `a`/`b`/`label` only for pairwise data."""

    prompt: str = "prompt"
    chosen: str = "chosen"
    rejected: str = "rejected"
    a: str | None = None
    b: str | None = None
    label: str | None = None
    label_a: tuple = ("1", "a", "A", "output_1")  # label values meaning "a is preferred"
    label_b: tuple = ("2", "b", "B", "output_2")

    @classmethod
    def parse(cls, items: list[str] | None) -> ColumnMap:
        """From CLI `--map part=column` items (parts: prompt chosen rejected a b label)."""
        kw: dict = {}
        for item in items or []:
            if "=" not in item:
                raise UserError(f"--map expects part=column, got {item!r}")
            part, col = item.split("=", 1)
            if part not in ("prompt", "chosen", "rejected", "a", "b", "label"):
                raise UserError(f"--map: unknown part {part!r} (use prompt, chosen, rejected, a, b, label)")
            kw[part] = col
        return cls(**kw)


ALPACA_MAP = ColumnMap(prompt="instruction", a="output_1", b="output_2", label="preference")


@dataclass(frozen=True)
class Pair:
    pair_id: str
    kind: str  # standard | conversational
    prompt: str  # text, or JSON of a message list
    chosen: str
    rejected: str
    noise: bool | None
    meta: str | None


@dataclass(frozen=True)
class Bad:
    field: str
    reason: str
    detail: str = ""


def detect_format(row: dict, cmap: ColumnMap) -> tuple[str, ColumnMap]:
    keys = set(row)
    if cmap.label or cmap.a or cmap.b:
        return "pairwise", cmap
    if ALPACA_KEYS <= keys:
        return "pairwise", ALPACA_MAP
    if cmap.chosen in keys or cmap.rejected in keys or cmap.prompt in keys:
        # A row missing some of the three still decides the format; normalise() then names the
        # missing field instead of calling the whole row unrecognisable.
        if cmap.prompt not in keys and cmap.chosen in keys and cmap.rejected in keys:
            return "implicit", cmap
        sample = row.get(cmap.chosen, row.get(cmap.rejected))
        return ("conversational" if _looks_like_messages(sample) else "standard"), cmap
    raise UserError(
        f"cannot detect the format from columns {sorted(keys)[:20]}: expected prompt/chosen/rejected, "
        "chosen/rejected (implicit prompt) or a pairwise mapping, e.g. "
        "--map prompt=instruction --map a=output_1 --map b=output_2 --map label=preference"
    )


def _looks_like_messages(value) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(m, dict) and "role" in m for m in value)


def vote_format(rows: list[dict], cmap: ColumnMap) -> tuple[str | None, ColumnMap]:
    """The format most of the first rows agree on (ties: the first row's)."""
    votes: collections.Counter = collections.Counter()
    maps: dict[str, ColumnMap] = {}
    for row in rows:
        try:
            f, m = detect_format(row, cmap)
        except UserError:
            continue
        votes[f] += 1
        maps.setdefault(f, m)
    if not votes:
        return None, cmap  # nothing recognisable: every row is quarantined as such
    best = max(votes, key=lambda f: (votes[f], -list(votes).index(f)))
    return best, maps[best]


def pair_id(kind: str, prompt: str, chosen: str, rejected: str) -> str:
    h = hashlib.blake2b(digest_size=12)
    for part in (kind, prompt, chosen, rejected):
        h.update(part.encode("utf-8"))
        h.update(b"\x1f")
    return h.hexdigest()


def _text(row: dict, col: str, max_chars: int) -> str | Bad:
    if col not in row or row[col] is None:
        return Bad(col, "missing field")
    v = row[col]
    if not isinstance(v, str):
        return Bad(col, "wrong type", f"expected a string, got {type(v).__name__}")
    return _check_text(col, v, max_chars)


def _check_text(col: str, v: str, max_chars: int) -> str | Bad:
    if not v.strip():
        return Bad(col, "empty field")
    if len(v) > max_chars:
        return Bad(col, "field too large", f"{len(v)} characters > {max_chars}")
    if "\x00" in v:
        return Bad(col, "NUL byte", "text contains a NUL character")
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return Bad(col, "undecodable text", "lone surrogate / invalid UTF-8")
    return v


def _messages(row: dict, col: str, max_chars: int, allow_str_prompt: bool = False) -> list | Bad:
    if col not in row or row[col] is None:
        return Bad(col, "missing field")
    v = row[col]
    if allow_str_prompt and isinstance(v, str):
        t = _check_text(col, v, max_chars)
        return t if isinstance(t, Bad) else [{"role": "user", "content": t}]
    if not isinstance(v, list):
        return Bad(col, "wrong type", f"expected a list of messages, got {type(v).__name__}")
    if not v:
        return Bad(col, "empty field")
    out, total = [], 0
    for j, m in enumerate(v):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            return Bad(col, "wrong type", f"message {j} is not a {{role, content}} object")
        role, content = m["role"], m["content"]
        if not isinstance(role, str) or role not in ROLES:
            return Bad(col, "bad message role", f"message {j} has role {str(role)[:40]!r}")
        if not isinstance(content, str):
            return Bad(col, "wrong type", f"message {j} content is {type(content).__name__}, not a string")
        t = _check_text(col, content, max_chars) if content else content
        if isinstance(t, Bad):
            return Bad(col, t.reason, f"message {j}: {t.detail}".rstrip(": "))
        total += len(content)
        out.append({"role": role, "content": content})
    if total > max_chars:
        return Bad(col, "field too large", f"{total} characters > {max_chars}")
    if not any(m["content"].strip() for m in out):
        return Bad(col, "empty field", "every message is empty")
    return out


def _split_implicit_text(chosen: str, rejected: str) -> tuple[str, str, str] | Bad:
    n = min(len(chosen), len(rejected))
    i = 0
    while i < n and chosen[i] == rejected[i]:
        i += 1
    cut = chosen.rfind(ASSISTANT_MARK, 0, i)
    if cut < 0:
        # no Human/Assistant markup: the shared prefix is the prompt (TRL's extract_prompt)
        if i == 0:
            return Bad("chosen", "no shared prompt", "chosen and rejected share no prefix")
        return chosen[:i], chosen[i:], rejected[i:]
    end = cut + len(ASSISTANT_MARK)
    return chosen[:end], chosen[end:], rejected[end:]


def _split_implicit_messages(chosen: list, rejected: list) -> tuple[list, list, list] | Bad:
    i = 0
    while i < min(len(chosen), len(rejected)) and chosen[i] == rejected[i]:
        i += 1
    # the responses start at an assistant turn: the prompt ends with the last shared non-assistant message
    while i > 0 and chosen[i - 1]["role"] == "assistant":
        i -= 1
    if i == 0:
        return Bad("chosen", "no shared prompt", "the conversations share no leading messages")
    return chosen[:i], chosen[i:], rejected[i:]


def as_chat(pair: Pair) -> Pair:
    """A standard text pair as a conversational one (user prompt, assistant responses), so that the
    model's chat template applies: the right input for instruct models. An HH-RLHF transcript
    ("\n\nHuman: …\n\nAssistant: …\n\nAssistant:") becomes its turns, not one user message."""
    if pair.kind == "conversational":
        return pair
    turns = _transcript_turns(pair.prompt)
    if turns is None:
        turns, chosen, rejected = [{"role": "user", "content": pair.prompt}], pair.chosen, pair.rejected
    else:  # the markup's space after "Assistant:" belongs to the markup, not to the answer
        chosen, rejected = pair.chosen.strip(), pair.rejected.strip()
    prompt = json.dumps(turns, ensure_ascii=False)
    chosen = json.dumps([{"role": "assistant", "content": chosen}], ensure_ascii=False)
    rejected = json.dumps([{"role": "assistant", "content": rejected}], ensure_ascii=False)
    kind = "conversational"
    return Pair(
        pair_id(kind, prompt, chosen, rejected), kind, prompt, chosen, rejected, pair.noise, pair.meta
    )


def _transcript_turns(prompt: str) -> list[dict] | None:
    """The turns of an HH-RLHF style prompt, or None when it is not one."""
    if not (prompt.startswith(HUMAN_MARK) and prompt.endswith(ASSISTANT_MARK)):
        return None
    parts = re.split(r"\n\n(Human|Assistant):", prompt[: -len(ASSISTANT_MARK)])
    turns = [
        {"role": "user" if who == "Human" else "assistant", "content": text.strip()}
        for who, text in zip(parts[1::2], parts[2::2], strict=True)
    ]
    if parts[0] or not all(t["content"] for t in turns):
        return None
    return turns


def glued_boundary(prompt: str, response: str) -> bool:
    """True when plain-text prompt and response meet where a tokenizer merges tokens across the
    boundary: a word glued to a word ("…word" + "The…"), punctuation to punctuation ("…." + "-…"),
    a prompt ending in a space or tab ("Answer: " + "Paris": the space joins the next word), or
    whitespace to whitespace ("\n" + "\n"). TRL concatenates the two strings, so the tokenized
    prompt is then not a prefix of the tokenized prompt+response. Clean: "…:" + " Paris" (HH-RLHF),
    "…?\n" + "Paris". Punctuation + word ("…?" + "Paris") merges only in some tokenizers (Llama 3,
    Qwen), so it is left to `prefsift score`, which checks with the model's own tokenizer."""
    if not prompt or not response:
        return False
    end, start = prompt[-1], response[0]
    if end in " \t" or (end.isspace() and start.isspace()):
        return True
    if end.isspace() or start.isspace():
        return False
    return end.isalnum() == start.isalnum()


def _first_bad(*values) -> Bad | None:
    return next((v for v in values if isinstance(v, Bad)), None)


def normalise(row: dict, fmt: str, cmap: ColumnMap, max_chars: int) -> Pair | Bad:
    """One raw row -> a Pair, or Bad(field, reason)."""
    if fmt == "pairwise":
        prompt = _text(row, cmap.prompt, max_chars)
        if isinstance(prompt, Bad):
            return prompt
        if cmap.label not in row or row[cmap.label] is None:
            return Bad(cmap.label or "label", "missing field")
        label = str(row[cmap.label]).strip()
        if label.endswith(".0"):
            label = label[:-2]
        if label in cmap.label_a:
            win, lose = cmap.a, cmap.b
        elif label in cmap.label_b:
            win, lose = cmap.b, cmap.a
        elif label in ("0", "tie", "0.5", "1.5"):
            return Bad(cmap.label, "tie", f"label {label!r} states no preference")
        else:
            return Bad(
                cmap.label, "bad label", f"label {label[:40]!r} is not one of {cmap.label_a + cmap.label_b}"
            )
        chosen, rejected = _text(row, win, max_chars), _text(row, lose, max_chars)
        kind = "standard"
    elif fmt in ("standard", "implicit") and isinstance(row.get(cmap.chosen), str):
        chosen, rejected = _text(row, cmap.chosen, max_chars), _text(row, cmap.rejected, max_chars)
        if bad := _first_bad(chosen, rejected):
            return bad
        if fmt == "implicit":
            split = _split_implicit_text(chosen, rejected)
            if isinstance(split, Bad):
                return split
            prompt, chosen, rejected = split
            if not chosen.strip() or not rejected.strip():
                return Bad(
                    "chosen" if not chosen.strip() else "rejected",
                    "empty field",
                    "no response after the prompt",
                )
        else:
            prompt = _text(row, cmap.prompt, max_chars)
        kind = "standard"
    elif fmt in ("conversational", "implicit", "standard"):
        if fmt == "standard" and not isinstance(row.get(cmap.chosen), list):
            return _text(row, cmap.chosen, max_chars)  # reports missing/wrong type
        chosen = _messages(row, cmap.chosen, max_chars)
        rejected = _messages(row, cmap.rejected, max_chars)
        if bad := _first_bad(chosen, rejected):
            return bad
        if fmt == "implicit":
            split = _split_implicit_messages(chosen, rejected)
            if isinstance(split, Bad):
                return split
            prompt, chosen, rejected = split
        else:
            prompt = _messages(row, cmap.prompt, max_chars, allow_str_prompt=True)
        kind = "conversational"
    else:
        raise UserError(f"unknown format {fmt!r} (use one of {', '.join(FORMATS)})")

    if bad := _first_bad(prompt, chosen, rejected):
        return bad
    if kind == "conversational":
        if not chosen or not rejected:
            return Bad("chosen" if not chosen else "rejected", "empty field")
        prompt_s, chosen_s, rejected_s = (
            json.dumps(x, ensure_ascii=False) for x in (prompt, chosen, rejected)
        )
    else:
        prompt_s, chosen_s, rejected_s = prompt, chosen, rejected
    if chosen_s == rejected_s:
        return Bad("rejected", "chosen equals rejected")
    noise = next((row[k] for k in NOISE_KEYS if isinstance(row.get(k), bool)), None)
    used = {cmap.prompt, cmap.chosen, cmap.rejected, cmap.a, cmap.b, cmap.label, *NOISE_KEYS}
    extra = {k: v for k, v in row.items() if k not in used and isinstance(k, str)}
    meta = None
    if extra:
        try:
            meta = json.dumps(extra, ensure_ascii=False, default=str)
            meta.encode("utf-8")
        except (TypeError, ValueError, UnicodeEncodeError, RecursionError):
            meta = None
        if meta is not None and len(meta) > 20_000:
            meta = None
    return Pair(
        pair_id(kind, prompt_s, chosen_s, rejected_s), kind, prompt_s, chosen_s, rejected_s, noise, meta
    )


def pair_texts(row: dict) -> dict:
    """A stored pair's prompt, chosen and rejected as `tokenize_pairs` takes them: a conversational
    pair's fields decoded from the JSON text `parse_row` stored them as."""
    conv = row.get("kind") == "conversational"
    return {k: json.loads(row[k]) if conv else row[k] for k in ("prompt", "chosen", "rejected")}
