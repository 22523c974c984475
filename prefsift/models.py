"""Model resolution, the one owner: what a name, id, folder or hub id the user typed stands for.

`resolve` answers for every command: a registered model (name, id, or a folder looked up by its
fingerprint) with its reference π_ref and lineage, else a local folder or a hub id (org/name).
Roles (θ, θ_val, π_ref of a dataset) come from `storage.runs.model_roles`, never from a name.
The database is only read here (read-only, and a missing database is an empty one), except by
`register_reference`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from prefsift.errors import UserError


@dataclasses.dataclass(frozen=True)
class Resolved:
    """A model: weights (path [+ adapter]), the reference it was made against, its lineage."""

    model_id: str
    name: str | None
    path: str
    adapter: str | None
    reference_path: str
    reference_id: str
    revision: str | None = None
    lineage: dict = dataclasses.field(default_factory=dict)


def _spec(path: str, adapter: str | None = None, dtype: str = "float32"):
    from prefsift.scoring.models import ModelSpec

    return ModelSpec(path=str(path), adapter=str(adapter) if adapter else None, dtype=dtype)


def _registered(db, ref: str) -> dict | None:
    from prefsift.storage import connect, runs
    from prefsift.storage.errors import NotFound, StorageError

    try:
        with connect(db, read_only=True) as con:
            return runs.get_model(con, ref)
    except (NotFound, StorageError):  # StorageError: no database yet
        return None


def resolve(db, ref: str) -> Resolved:
    """A registered model (name, fingerprint or path) or, failing that, a local folder / hub id."""
    from prefsift.scoring.models import fingerprint
    from prefsift.storage.paths import resolve_stored_path

    # A folder is looked up by its fingerprint: by path it is ambiguous, since every LoRA model
    # trained on it is registered with the same base path.
    key = fingerprint(_spec(ref)) if Path(ref).exists() else ref
    m = _registered(db, key)
    if m is not None:
        lin = m["lineage"] or {}
        ref_path = lin.get("reference_path") or m["path"]
        ref_id = lin.get("reference") or (
            m["model_id"] if not m["adapter_path"] else fingerprint(_spec(ref_path))
        )
        return Resolved(
            m["model_id"],
            m["name"],
            resolve_stored_path(db, m["path"]),
            resolve_stored_path(db, m["adapter_path"]),
            resolve_stored_path(db, ref_path),
            ref_id,
            m.get("revision"),
            lin,
        )
    if not Path(ref).exists() and ("/" not in ref or ref.startswith((".", "/", "~"))):
        raise UserError(
            f"model {ref!r} not found: neither a local path, a registered model (see `prefsift info`), "
            "nor a hub id (org/name)"
        )
    return Resolved(key, None, str(ref), None, str(ref), key)


def resolve_model(
    db, ref_or_path: str, adapter: str | None = None, dtype: str = "float32", device: str = "auto"
):
    """A ModelSpec to score with: a local folder as given, else what `resolve` finds; an explicit
    adapter wins over the registered one."""
    from prefsift.scoring.models import ModelSpec

    if Path(ref_or_path).exists():
        return ModelSpec(path=str(ref_or_path), adapter=adapter, dtype=dtype, device=device)
    r = resolve(db, ref_or_path)
    return ModelSpec(
        path=r.path, revision=r.revision, adapter=adapter or r.adapter, dtype=dtype, device=device
    )


def resolve_reference(db, model: Resolved) -> Resolved:
    """The reference π_ref that `model` was trained against (by id when registered)."""
    try:
        return resolve(db, model.reference_id)
    except UserError:
        return resolve(db, model.reference_path)


def reference_of(db, policy: str) -> str:
    return resolve(db, policy).reference_path


def lineage(db, ref: str) -> dict:
    """A registered model's lineage ({} for an unregistered or unknown one)."""
    try:
        return resolve(db, ref).lineage
    except UserError:
        return {}


_HOW = {
    "reference": "pass --model PATH (the SFT model to start from) to `prefsift warmup`",
    "policy": "warm one up with `prefsift warmup --dataset {d} --model REF`, or name it with --policy",
    "validation": "train one with `prefsift fit-val --dataset {d}`, or name it with --val",
}


def role_model(
    db, dataset: str | None, role: str, given: str | None = None, required: bool = True
) -> str | None:
    """The model to use in `role` ('reference' | 'policy' | 'validation') for `dataset`: the one the
    user named (`given`, any name, id or path) or else the one the dataset's lineage says
    (storage.runs.model_roles, the one owner of this rule; the dashboard reads it too).
    Returns a model id; None when absent and not `required`."""
    if given:
        return given
    from prefsift.storage import connect
    from prefsift.storage import runs as rstore
    from prefsift.storage.errors import StorageError

    try:
        with connect(db, read_only=True) as con:
            found = rstore.model_roles(con, dataset).get(role)
    except StorageError:  # no database yet
        found = None
    if found is not None:
        return str(found["model_id"])
    if not required:
        return None
    where = f" for dataset {dataset!r}" if dataset else ""
    raise UserError(f"no {role} model{where}: " + _HOW[role].format(d=dataset or "D"))


def policy_ref_val(db, dataset: str, policy: str | None, ref: str | None, val: str | None):
    """θ, π_ref and θ_val for a scoring command: what the user named, else the dataset's roles.
    θ_val is looked up only when θ was too (a named policy scores IRM alone unless --val is given)."""
    named_policy = policy is not None
    policy = role_model(db, dataset, "policy", policy)
    if ref is None:
        ref = reference_of(db, policy)
    if val is not None and val.lower() == "none":
        val = None
    elif val is None and not named_policy:
        val = role_model(db, dataset, "validation", required=False)
    return policy, ref, val


def default_reference(db) -> str:
    """The newest registered reference (warm-up without --model)."""
    from prefsift.storage import connect
    from prefsift.storage import runs as rstore

    with connect(db, read_only=True) as con:
        models = rstore.list_models(con)
    refs = models[models["role"] == "reference"]
    if refs.empty:
        raise UserError("no reference model: " + _HOW["reference"])
    return str(refs.iloc[-1]["model_id"])


def register_reference(db, model: str) -> str:
    """Register a raw model folder as a reference (once); return its model id."""
    from prefsift.storage import connect
    from prefsift.storage import runs as rstore
    from prefsift.storage.paths import stored_path

    r = resolve(db, model)
    if r.name is None:  # not registered yet
        with connect(db) as con:
            rstore.register_model(
                con,
                r.model_id,
                stored_path(db, r.path),
                name="ref",
                role="reference",
                lineage={"source": "user"},
            )
    return r.model_id
