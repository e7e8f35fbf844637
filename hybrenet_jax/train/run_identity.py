"""What a workdir was made for: the config fields that decide its train state.

The first run writes ``WORKDIR/run_identity.json`` (the fields of :data:`IDENTITY_FIELDS` and
their fingerprint). A later run whose fields differ is refused with :class:`RunIdentityError`
naming every difference, before any checkpoint is opened, so nothing is moved or deleted.
Fields that may change between runs of one workdir (duration, learning rate, logging,
checkpoint cadence) are not part of the identity: a finished run can be extended.

Workdirs written before identities existed have none; their checkpoints' ``meta`` (model and
dataset) stands in for it until the next run records one.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any


from hybrenet_jax.schema import field_value
from hybrenet_jax.train.checkpoint import CheckpointError
from hybrenet_jax.train.storage import WorkPath, workdir_path, write_text_atomically

IDENTITY_FILE = "run_identity.json"

#: Fields that change the state's structure or the meaning of its steps.
IDENTITY_FIELDS = ("model", "dataset", "optimizer", "dtype", "batch_size", "seed", "data_seed",
                   "distill.kind")


class RunIdentityError(CheckpointError):
    """The workdir holds a run made for other identity fields (or an unreadable record)."""


def identity_of(config: Any) -> dict[str, Any]:
    """The identity fields of ``config`` (a TrainConfig or a mapping; datasets lower-cased)."""
    fields: dict[str, Any] = {}
    for name in IDENTITY_FIELDS:
        node = field_value(config, name)
        fields[name] = node.lower() if name == "dataset" and isinstance(node, str) else node
    return fields


def fingerprint(fields: Mapping[str, Any]) -> str:
    """A short SHA-256 of the identity fields (stable across key order)."""
    text = json.dumps(dict(fields), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def recorded_identity(workdir: str | os.PathLike) -> dict[str, Any] | None:
    """The fields recorded in ``workdir`` (or derived from legacy checkpoints); None if new.

    Raises:
      RunIdentityError: the record exists but cannot be read.
    """
    workdir = workdir_path(workdir)
    path = workdir / IDENTITY_FILE
    if path.exists():
        try:
            fields = json.loads(path.read_text())["fields"]
            if not isinstance(fields, dict):
                raise TypeError("fields is not an object")
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise RunIdentityError(f"unreadable run identity {path} ({err}); restore it or "
                                   "use another workdir (nothing was changed)") from None
        return fields
    return _legacy_identity(workdir)


def _legacy_identity(workdir: WorkPath) -> dict[str, Any] | None:
    """Model and dataset from the newest readable checkpoint ``meta`` (no identity file)."""
    for sub in ("checkpoints", "best"):
        directory = workdir / sub
        if not directory.is_dir():
            continue
        steps = sorted((p for p in directory.iterdir() if p.name.isdigit()),
                       key=lambda p: int(p.name), reverse=True)
        for step_dir in steps:
            try:
                meta = json.loads((step_dir / "meta" / "metadata").read_text())
            except (OSError, ValueError):
                continue
            if isinstance(meta, dict) and "model" in meta:
                fields = {"model": meta["model"]}
                if isinstance(meta.get("dataset"), str):
                    fields["dataset"] = meta["dataset"].lower()
                return fields
    return None


def check_identity(workdir: str | os.PathLike, config: Any) -> None:
    """Refuse ``config`` if ``workdir`` was made for other identity fields (reads only).

    Raises:
      RunIdentityError: one line naming every differing field, recorded and requested.
    """
    recorded = recorded_identity(workdir)
    if recorded is None:
        return
    wanted = identity_of(config)
    diffs = [name for name in IDENTITY_FIELDS if name in recorded
             and recorded[name] != wanted[name]]
    if diffs:
        was = ", ".join(f"{n}={_short(recorded[n])}" for n in diffs)
        now = ", ".join(f"{n}={_short(wanted[n])}" for n in diffs)
        raise RunIdentityError(f"workdir {workdir} holds a run of {was}; this run asks for "
                               f"{now}: use another workdir (nothing was changed)")


def record_identity(workdir: str | os.PathLike, config: Any) -> None:
    """Write ``config``'s identity into ``workdir`` unless one is recorded (atomic rename)."""
    path = workdir_path(workdir) / IDENTITY_FILE
    if path.exists():
        return
    fields = identity_of(config)
    record = {"fields": fields, "fingerprint": fingerprint(fields)}
    write_text_atomically(path, json.dumps(record, indent=1, sort_keys=True))


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
