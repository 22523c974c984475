"""Shared fixtures: a tiny Llama model and tokenizer built in code, tiny preference pairs.

Nothing here touches the network (HF_HUB_OFFLINE=1 is set before transformers is imported).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("PREFSIFT_NO_PROGRESS", "1")
if "TRITON_INTERPRET" not in os.environ:  # read when triton is imported: before any test imports it
    import torch

    if not torch.cuda.is_available():  # the fused JVP kernel's CPU tests run it interpreted
        os.environ["TRITON_INTERPRET"] = "1"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
HH_FILE = SHARED_DATA / "hh-rlhf-harmless-base-test.jsonl.gz"
ALPACA_FILE = SHARED_DATA / "alpaca_eval-alpaca-7b-vs-text-davinci-003.gpt4.json.gz"

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

WORDS = (
    "the a an is are was what how why who where when which can could should would will do does "
    "i you he she it we they me my your our their this that these those and or but not no yes "
    "please thank thanks sorry help sure here answer question good bad best worse better right wrong "
    "python code function return list dict print error bug fix add sum two three four five six seven "
    "capital france paris city water boil degrees sky blue because light cat dog animal eat food sleep "
    "write poem story short long summary text word sentence one bullet point reply refuse safe harm "
)

TINY_PAIRS = [
    {
        "prompt": "what is the capital of france ?",
        "chosen": "the capital of france is paris .",
        "rejected": "it is a city .",
    },
    {
        "prompt": "how do you add two numbers in python ?",
        "chosen": "use the + sign : return a + b",
        "rejected": "i do not know .",
    },
    {
        "prompt": "why is the sky blue ?",
        "chosen": "because blue light is scattered more .",
        "rejected": "the sky is green .",
    },
    {
        "prompt": "write a short poem about a cat .",
        "chosen": "a cat can sleep , a cat can eat , the cat is sweet .",
        "rejected": "dog .",
    },
    {
        "prompt": "what is two plus three ?",
        "chosen": "five",
        "rejected": "two plus three is seven , i think , but it could be six .",
    },
    {
        "prompt": "can you help me fix this bug ?",
        "chosen": "sure , please share the error and the code .",
        "rejected": "no .",
    },
    {
        "prompt": "reply in one word : is water wet ?",
        "chosen": "yes",
        "rejected": "well , it depends on what you mean by wet and by water .",
    },
    {
        "prompt": "summary : the cat eats food and then it sleeps .",
        "chosen": "a cat eats , then sleeps .",
        "rejected": "a dog runs in the city .",
    },
]


def build_tiny_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<unk>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    from tokenizers import decoders

    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=384, special_tokens=specials, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    corpus = [WORDS] * 20 + [" ".join(p.values()) for p in TINY_PAIRS] * 20
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(tokenizer, seed: int = 0, layers: int = 2, hidden: int = 64):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        tie_word_embeddings=False,
    )
    return LlamaForCausalLM(config)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A saved tiny Llama + tokenizer (with chat template), loadable by path."""
    path = tmp_path_factory.mktemp("tiny_llama")
    tok = build_tiny_tokenizer()
    model = build_tiny_model(tok)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_model_dir_b(tmp_path_factory) -> Path:
    """A second tiny model (other seed, same tokenizer): a 'different policy'."""
    path = tmp_path_factory.mktemp("tiny_llama_b")
    tok = build_tiny_tokenizer()
    model = build_tiny_model(tok, seed=1)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture()
def tiny_pairs() -> list[dict]:
    return [dict(p) for p in TINY_PAIRS]


@pytest.fixture()
def db_path(tmp_path) -> Path:
    return tmp_path / "test.duckdb"


def write_jsonl(path: Path, rows) -> Path:
    import json

    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return path


@pytest.fixture()
def tiny_db(db_path, tmp_path, tiny_pairs) -> Path:
    """A database with the tiny pairs ingested as dataset 'tiny' (6 train, 2 val)."""
    from prefsift.ingest import ingest

    src = write_jsonl(tmp_path / "tiny.jsonl", tiny_pairs)
    ingest(src, name="tiny", db=db_path)
    from prefsift.storage import connect, pairs

    with connect(db_path) as con:
        ids = pairs.get_pairs(con, "tiny", columns=("pair_id",)).column("pair_id").to_pylist()
        import pyarrow as pa

        pairs.assign_splits(con, "tiny", pa.table({"pair_id": ids[-2:], "split": ["val", "val"]}))
    return db_path


def requires_shared_data():
    return pytest.mark.skipif(not HH_FILE.exists(), reason=f"shared data not present at {SHARED_DATA}")


@pytest.fixture(scope="session")
def demo_db(tiny_model_dir, tmp_path_factory) -> Path:
    """A database made by the real demo pipeline (`prefsift demo --limit 48 --no-serve`, on the tiny
    model) run inside its own folder with a *relative* --db, as a person runs it; tests serve or
    read it from elsewhere. Session-scoped: built once (about a minute on 2 cores). Treat it as
    read-only, or copy it (`copy_demo_db`) before writing."""
    from prefsift.demo import DemoConfig, run_demo

    where = tmp_path_factory.mktemp("demo_pipeline")
    here = os.getcwd()
    os.chdir(where)
    try:
        cfg = DemoConfig(db="prefsift-demo.duckdb", model=str(tiny_model_dir), limit=48, max_length=128)
        run_demo(cfg, echo=lambda *a: None)
    finally:
        os.chdir(here)
    return where / "prefsift-demo.duckdb"


def copy_demo_db(src: Path, dest_dir: Path) -> Path:
    """A writable copy of the demo database and its work folder (`<stem>.prefsift/`) in dest_dir."""
    import shutil

    dest_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dest_dir / src.name)
    work = src.with_name(src.stem + ".prefsift")
    if work.exists():
        shutil.copytree(work, dest_dir / work.name, dirs_exist_ok=True)
    return dest_dir / src.name


@pytest.fixture()
def one_thread():
    """Tiny models are overhead-bound: one torch thread is much faster than two on a busy 2-core box."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session", autouse=True)
def one_name_per_module():
    """At the end of the session: no module of this checkout was loaded under an old top-level
    name (scoring, storage, dashboard instead of prefsift.scoring ...). A module imported under
    two names exists twice, with two states (tools/namespace_rename.py converts such imports)."""
    import sys

    yield
    root = Path(__file__).resolve().parents[1]
    twice = sorted(
        name
        for name, module in list(sys.modules.items())
        if name.split(".")[0] in ("scoring", "storage", "dashboard")
        and Path(getattr(module, "__file__", None) or "/").resolve().is_relative_to(root)
    )
    assert not twice, f"imported under an old top-level name: {twice} (run tools/namespace_rename.py)"
