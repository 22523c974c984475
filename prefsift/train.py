"""DPO training through TRL's DPOTrainer: warm-up θ, validation model θ_val, final training.

One function, `train`, serves the three commands (docs/METHOD.md pipeline steps 2, 3 and 6):
  warmup   θ     <- DPO from π_ref on the train split (1 epoch, fresh LoRA by default)
  fit-val  θ_val <- DPO from θ on the val split (1 epoch, θ's adapter trained further)
  train    DPO from θ (or π_ref) on a selection or an exported file (2 epochs)
Every run uses the same reference π_ref: with a LoRA policy stacked on π_ref, the reference
is the base model with adapters disabled (TRL's way); otherwise π_ref is loaded explicitly.

Bookkeeping: the run is a row in training_runs (running -> done/failed), step metrics stream
into training_metrics (trainer_callbacks.py), checkpoints under the output folder make a
killed run resumable (rerun the same command), and the result is registered in `models`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import sys
from pathlib import Path

from prefsift.config import TrainConfig
from prefsift.errors import UserError
from prefsift.models import Resolved, _spec, lineage, resolve
from prefsift.shards import run_hash
from prefsift.train_data import check_chat_template, load_rows, prompt_boundary_note

log = logging.getLogger(__name__)

ROLES = {"warmup": "policy", "fit-val": "validation", "train": "trained"}
SPLITS = {"warmup": "train", "fit-val": "val"}
MODEL_FILE = "prefsift_model.json"
RUN_FILE = "prefsift_run.json"


def selection_dataset(db, selection: str) -> str:
    """The dataset a saved selection belongs to."""
    from prefsift.storage import connect
    from prefsift.storage import selections as sstore
    from prefsift.storage.errors import NotFound

    with connect(db, read_only=True) as con:
        try:
            return str(sstore.get_selection(con, selection)["dataset"])
        except NotFound as exc:
            raise UserError(str(exc)) from None


def has_split(db, dataset: str, split: str) -> bool:
    from prefsift.storage import connect
    from prefsift.storage.pairs import count_pairs

    with connect(db, read_only=True) as con:
        return count_pairs(con, dataset, split) > 0


def inherit_beta(db, policy: str, cfg: TrainConfig) -> TrainConfig:
    """θ_val and the final training use θ's β and max_length unless the user sets them (docs/METHOD.md)."""
    lin = lineage(db, policy)
    dpo = (lin.get("config") or {}).get("dpo") or {}
    extra = {k: dpo[k] for k in ("beta", "max_length", "truncation_mode") if k in dpo and k not in cfg.dpo}
    return dataclasses.replace(cfg, dpo={**extra, **cfg.dpo}) if extra else cfg


def _load(spec, trainable: bool, merge: bool = False):
    from prefsift.scoring.models import load_model

    return load_model(spec, trainable=trainable, merge_adapter=merge)


def build_models(start: Resolved, cfg: TrainConfig, device: str):
    """(model, ref_model, peft_config) for DPOTrainer; ref_model None = adapters disabled."""
    from peft import LoraConfig

    spec = dataclasses.replace(_spec(start.path, start.adapter, cfg.dtype), device=device)
    ref_spec = dataclasses.replace(_spec(start.reference_path, None, cfg.dtype), device=device)
    on_reference = start.path == start.reference_path  # the base weights are π_ref itself
    if cfg.lora:
        # a fresh adapter, or θ's trained further; the reference = the base with adapters disabled
        # when the base is π_ref
        model = _load(spec, trainable=True)
        ref = None if on_reference else _load(ref_spec, trainable=False)
        return model, ref, LoraConfig(**cfg.lora_kwargs()) if start.adapter is None else None
    model = _load(spec, trainable=True, merge=start.adapter is not None)
    for p in model.parameters():
        p.requires_grad_(True)
    return model, _load(ref_spec, trainable=False), None


# ---------------------------------------------------------------- the run
def run_id_for(
    kind: str, start: Resolved, data_hash: str, cfg: TrainConfig, selection: str | None, out: Path
) -> str:
    """Same inputs + same output folder = same run: rerunning the command resumes it."""
    key = {
        "kind": kind,
        "output_dir": str(out.resolve()),
        "start": start.model_id,
        "reference": start.reference_id,
        "data": data_hash,
        "selection": selection,
        "config": cfg.to_dict(),
    }
    return run_hash(key)


def _prepare_output(out: Path, run_id: str, force: bool, resume: str) -> str | None:
    """Decide what to do with an existing output folder. Returns a checkpoint to resume or None."""
    if not out.exists():
        return None
    meta = {}
    with contextlib.suppress(OSError, ValueError):
        meta = json.loads((out / RUN_FILE).read_text())
    same = meta.get("run_id") == run_id
    if not same or force or resume == "never":
        if any(out.iterdir()) and not force and not same:
            raise UserError(f"{out} holds another model (run {meta.get('run_id')}); pass --force or --name")
        shutil.rmtree(out)
        return None
    last = _last_complete_checkpoint(out)
    if last is None and (out / MODEL_FILE).exists():
        return "done"
    return last


def _last_complete_checkpoint(out: Path) -> str | None:
    """The newest checkpoint that was written completely; half-written ones (a kill during the save)
    are removed so that resuming never trips over them."""
    ckpts = sorted(
        (p for p in out.glob("checkpoint-*") if p.is_dir() and p.name.split("-")[-1].isdigit()),
        key=lambda p: int(p.name.split("-")[-1]),
        reverse=True,
    )
    for p in ckpts:
        has_state = (p / "trainer_state.json").exists()
        has_weights = any(p.glob("*.safetensors")) or any(p.glob("*.bin"))
        if has_state and has_weights:
            return str(p)
        shutil.rmtree(p, ignore_errors=True)
    return None


def train(
    db,
    cfg: TrainConfig,
    start_ref: str,
    name: str,
    dataset: str | None = None,
    selection: str | None = None,
    data_file: str | None = None,
    device: str = "auto",
    resume: str = "auto",
    force: bool = False,
    wait: bool = False,
    callbacks: list | None = None,
    out_dir: str | os.PathLike | None = None,
) -> dict:
    """Run one DPO training and register its model. Returns a summary dict."""
    from prefsift.joblock import job_lock
    from prefsift.storage import connect
    from prefsift.storage import training as tstore
    from prefsift.storage.paths import models_dir

    kind = cfg.kind
    start = resolve(db, start_ref)
    split = SPLITS.get(kind)
    rows, data_hash, dataset = load_rows(db, dataset, split, selection, data_file)
    out = Path(out_dir) if out_dir else models_dir(db) / name
    run_id = run_id_for(kind, start, data_hash, cfg, selection, out)
    with job_lock(db, f"{kind} {name}", wait=wait):
        checkpoint = _prepare_output(out, run_id, force, resume)
        if checkpoint == "done":
            with connect(db) as con:
                run = tstore.get_run(con, run_id) or {}
            return {
                "run_id": run_id,
                "name": name,
                "output_dir": str(out),
                "status": "already done",
                "model_id": run.get("output_model"),
                "_text": f"{name}: already trained ({out})",
            }
        # may refuse: before any record
        tokenizer, plan = _prepare(cfg, start, rows, device, f"{kind} {name}")
        out.mkdir(parents=True, exist_ok=True)
        (out / RUN_FILE).write_text(json.dumps({"run_id": run_id, "kind": kind}))
        config_rec = {
            **cfg.to_dict(),
            "batch_tokens": cfg.batch_tokens,
            "start": start.model_id,
            "reference": start.reference_id,
            "data_hash": data_hash,
            "data_file": data_file,
            "n_pairs": len(rows),
        }
        with connect(db) as con:
            tstore.start_run(con, run_id, kind, dataset, selection, start.model_id, str(out), config_rec)
        try:
            result = _fit(
                db, cfg, start, rows, out, run_id, checkpoint, device, callbacks or [], tokenizer, plan
            )
        except BaseException as exc:
            with connect(db) as con:
                tstore.finish_run(con, run_id, "failed")
            _raise_friendly(exc)
            raise
        lineage = {
            "kind": kind,
            "parent": start.model_id,
            "reference": start.reference_id,
            "reference_path": start.reference_path,
            "dataset": dataset,
            "split": split,
            "content_hash": data_hash,
            "selection": selection,
            "data_file": data_file,
            "config": cfg.to_dict(),
            "seed": cfg.seed,
            "run_id": run_id,
        }
        model_id, path, adapter, record = _register(db, out, start, cfg, name, ROLES[kind], lineage)
        with connect(db) as con:
            tstore.finish_run(con, run_id, "done", output_model=model_id)
        # Written last (atomically): its presence means "registered and done", so a job killed
        # before this point resumes and registers again instead of being reported as done.
        tmp = out / (MODEL_FILE + ".tmp")
        tmp.write_text(record)
        tmp.replace(out / MODEL_FILE)
    text = (
        f"{kind}: {name} ({model_id}) trained on {len(rows)} pairs in {result['steps']} steps, "
        f"final loss {result['loss']:.4f} -> {out}"
    )
    return {
        "run_id": run_id,
        "name": name,
        "model_id": model_id,
        "output_dir": str(out),
        "path": path,
        "adapter": adapter,
        "n_pairs": len(rows),
        "resumed_from": checkpoint,
        "status": "done",
        **result,
        "_text": text,
    }


def _prepare(cfg: TrainConfig, start: Resolved, rows: list[dict], device: str, what: str):
    """(tokenizer, memory plan): the data checks and the memory decision, made before training
    starts so that a stage that cannot run is refused before anything is recorded."""
    from prefsift import memory
    from prefsift.scoring.models import load_tokenizer
    from prefsift.scoring.tokenize import TokenizeConfig, tokenize_pairs

    tokenizer = load_tokenizer(_spec(start.path, start.adapter))
    check_chat_template(rows, tokenizer)
    tokenized = tokenize_pairs(tokenizer, rows, TokenizeConfig(max_length=None))
    note = prompt_boundary_note(rows, tokenized)
    if note:
        log.warning("%s", note)
    kw = cfg.dpo_kwargs()
    try:
        shape = memory.Shape.of(start.path)
    except (OSError, ValueError, AttributeError) as exc:
        raise UserError(f"cannot read the model config of {start.path}: {str(exc)[:200]}") from exc
    plan = memory.plan_training(
        shape,
        batch=int(kw["per_device_train_batch_size"]),
        longest_row=max(len(t.prompt_ids) + max(len(t.chosen_ids), len(t.rejected_ids)) for t in tokenized),
        max_length=kw.get("max_length"),
        budget=cfg.batch_tokens,
        dtype=cfg.dtype,
        lora=cfg.lora,
        ref_copy=not cfg.lora or start.path != start.reference_path,  # see build_models
        checkpointing=cfg.dpo.get("activation_checkpointing"),
        available=memory.available_gib(device),
        what=what,
    )
    log.info("%s: %s", what, plan.describe())
    return tokenizer, plan


def _fit(
    db, cfg, start, rows, out: Path, run_id, checkpoint, device, extra_callbacks, tokenizer, plan
) -> dict:
    import torch
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    from prefsift.trainer_callbacks import MetricsCallback

    on_cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    kwargs = cfg.dpo_kwargs()
    # the same effective batch in micro-batches that fit (prefsift/memory.py)
    kwargs["per_device_train_batch_size"] = plan.micro_batch
    kwargs["gradient_accumulation_steps"] = (
        int(kwargs.get("gradient_accumulation_steps") or 1) * plan.accumulation
    )
    kwargs["activation_checkpointing"] = plan.checkpointing
    if on_cpu:
        kwargs.setdefault("bf16", False)  # TRL's default bf16=True fails on CPU; opt in with --set bf16=true
        kwargs["use_cpu"] = True
    args = DPOConfig(output_dir=str(out), seed=cfg.seed, data_seed=cfg.seed, **kwargs)
    model, ref_model, peft_config = build_models(start, cfg, "cpu" if on_cpu else device)
    trainer = DPOTrainer(
        model=model,
        ref_model=ref_model,
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[MetricsCallback(db, run_id, cfg.kind), *extra_callbacks],
    )
    # TRL copies a pretrained adapter into a frozen "ref" adapter and uses it as the reference
    # (reference = θ). prefsift keeps π_ref as the reference of every run (docs/METHOD.md), so drop
    # that copy: with no "ref" adapter TRL disables all adapters, i.e. the base model π_ref.
    if ref_model is None and "ref" in getattr(trainer.model, "peft_config", {}):
        trainer.model.delete_adapter("ref")
        trainer.model.set_adapter("default")
    # transformers prints its log dicts to stdout; stdout belongs to the CLI's result (--json).
    with contextlib.redirect_stdout(sys.stderr):
        output = trainer.train(resume_from_checkpoint=checkpoint)
    trainer.save_model(str(out))
    tokenizer.save_pretrained(str(out))
    shutil.rmtree(out / "runs", ignore_errors=True)
    for ckpt in out.glob("checkpoint-*"):  # done: the checkpoints only served resuming
        shutil.rmtree(ckpt, ignore_errors=True)
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return {
        "steps": trainer.state.global_step,
        "loss": losses[-1] if losses else float("nan"),
        "train_loss": float(output.training_loss),
        "runtime_s": output.metrics.get("train_runtime"),
        "micro_batch": plan.micro_batch,
        "gradient_accumulation_steps": kwargs["gradient_accumulation_steps"],
        "activation_checkpointing": plan.checkpointing,
        "memory_estimate_gib": plan.estimate_gib,
    }


def _register(db, out: Path, start: Resolved, cfg: TrainConfig, name: str, role: str, lineage: dict):
    from prefsift.scoring.models import fingerprint
    from prefsift.storage import connect
    from prefsift.storage import runs as rstore

    if cfg.lora:
        # The adapter sits on top of the start model's base weights (θ's base = π_ref with LoRA).
        path, adapter = start.path, str(out)
    else:
        path, adapter = str(out), None
    model_id = fingerprint(_spec(path, adapter))
    record = json.dumps(
        {
            "model_id": model_id,
            "name": name,
            "role": role,
            "path": path,
            "adapter_path": adapter,
            **lineage,
        },
        indent=2,
        default=str,
    )
    from prefsift.storage.paths import stored_path

    # Recorded relative to the database (or absolute), never to the folder this command runs in.
    with connect(db) as con:
        rstore.register_model(
            con,
            model_id,
            stored_path(db, path),
            name=name,
            adapter_path=stored_path(db, adapter) if adapter else None,
            role=role,
            lineage=lineage,
        )
    return model_id, path, adapter, record


def _raise_friendly(exc: BaseException) -> None:
    msg = str(exc)
    if type(exc).__name__ == "OutOfMemoryError" or "out of memory" in msg.lower():
        raise UserError(
            f"out of memory while training ({msg.splitlines()[0][:160]}). Hint: lower --batch-tokens "
            "(the batch stays whole), --max-length, or use LoRA / --set bf16=true"
        ) from exc
    if "chat template" in msg.lower() or "chat_template" in msg:
        raise UserError(f"tokenizer problem: {msg.splitlines()[0][:200]}") from exc
