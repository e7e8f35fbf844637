"""Orbax checkpoints with integrity checks: atomic, async, resumable, corruption-aware.

Two :class:`orbax.checkpoint.CheckpointManager` s live in a workdir:

* ``checkpoints/`` — periodic saves (the newest ``max_to_keep``); training resumes from here;
* ``best/`` — the best ``keep_best`` checkpoints by eval accuracy.

Each checkpoint holds the train state and a JSON ``meta`` item (model string, dataset, step,
epoch, accuracy, and a SHA-256 digest of the state). Orbax writes to a temporary directory and
renames it when complete, so a run killed mid-save leaves no half checkpoint; a checkpoint
damaged later (truncated file) fails to read or fails the digest check, is reported, and the
next older one is used.
"""

from __future__ import annotations

import errno
import logging
import pathlib
import time
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from hybrenet_jax.errors import HybrenetError
from hybrenet_jax.train.state import tree_digest

log = logging.getLogger(__name__)


class CheckpointError(HybrenetError):
    """No usable checkpoint where one was required, or one that does not fit the model."""


def _manager(directory: pathlib.Path, keep: int, best: bool, use_async: bool
             ) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        enable_async_checkpointing=use_async,
        best_fn=(lambda metrics: metrics["accuracy"]) if best else None,
        best_mode="max",
        keep_checkpoints_without_metrics=not best,
        cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager(directory.absolute(), options=options)


def state_digest(state: Any) -> str:
    """Digest of a state's params and BN statistics (a TrainState or its restored dict)."""
    get = state.get if isinstance(state, dict) else lambda k, d=None: getattr(state, k, d)
    return tree_digest({"params": get("params"), "batch_stats": get("batch_stats", {}) or {}})


def _save_args(state: Any, meta: dict) -> ocp.args.Composite:
    return ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))


def _write_error(err: BaseException, what: str) -> CheckpointError:
    """A clear error for a failed checkpoint write (disk full named as such)."""
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    reason = (f"{cause.strerror or cause}" if isinstance(cause, OSError)
              else f"{type(err).__name__}: {err}")
    if isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
        reason = "the disk is full (ENOSPC)"
    return CheckpointError(f"writing {what} failed: {reason}; earlier checkpoints are intact, "
                           "free space (or fix the path) and rerun the same command to resume")


class Checkpointer:
    """Periodic and best-k checkpoints of one run directory."""

    def __init__(self, workdir: str | pathlib.Path, max_to_keep: int = 2, keep_best: int = 1,
                 use_async: bool = True):
        workdir = pathlib.Path(workdir)
        self.latest = _manager(workdir / "checkpoints", max_to_keep, False, use_async)
        self.best = _manager(workdir / "best", keep_best, True, use_async) if keep_best else None

    def save(self, step: int, state: Any, meta: dict, force: bool = False) -> bool:
        """Save ``state`` at ``step`` (with its digest in ``meta``); returns whether it saved."""
        meta = {**meta, "step": int(step), "digest": state_digest(state)}
        try:
            return self.latest.save(step, args=_save_args(state, meta), force=force)
        except Exception as err:  # noqa: BLE001 - reported as one clear error
            raise _write_error(err, f"checkpoint step {step} to {self.latest.directory}") from err

    def save_best(self, step: int, state: Any, meta: dict, accuracy: float) -> None:
        """Offer ``state`` to the best-k set (kept only if among the best accuracies)."""
        if self.best is None:
            return
        meta = {**meta, "step": int(step), "accuracy": float(accuracy),
                "digest": state_digest(state)}
        try:
            self.best.save(step, args=_save_args(state, meta),
                           metrics={"accuracy": float(accuracy)}, force=True)
        except Exception as err:  # noqa: BLE001
            raise _write_error(err, f"best checkpoint step {step} to {self.best.directory}") \
                from err

    def restore_latest(self, abstract_state: Any) -> tuple[Any, dict] | None:
        """Newest intact checkpoint as ``(state, meta)``.

        Corrupt newer checkpoints are reported and moved to ``corrupt/`` in the workdir (kept
        for inspection), so the resumed run can save those steps again.
        """
        found = restore_newest_intact(self.latest, abstract_state)
        good = int(found[1]["step"]) if found else -1
        bad = [s for s in self.latest.all_steps() if s > good]
        if bad:
            quarantine = pathlib.Path(self.latest.directory).parent / "corrupt"
            quarantine.mkdir(exist_ok=True)
            for step in bad:
                src = pathlib.Path(self.latest.directory) / str(step)
                dst = quarantine / f"{step}-{time.strftime('%Y%m%d-%H%M%S')}"
                src.rename(dst)
                log.warning("moved unusable checkpoint %s to %s", src, dst)
            self.latest.reload()
        return found

    def wait(self) -> None:
        """Block until async saves are on disk."""
        for manager in (self.latest, self.best):
            if manager is None:
                continue
            try:
                manager.wait_until_finished()
            except Exception as err:  # noqa: BLE001
                raise _write_error(err, f"a checkpoint to {manager.directory}") from err

    def close(self) -> None:
        self.wait()
        self.latest.close()
        if self.best is not None:
            self.best.close()


def restore_newest_intact(manager: ocp.CheckpointManager, abstract_state: Any = None,
                          steps: list[int] | None = None) -> tuple[Any, dict] | None:
    """Try ``steps`` (default: all, newest first); return the first that reads and verifies."""
    for step in steps if steps is not None else sorted(manager.all_steps(), reverse=True):
        try:
            if abstract_state is not None:
                state_args = ocp.args.StandardRestore(abstract_state)
            else:  # any topology (e.g. saved on 8 devices, read on 1): onto one local device
                local = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
                state_args = ocp.args.StandardRestore(fallback_sharding=local)
            restored = manager.restore(step, args=ocp.args.Composite(
                state=state_args, meta=ocp.args.JsonRestore()))
            meta = restored["meta"]
            digest = state_digest(restored["state"])
            if digest != meta.get("digest"):
                raise CheckpointError(f"digest mismatch (stored {str(meta.get('digest'))[:12]}, "
                                      f"read {digest[:12]})")
            return restored["state"], meta
        except Exception as err:  # noqa: BLE001 - any read failure means "not trustworthy"
            log.warning("checkpoint step %d in %s is unreadable or corrupt (%s: %s); "
                        "falling back to an older checkpoint", step, manager.directory,
                        type(err).__name__, str(err).splitlines()[0][:200] if str(err) else "")
    return None


def load_variables(workdir: str | pathlib.Path, which: str | int = "latest"
                   ) -> tuple[dict, dict]:
    """Flax variables (``params``, ``batch_stats``) and meta of a run's checkpoint.

    Args:
      workdir: the run directory.
      which: ``"latest"``, ``"best"`` or a step number (searched in ``checkpoints/``).

    Raises:
      CheckpointError: no intact checkpoint found (the message says where it looked).
    """
    workdir = pathlib.Path(workdir)
    sub = "best" if which == "best" else "checkpoints"
    directory = workdir / sub
    if not directory.is_dir():
        raise CheckpointError(f"no {sub}/ directory in {workdir}: is this a training workdir?")
    absl_log = logging.getLogger("absl")
    level = absl_log.level
    absl_log.setLevel(logging.ERROR)  # orbax warns that a read-only manager is read-only
    try:
        manager = ocp.CheckpointManager(directory.absolute(), options=ocp.CheckpointManagerOptions(
            read_only=True, create=False))
    finally:
        absl_log.setLevel(level)
    if isinstance(which, int):
        if which not in manager.all_steps():
            raise CheckpointError(f"no checkpoint at step {which} in {directory}; available: "
                                  f"{sorted(manager.all_steps())}")
        steps = [which]
    else:
        steps = None
    found = restore_newest_intact(manager, None, steps)
    manager.close()
    if found is None:
        raise CheckpointError(f"no intact checkpoint in {directory}")
    state, meta = found
    variables = {"params": state["params"], "batch_stats": state.get("batch_stats", {}) or {}}
    return jax.tree.map(np.asarray, variables), meta
