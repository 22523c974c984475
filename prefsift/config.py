"""Training configuration: prefsift's own few fields plus DPOConfig / LoraConfig forwarding.

We never duplicate `trl.DPOConfig`: everything it knows is passed through unchanged
(`[dpo]` section of a TOML file, `--set key=value`, or the shortcuts `--beta`, `--lr` ...).
Unknown keys fail with a message naming the key, before any model is loaded.

A TOML file looks like:

    seed = 0
    lora = true            # false = full fine-tuning
    [dpo]                  # any trl.DPOConfig field
    beta = 0.1
    learning_rate = 5e-5
    per_device_train_batch_size = 4
    [lora]                 # any peft.LoraConfig field
    r = 16
"""

from __future__ import annotations

import dataclasses
import json
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefsift.errors import UserError
from prefsift.scoring.tokenize import TokenizeConfig

KINDS = ("warmup", "fit-val", "train")

# LoRA on every linear projection of a Llama-style block (lm_head is excluded: TRL refuses it).
DEFAULT_LORA: dict[str, Any] = {
    "r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "target_modules": "all-linear",
    "bias": "none",
    "task_type": "CAUSAL_LM",
}

# prefsift's defaults for DPOConfig; the user's values win. Why each one:
DEFAULT_DPO: dict[str, Any] = {
    "beta": 0.1,  # docs/METHOD.md default
    "per_device_train_batch_size": 4,
    "gradient_accumulation_steps": 1,
    "max_length": 512,  # TRL's 1024 is slow on CPU; prompt + completion, truncation_mode keep_start
    "logging_steps": 1,  # every step lands in training_metrics
    "save_strategy": "steps",
    "save_steps": 50,  # checkpoints make a killed run resumable
    "save_total_limit": 2,
    "report_to": "none",  # no wandb/tensorboard surprises
    "activation_checkpointing": False,  # TRL's default recomputes activations and warns on small models
    "dataloader_num_workers": 0,
    "lr_scheduler_type": "linear",
    "warmup_steps": 0,
}
DEFAULT_LR = {True: 5e-5, False: 1e-6}  # LoRA adapters need a larger step than full fine-tuning
DEFAULT_EPOCHS = {"warmup": 1, "fit-val": 1, "train": 2}  # the paper's pipeline

# Fields that prefsift sets itself: a user value would break resuming or bookkeeping.
RESERVED_DPO = {"output_dir", "resume_from_checkpoint", "push_to_hub", "hub_model_id", "seed", "data_seed"}


def _init_fields(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls) if f.init}


def parse_value(text: str) -> Any:
    """`--set key=value` values: JSON/TOML-ish literals, else the plain string."""
    low = text.strip()
    if low.lower() in ("true", "false"):
        return low.lower() == "true"
    if low.lower() in ("none", "null"):
        return None
    try:
        return json.loads(low)
    except ValueError:
        return text


def parse_sets(items: list[str] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise UserError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = parse_value(value)
    return out


@dataclass(frozen=True)
class TrainConfig:
    """What prefsift needs to run one DPO training (warm-up, validation model or final training).

    `dpo` and `lora_config` hold only what the user set (TOML + CLI); prefsift's defaults are
    merged in `dpo_kwargs()` / `lora_kwargs()`, so the recorded config shows the user's intent.
    """

    kind: str = "train"
    lora: bool = True  # False: full fine-tuning (--full)
    seed: int = 0
    dtype: str = "float32"  # weights' dtype when loading; bf16 autocast is DPOConfig's `bf16`
    # Tokens per micro-batch (prefsift/memory.py): the batch is split into micro-batches of at most
    # this many tokens and gradient accumulation keeps the effective batch. Memory, not results:
    # not part of the run's identity.
    batch_tokens: int = 1024
    dpo: Mapping[str, Any] = field(default_factory=dict)
    lora_config: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise UserError(f"training kind must be one of {KINDS}, got {self.kind!r}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise UserError(f"dtype must be float32, bfloat16 or float16, got {self.dtype!r}")
        if not isinstance(self.batch_tokens, int) or self.batch_tokens < 16:
            raise UserError(f"batch_tokens must be an integer >= 16, got {self.batch_tokens!r}")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise UserError(f"seed must be a non-negative integer, got {self.seed!r}")
        from peft import LoraConfig
        from trl import DPOConfig

        dpo_known = _init_fields(DPOConfig)
        for key in self.dpo:
            if key in RESERVED_DPO:
                raise UserError(f"DPOConfig field {key!r} is set by prefsift and cannot be overridden")
            if key not in dpo_known:
                raise UserError(f"unknown DPOConfig field {key!r} (see trl.DPOConfig for the valid names)")
        if self.lora_config and not self.lora:
            raise UserError("[lora] settings were given but LoRA is off (--full)")
        lora_known = _init_fields(LoraConfig)
        for key in self.lora_config:
            if key not in lora_known:
                raise UserError(f"unknown LoraConfig field {key!r} (see peft.LoraConfig for the valid names)")
        beta = self.dpo.get("beta", DEFAULT_DPO["beta"])
        if not isinstance(beta, int | float) or beta <= 0:
            raise UserError(f"beta must be a positive number, got {beta!r}")
        for key in ("per_device_train_batch_size", "num_train_epochs", "max_length"):
            value = self.dpo.get(key)
            if value is not None and (not isinstance(value, int | float) or value <= 0):
                raise UserError(f"{key} must be positive, got {value!r}")

    # ------------------------------------------------------------------ resolved settings
    def dpo_kwargs(self) -> dict[str, Any]:
        """Everything passed to DPOConfig except output_dir/seed/device flags."""
        out = dict(DEFAULT_DPO)
        out["learning_rate"] = DEFAULT_LR[self.lora]
        out["num_train_epochs"] = DEFAULT_EPOCHS[self.kind]
        out.update(self.dpo)
        return out

    def lora_kwargs(self) -> dict[str, Any]:
        out = dict(DEFAULT_LORA)
        out.update(self.lora_config)
        return out

    @property
    def beta(self) -> float:
        return float(self.dpo_kwargs()["beta"])

    def to_dict(self) -> dict[str, Any]:
        """The resolved config, JSON-safe: what gets recorded with the run and hashed into its id."""
        return {
            "kind": self.kind,
            "lora": self.lora,
            "seed": self.seed,
            "dtype": self.dtype,
            "dpo": _jsonable(self.dpo_kwargs()),
            "lora_config": _jsonable(self.lora_kwargs()) if self.lora else None,
        }


def _jsonable(d: Mapping[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(dict(d), default=str, sort_keys=True))


def load_toml(path: str | Path | None) -> dict[str, Any]:
    if not path:
        return {}
    p = Path(path)
    if not p.exists():
        raise UserError(f"config file {p} not found")
    try:
        data = tomllib.loads(p.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"config file {p} is not valid TOML: {exc}") from exc
    allowed = {"seed", "lora", "dtype", "batch_tokens", "dpo"}
    for key, value in data.items():
        if key == "lora" and isinstance(value, dict):
            continue  # the [lora] section
        if key not in allowed:
            raise UserError(
                f"unknown key {key!r} in {p} (top level: seed, lora, dtype, batch_tokens; sections [dpo], [lora])"
            )
    return data


def build_config(
    kind: str,
    config_file: str | Path | None = None,
    full: bool | None = None,
    seed: int | None = None,
    dtype: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    batch_tokens: int | None = None,
    lora_overrides: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """TOML file, then CLI overrides (None = not given)."""
    data = load_toml(config_file)
    lora_section = data.get("lora") if isinstance(data.get("lora"), dict) else {}
    lora_flag = data.get("lora") if isinstance(data.get("lora"), bool) else True
    if full:
        lora_flag = False
    dpo = dict(data.get("dpo") or {})
    dpo.update({k: v for k, v in (overrides or {}).items() if v is not None})
    lora_cfg = {**lora_section, **(lora_overrides or {})}
    return TrainConfig(
        kind=kind,
        lora=lora_flag,
        seed=int(seed if seed is not None else data.get("seed", TrainConfig.seed)),
        dtype=dtype or data.get("dtype", TrainConfig.dtype),
        batch_tokens=batch_tokens or data.get("batch_tokens", TrainConfig.batch_tokens),
        dpo=dpo,
        lora_config=lora_cfg,
    )


@dataclass(frozen=True)
class ScoreConfig:
    """`prefsift score`, `logps`, `evaluate` and `explain-pair`: the split, beta, and how pairs are
    tokenized (TokenizeConfig's defaults, so every log-prob run of a dataset agrees) and batched."""

    split: str = "train"
    beta: float = DEFAULT_DPO["beta"]
    max_length: int | None = TokenizeConfig.max_length
    truncation_mode: str = TokenizeConfig.truncation_mode
    dtype: str = "float32"
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    batch_tokens: int = 8192  # padded tokens per forward batch: memory, not results


@dataclass(frozen=True)
class InfluenceConfig:
    """One influence run. Every field except batch_tokens/grad_batch_tokens/device changes the numbers."""

    dataset: str
    policy: str  # model path or registered name (theta)
    ref: str  # model path or registered name (pi_ref)
    adapter: str | None = None  # PEFT adapter folder for the policy (or registered with it)
    split: str = "train"  # the pairs that get IF
    val_split: str = "val"  # the pairs whose mean DPO loss defines g_val
    beta: float = ScoreConfig.beta
    method: str = "jvp"  # jvp | fd | grad (jvp falls back to fd if the model has no forward AD)
    band: tuple[float, float] = (10.0, 90.0)  # TIF = IF inside these percentiles (inclusive)
    params: str | None = None  # regex over parameter names (default: LoRA adapters, else all)
    dtype: str = "float32"
    device: str = "auto"
    batch_tokens: int = 4096
    # Padded tokens per backward pass of g_val: a backward keeps every activation, and a packed row's
    # attention grows with the square of its length, so it gets smaller batches than the
    # forward-mode passes. SmolLM2-135M, float32, AlpacaEval at max_length 256: peak RSS 6.0 GiB at
    # 1024, 3.6 GiB at 512 (benchmarks/results/demo_alpaca.md).
    grad_batch_tokens: int = 512
    max_length: int | None = ScoreConfig.max_length  # tokenized as `prefsift score` does, so the
    truncation_mode: str = ScoreConfig.truncation_mode  # reference log-prob runs are shared with IRM's
    fd_rel_step: float = 1e-3  # ||h v|| / ||theta_sel|| for --method fd
    precondition: str | None = None  # None | "cg": query v = (H_val + damping I)^-1 g_val
    damping: float = 0.01
    cg_iters: int = 10

    def __post_init__(self) -> None:
        from prefsift.scoring.influence import METHODS

        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}")
        if not (self.beta > 0 and math.isfinite(self.beta)):
            raise ValueError(f"beta must be positive, got {self.beta}")
        lo, hi = self.band
        if not 0 <= lo < hi <= 100:
            raise ValueError(f"band must satisfy 0 <= lo < hi <= 100, got {lo} {hi}")
        if self.batch_tokens < 1 or self.grad_batch_tokens < 1:
            raise ValueError("batch_tokens and grad_batch_tokens must be positive")
        if not self.fd_rel_step > 0:
            raise ValueError("fd_rel_step must be positive")
        if self.precondition not in (None, "cg"):
            raise ValueError(f"precondition must be 'cg' or unset, got {self.precondition!r}")
        if self.damping < 0 or self.cg_iters < 1:
            raise ValueError("need damping >= 0 and cg_iters >= 1")
        if self.split == self.val_split:
            raise ValueError("the validation split must differ from the scored split")


@dataclass(frozen=True)
class EvaluateConfig(ScoreConfig):
    """`prefsift evaluate`: held-out pairs; beta and max_length default to the model's training's."""

    split: str = "eval"
    beta: float | None = None
    max_length: int | None = None


@dataclass(frozen=True)
class ServeConfig:
    """Where `prefsift serve` (and the demo's dashboard) listens: this machine only by default."""

    host: str = "127.0.0.1"
    port: int = 8501


@dataclass(frozen=True)
class CalibrationConfig:
    """What `prefsift calibrate` searches."""

    min_kept: float = 0.5  # smallest kept fraction of the pool allowed
    max_kept: float = 0.7  # largest kept fraction allowed (the paper keeps 50-64%)
    step: float = 5.0  # percentile grid step of the band edges
    tif_lo: float = InfluenceConfig.band[0]  # the TIF band of IF (percentiles over the pairs that have IF)
    tif_hi: float = InfluenceConfig.band[1]
    metrics: tuple[str, str] = ("lossdiff", "irm")
    split: str = "train"
    # The best of a grid overlaps TIF more than one fixed rule would by chance: the null of the
    # search itself is the best overlap reached when IF is shuffled among its pairs (n_perm times).
    n_perm: int = 200
    seed: int = 0

    def __post_init__(self) -> None:
        if not (0 <= self.min_kept <= self.max_kept <= 1):
            raise ValueError(f"need 0 <= min_kept <= max_kept <= 1, got {self.min_kept}, {self.max_kept}")
        if not (0 < self.step <= 50) or abs(100 / self.step - round(100 / self.step)) > 1e-9:
            raise ValueError(f"step must divide 100 (e.g. 1, 2, 5, 10), got {self.step}")
        if not (0 <= self.tif_lo < self.tif_hi <= 100):
            raise ValueError(f"bad TIF band {self.tif_lo}-{self.tif_hi}")
        if len(self.metrics) != 2 or self.metrics[0] == self.metrics[1]:
            raise ValueError("calibration needs two different metrics")
        if self.n_perm < 0:
            raise ValueError(f"n_perm must be >= 0, got {self.n_perm}")


# ---------------------------------------------------------------- CLI
def from_args(cls, args, rename: Mapping[str, str] | None = None, **given):
    """A config dataclass from parsed options: each field from the option of its name (or
    rename[field]), `given` for what the command works out itself. The dataclass holds each default
    (the option's default is read from it), so the two cannot drift apart. What its checks refuse
    (ValueError) is the user's to fix: a UserError."""
    rename = rename or {}
    kwargs = {
        f.name: getattr(args, rename.get(f.name, f.name))
        for f in dataclasses.fields(cls)
        if hasattr(args, rename.get(f.name, f.name))
    }
    try:
        return cls(**{**kwargs, **given})
    except ValueError as exc:
        raise UserError(str(exc)) from exc


def option(p, owner, flag: str, help: str = "", field: str | None = None, **kw):
    """`p.add_argument(flag, ...)` whose default is the field of that name (or `field`) of the
    dataclass `owner`: one place for each default, as TRL's HfArgumentParser reads DPOConfig's.
    The help ends with the default; the action remembers its owner (tests/app/test_cli_defaults.py)."""
    name = field or flag.lstrip("-").replace("-", "_")
    f = next(x for x in dataclasses.fields(owner) if x.name == name)
    default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
    if isinstance(default, tuple):
        default = list(default)

    def text(v) -> str:
        return f"{v:g}" if isinstance(v, float) else str(v)

    shown = " ".join(map(text, default)) if isinstance(default, list) else text(default)
    action = p.add_argument(flag, default=default, help=f"{help} (default {shown})".lstrip(), **kw)
    action.owner = f"{owner.__name__}.{name}"
    return action


# (shared by warmup, fit-val, train)
def add_training_arguments(p) -> None:
    g = p.add_argument_group("training (any trl.DPOConfig field via --config [dpo] or --set)")
    g.add_argument("--config", help="TOML file: seed, lora, dtype, [dpo] -> DPOConfig, [lora] -> LoraConfig")
    g.add_argument("--full", action="store_true", default=None, help="full fine-tuning instead of LoRA")
    g.add_argument("--beta", type=float, help=f"DPO beta (default {DEFAULT_DPO['beta']})")
    g.add_argument("--lr", type=float, help="learning rate (default 5e-5 LoRA, 1e-6 full)")
    g.add_argument(
        "--batch-size",
        type=int,
        help="pairs per optimizer step and device (per_device_train_batch_size, default "
        f"{DEFAULT_DPO['per_device_train_batch_size']})",
    )
    g.add_argument(
        "--batch-tokens",
        type=int,
        help=f"memory: at most this many tokens per forward (default {TrainConfig.batch_tokens}); the batch is split into "
        "micro-batches and gradient accumulation keeps it whole",
    )
    g.add_argument("--epochs", type=float, help="num_train_epochs")
    g.add_argument(
        "--max-length",
        type=int,
        help=f"max tokens of prompt + completion (default {DEFAULT_DPO['max_length']})",
    )
    g.add_argument("--set", action="append", metavar="KEY=VALUE", help="any DPOConfig field, repeatable")
    g.add_argument(
        "--lora-set", action="append", metavar="KEY=VALUE", help="any LoraConfig field, repeatable"
    )
    g.add_argument("--seed", type=int, help=f"seed (default {TrainConfig.seed})")
    g.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "float16"],
        help=f"weights dtype (default {TrainConfig.dtype})",
    )
    g.add_argument("--device", default="auto", help="auto | cpu | cuda[:N]")
    g.add_argument(
        "--resume",
        choices=["auto", "never"],
        default="auto",
        help="auto: rerunning the same command resumes from its last checkpoint",
    )
    g.add_argument("--force", action="store_true", help="overwrite an existing model folder of that name")
    g.add_argument("--wait", action="store_true", help="queue behind another running job instead of failing")


def config_from_args(kind: str, args) -> TrainConfig:
    overrides = {
        "beta": args.beta,
        "learning_rate": args.lr,
        "per_device_train_batch_size": args.batch_size,
        "num_train_epochs": args.epochs,
        "max_length": args.max_length,
    }
    overrides.update(parse_sets(args.set))
    return build_config(
        kind,
        args.config,
        full=args.full,
        seed=args.seed,
        dtype=args.dtype,
        overrides=overrides,
        batch_tokens=getattr(args, "batch_tokens", None),
        lora_overrides=parse_sets(args.lora_set),
    )
