"""Selection rules: small frozen dataclasses and a compact text syntax (with a dict form for storage).

A rule is a predicate over the pairs of one dataset split (the *pool*): `Band` (percentiles of
the pool or values), `Top` (k largest or smallest), `RandomFraction` (a seeded draw) and
`Intersect` (AND of those). What each one keeps, with ties, missing scores, annotations and
truncated pairs, is defined in one place: storage/engine.py, which every caller evaluates with.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import ClassVar

from prefsift.storage.errors import StorageError

_METRIC_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_NUM = r"[-+]?(?:inf|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
_BAND_RE = re.compile(rf"^(?P<v>v?)(?P<lo>{_NUM})\s*(?:-|\.\.)\s*(?P<hi>{_NUM})$")


class RuleError(StorageError, ValueError):
    """A rule that cannot be built or parsed (a user mistake: the CLI prints one line)."""


def _check_metric(metric: str) -> None:
    if not isinstance(metric, str) or not _METRIC_RE.match(metric):
        raise RuleError(f"bad metric name {metric!r} (letters, digits, underscore)")


def _fmt(x: float) -> str:
    """Shortest text that parses back to the same float (10.0 -> '10')."""
    x = float(x)
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return str(int(x)) if x.is_integer() and abs(x) < 1e15 else repr(x)


class _Rule:
    """What every rule offers: its dict form and the metrics it reads (a leaf reads `metric`)."""

    def metrics(self) -> tuple[str, ...]:
        return (self.metric,)

    def to_dict(self) -> dict:
        return to_dict(self)


@dataclass(frozen=True)
class Band(_Rule):
    """Keep pairs whose `metric` lies in [lo, hi]: percentiles of the pool, or absolute values."""

    metric: str
    lo: float
    hi: float
    mode: str = "percentile"  # percentile | value
    TYPE: ClassVar[str] = "band"

    def __post_init__(self) -> None:
        _check_metric(self.metric)
        if self.mode not in ("percentile", "value"):
            raise RuleError(f"band mode must be 'percentile' or 'value', not {self.mode!r}")
        for name in ("lo", "hi"):
            v = getattr(self, name)
            if not isinstance(v, int | float) or isinstance(v, bool) or math.isnan(v):
                raise RuleError(f"band {name} must be a number, got {v!r}")
        if self.lo > self.hi:
            raise RuleError(f"band {self.metric}: lo {self.lo} > hi {self.hi}")
        if self.mode == "percentile" and not (0 <= self.lo and self.hi <= 100):
            raise RuleError(f"percentile band {self.metric}:{self.lo}-{self.hi} must lie within 0-100")

    def to_text(self) -> str:
        v = "v" if self.mode == "value" else ""
        return f"{self.metric}:{v}{_fmt(self.lo)}-{_fmt(self.hi)}"


@dataclass(frozen=True)
class Top(_Rule):
    """Keep the k pairs with the largest (or, largest=False, smallest) `metric`."""

    metric: str
    k: int
    largest: bool = True
    TYPE: ClassVar[str] = "top"

    def __post_init__(self) -> None:
        _check_metric(self.metric)
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 0:
            raise RuleError(f"top-k needs a whole number k >= 0, got {self.k!r}")

    def to_text(self) -> str:
        return f"{'top' if self.largest else 'bottom'}:{self.metric}:{self.k}"


@dataclass(frozen=True)
class RandomFraction(_Rule):
    """The seeded random baseline: round(fraction * n) pairs, chosen by md5(pair_id, seed)."""

    fraction: float
    seed: int = 0
    TYPE: ClassVar[str] = "random"

    def __post_init__(self) -> None:
        f = self.fraction
        if not isinstance(f, int | float) or isinstance(f, bool) or not (0 <= f <= 1):
            raise RuleError(f"random fraction must be within [0, 1], got {f!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise RuleError(f"random seed must be an integer, got {self.seed!r}")

    def metrics(self) -> tuple[str, ...]:
        return ()

    def to_text(self) -> str:
        return f"random:{_fmt(self.fraction)}:seed={self.seed}"


@dataclass(frozen=True)
class Intersect(_Rule):
    """Keep the pairs that every part keeps (LossDiff-IRM = lossdiff band AND irm band)."""

    rules: tuple = field(default_factory=tuple)
    TYPE: ClassVar[str] = "intersect"

    def __post_init__(self) -> None:
        if not isinstance(self.rules, tuple) or not self.rules:
            raise RuleError("an intersection needs a non-empty tuple of rules")
        for r in self.rules:
            if isinstance(r, Intersect):
                raise RuleError("nested intersections: list their parts in one Intersect")
            if not isinstance(r, Band | Top | RandomFraction):
                raise RuleError(f"not a rule: {r!r}")

    def metrics(self) -> tuple[str, ...]:
        out: list[str] = []
        for r in self.rules:
            out += [m for m in r.metrics() if m not in out]
        return tuple(out)

    def to_text(self) -> str:
        return " & ".join(r.to_text() for r in self.rules)


Rule = Band | Top | RandomFraction | Intersect

# The paper's rule with this project's default bands (docs/METHOD.md: 10-90 each, [ours]).
DEFAULT_RULE = Intersect((Band("lossdiff", 10, 90), Band("irm", 10, 90)))
# The TIF selection: the stored 0/1 `tif` metric (else a middle band of `if`, storage/diagnose.py).
TIF_FLAG_RULE = Band("tif", 1, 1, mode="value")


def leaves(rule: Rule) -> tuple:
    return rule.rules if isinstance(rule, Intersect) else (rule,)


# ---------------------------------------------------------------- dict form
def to_dict(rule: Rule) -> dict:
    """A JSON-ready dict with a `type` key; `rule_from_dict` inverts it."""
    if isinstance(rule, Intersect):
        return {"type": "intersect", "rules": [to_dict(r) for r in rule.rules]}
    return {"type": rule.TYPE, **asdict(rule)}


def rule_from_dict(d: dict) -> Rule:
    if not isinstance(d, dict) or "type" not in d:
        raise RuleError(f"not a rule dict: {d!r}")
    kind = d["type"]
    args = {k: v for k, v in d.items() if k != "type"}
    try:
        if kind == "intersect":
            return Intersect(tuple(rule_from_dict(r) for r in args["rules"]))
        cls = {"band": Band, "top": Top, "random": RandomFraction}[kind]
        return cls(**args)
    except (KeyError, TypeError) as exc:
        raise RuleError(f"bad rule dict {d!r}: {exc}") from exc


# ---------------------------------------------------------------- text form
def parse_rule(text: str) -> Rule:
    """Parse the CLI syntax, e.g. "lossdiff:10-90 & irm:10-90", "if:10-90", "tif",
    "random:0.6:seed=0", "top:irm:1000", "bottom:lossdiff:500", "irm:v0.0-5.0" (values)."""
    if not isinstance(text, str) or not text.strip():
        raise RuleError("empty rule")
    parts = [_parse_leaf(p.strip()) for p in text.split("&")]
    return parts[0] if len(parts) == 1 else Intersect(tuple(parts))


def _parse_leaf(term: str) -> Rule:
    if not term:
        raise RuleError("empty term in rule (a stray '&'?)")
    if term.lower() == "tif":
        return TIF_FLAG_RULE
    bits = [b.strip() for b in term.split(":")]
    head = bits[0].lower()
    try:
        if head == "random":
            if len(bits) not in (2, 3):
                raise RuleError(f"random rule is 'random:FRACTION[:seed=N]', got {term!r}")
            seed = 0
            if len(bits) == 3:
                key, _, val = bits[2].partition("=")
                if key.strip() != "seed":
                    raise RuleError(f"unknown random option {bits[2]!r} (only seed=N)")
                seed = int(val)
            return RandomFraction(float(bits[1]), seed)
        if head in ("top", "bottom"):
            if len(bits) != 3:
                raise RuleError(f"{head} rule is '{head}:METRIC:K', got {term!r}")
            return Top(bits[1], int(bits[2]), largest=head == "top")
    except ValueError as exc:
        if isinstance(exc, RuleError):
            raise
        raise RuleError(f"cannot parse {term!r}: {exc}") from exc
    if len(bits) != 2:
        raise RuleError(
            f"cannot parse {term!r}: expected METRIC:LO-HI, METRIC:vLO-HI, top:METRIC:K, "
            "bottom:METRIC:K, random:FRACTION[:seed=N] or tif"
        )
    m = _BAND_RE.match(bits[1].replace(" ", ""))
    if not m:
        raise RuleError(f"cannot parse band {bits[1]!r} in {term!r} (e.g. 10-90 or v-1.5-2)")
    mode = "value" if m["v"] else "percentile"
    return Band(bits[0], float(m["lo"]), float(m["hi"]), mode)


def coerce_rule(rule: Rule | str | dict | None) -> Rule:
    """A rule object from a rule, its text or its dict (None: the default LossDiff-IRM rule)."""
    if rule is None:
        return DEFAULT_RULE
    if isinstance(rule, str):
        return parse_rule(rule)
    if isinstance(rule, dict):
        return rule_from_dict(rule)
    if isinstance(rule, Intersect | Band | Top | RandomFraction):
        return rule
    raise RuleError(f"not a rule: {rule!r}")
