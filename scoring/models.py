"""Load causal LMs (hub id or local path, optional PEFT adapter) and fingerprint them.

A fingerprint names exactly the weights that produce a number: the model's path or hub id,
its revision, and a content hash of its weight files and adapter. A changed checkpoint
gets a new fingerprint, so a cached log-prob run is never reused for other weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from prefsift.scoring.errors import ModelLoadError

log = logging.getLogger(__name__)

DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".gguf")
# Trainer state saved beside the weights: not part of what a model computes.
NOT_WEIGHTS = frozenset({"training_args.bin", "optimizer.pt", "scheduler.pt", "rng_state.pth", "scaler.pt"})


def cache_dir() -> Path:
    """prefsift's cache root, the one owner: $PREFSIFT_CACHE or ~/.cache/prefsift (file hashes,
    the embedded model's folder)."""
    return Path(os.environ.get("PREFSIFT_CACHE", Path.home() / ".cache" / "prefsift"))


@dataclass(frozen=True)
class ModelSpec:
    """What to load. `path` is a hub id or a local folder."""

    path: str
    revision: str | None = None
    adapter: str | None = None  # PEFT adapter folder (or hub id)
    dtype: str = "float32"  # float32 | bfloat16 | float16 | float64
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    trust_remote_code: bool = False  # never run remote model code unless the user opts in
    attn_implementation: str | None = None  # eager | sdpa | None (transformers' default)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {sorted(DTYPES)}, got {self.dtype!r}")
        if not self.path:
            raise ValueError("model path is empty")


def resolve_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"--device {device} asked for, but no CUDA device is available")
    return torch.device(device)


def _is_local(path: str) -> bool:
    return Path(path).exists()


def _hash_file(path: Path) -> str:
    """sha256 of a file, cached by (path, size, mtime) so big checkpoints are hashed once."""
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    cache_file = cache_dir() / "file_hashes.json"
    try:
        cache = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return cache[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    digest = h.hexdigest()
    cache[key] = digest
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(cache))
        tmp.replace(cache_file)
    except OSError:
        pass
    return digest


# Config lists that PEFT writes from a Python set: their order changes from process to process.
UNORDERED_CONFIG_KEYS = ("target_modules", "modules_to_save", "exclude_modules")


def _hash_config(path: Path) -> str:
    """sha256 of a JSON config in canonical form (sorted keys, set-like lists sorted), so the
    same adapter saved by two processes gets the same fingerprint."""
    try:
        cfg = json.loads(path.read_text())
    except (OSError, ValueError):
        return _hash_file(path)
    if isinstance(cfg, dict):
        for key in UNORDERED_CONFIG_KEYS:
            if isinstance(cfg.get(key), list) and all(isinstance(x, str) for x in cfg[key]):
                cfg[key] = sorted(cfg[key])
    return hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()


def hash_folder(folder: str | Path) -> str:
    """Content hash of a model or adapter folder: weights and configs, by relative name."""
    folder = Path(folder)
    h = hashlib.sha256()
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    for p in files:
        rel = p.relative_to(folder).as_posix()
        if rel.startswith(("checkpoint-", "runs/", ".")):
            continue
        if p.name in NOT_WEIGHTS:
            continue
        if p.name == "adapter_config.json":
            h.update(rel.encode())
            h.update(_hash_config(p).encode())
        elif p.suffix in WEIGHT_SUFFIXES or p.name == "config.json":
            h.update(rel.encode())
            h.update(_hash_file(p).encode())
    return h.hexdigest()


def fingerprint(spec: ModelSpec) -> str:
    """A stable id of the weights `spec` loads (dtype/device excluded: they change speed, not identity)."""
    parts: dict = {"path": spec.path, "revision": spec.revision}
    if _is_local(spec.path):
        parts["path"] = str(Path(spec.path).resolve())
        parts["weights"] = hash_folder(spec.path)
    if spec.adapter:
        parts["adapter"] = hash_folder(spec.adapter) if _is_local(spec.adapter) else spec.adapter
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def load_tokenizer(spec: ModelSpec):
    from transformers import AutoTokenizer

    src = spec.path
    # An adapter folder saved by prefsift carries the tokenizer it was trained with.
    if spec.adapter and _is_local(spec.adapter) and (Path(spec.adapter) / "tokenizer_config.json").exists():
        src = spec.adapter
    try:
        tok = AutoTokenizer.from_pretrained(
            src,
            revision=spec.revision if src == spec.path else None,
            trust_remote_code=spec.trust_remote_code,
        )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load tokenizer from {src!r}: {_short(exc)}") from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def has_chat_template(path: str) -> bool:
    """Whether the tokenizer of a model folder or hub id carries a chat template (an instruct or
    chat model); False when it cannot be loaded (the stage that loads it says why)."""
    try:
        return bool(getattr(load_tokenizer(ModelSpec(path)), "chat_template", None))
    except ModelLoadError:
        return False


def load_model(spec: ModelSpec, trainable: bool = False, merge_adapter: bool = False):
    """The model on its device in eval mode. With an adapter: a PeftModel (or merged weights)."""
    from transformers import AutoModelForCausalLM

    device = resolve_device(spec.device)
    kwargs: dict = {"dtype": DTYPES[spec.dtype], "trust_remote_code": spec.trust_remote_code}
    if spec.revision:
        kwargs["revision"] = spec.revision
    if spec.attn_implementation:
        kwargs["attn_implementation"] = spec.attn_implementation
    try:
        model = AutoModelForCausalLM.from_pretrained(spec.path, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot load model {spec.path!r}: {_short(exc)}") from exc
    if spec.adapter:
        try:
            from peft import PeftModel

            model = PeftModel.from_pretrained(model, spec.adapter, is_trainable=trainable)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(f"cannot load adapter {spec.adapter!r}: {_short(exc)}") from exc
        if merge_adapter:
            model = model.merge_and_unload()
    model.to(device)
    model.train(False)
    if not trainable:
        for p in model.parameters():
            p.requires_grad_(False)
    return model


def _short(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:300] if str(exc).strip() else type(exc).__name__
