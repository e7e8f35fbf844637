"""Orbax checkpoints with integrity checks: atomic, async, resumable, corruption-aware.

Two :class:`orbax.checkpoint.CheckpointManager` s live in a workdir:

* ``checkpoints/`` — periodic saves (the newest ``max_to_keep``); training resumes from here;
* ``best/`` — the best ``keep_best`` checkpoints by eval accuracy.

Each checkpoint holds the train state and a JSON ``meta`` item (model string, dataset, step,
epoch, accuracy, a SHA-256 digest of params and BN statistics (``digest``, what
:func:`load_variables` reads) and one of everything a resume restores: step, params, BN
statistics and optimizer state (``state_digest``; checkpoints written before it have none)).
Orbax writes to a temporary directory and renames it when complete, so a run killed mid-save
leaves no half checkpoint.

Once a save is complete, a manifest (size and SHA-256 of every file) is written into the step
directory. Reading checks the manifest first, so a checkpoint damaged later (a truncated or
altered file) is rejected before Orbax reads it; one without a manifest (the run was killed
between the save and its manifest) is read and checked against the state digest. Either way a
bad checkpoint is reported and the next older one is used.

A kill can land between the best and the periodic save of one step, so a rerun may reach a
step that one of the two directories already holds: training is a function of the step, so
that checkpoint is the one this run would write, and the save is skipped (never an error).
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import math
import os
import pathlib
import sys
import threading
import time
import warnings
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from hybrenet_jax import distributed
from hybrenet_jax.errors import HybrenetError
from hybrenet_jax.train.divergence import host_tree_is_finite
from hybrenet_jax.train.state import tree_digest
from hybrenet_jax.train.storage import WorkPath, workdir_path, write_text_atomically

log = logging.getLogger(__name__)


class CheckpointError(HybrenetError):
    """No usable checkpoint where one was required, or one that does not fit the model."""


MANIFEST = "hybrenet_manifest.json"


def _file_digest(path: WorkPath) -> tuple[int, str]:
    """Size and SHA-256 of a file (one read; local or cloud storage)."""
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return size, h.hexdigest()


def _walk(directory: WorkPath) -> list[WorkPath]:
    """Every file under ``directory`` (epath's glob is not recursive on cloud storage)."""
    out = []
    for p in directory.iterdir():
        if p.is_dir():
            out += _walk(p)
        elif p.is_file():
            out.append(p)
    return out


def _files(step_dir: WorkPath) -> list[WorkPath]:
    return sorted((p for p in _walk(step_dir)
                   if not p.name.startswith((MANIFEST, f".{MANIFEST}"))), key=str)


def write_manifest(step_dir: str | os.PathLike) -> None:
    """Record size and SHA-256 of every file of a finished checkpoint (atomically)."""
    step_dir = workdir_path(step_dir)
    files = {}
    for p in _files(step_dir):
        size, digest = _file_digest(p)
        files[str(p.relative_to(step_dir))] = {"bytes": size, "sha256": digest}
    write_text_atomically(step_dir / MANIFEST,
                          json.dumps({"files": files}, indent=1, sort_keys=True))


def check_manifest(step_dir: str | os.PathLike) -> bool:
    """Whether ``step_dir`` matches its manifest: False if it has none, CheckpointError if not.

    Raises:
      CheckpointError: a file is missing, has another size or another SHA-256.
    """
    step_dir = workdir_path(step_dir)
    path = step_dir / MANIFEST
    if not path.is_file():
        return False
    try:
        files = json.loads(path.read_text())["files"]
    except (ValueError, KeyError, TypeError) as err:
        raise CheckpointError(f"unreadable manifest {path}: {err}") from None
    for name, expected in sorted(files.items()):
        file = step_dir / name
        if not file.is_file():
            raise CheckpointError(f"file {name} is missing")
        size, digest = _file_digest(file)
        if size != expected["bytes"]:
            raise CheckpointError(f"file {name} has {size} bytes, {expected['bytes']} were "
                                  "written (truncated or overwritten)")
        if digest != expected["sha256"]:
            raise CheckpointError(f"file {name} does not match the SHA-256 written with it")
    return True


def _write_manifests(manager: ocp.CheckpointManager) -> None:
    """Manifests for the manager's finished checkpoints that have none yet (process 0 only:
    the processes of a multi-host run share the directory, as they share Orbax's writes)."""
    if jax.process_index() != 0:
        return
    for step in manager.all_steps():
        step_dir = workdir_path(manager.directory) / str(step)
        if step_dir.is_dir() and not (step_dir / MANIFEST).exists():
            write_manifest(step_dir)


#: Files Orbax parses as JSON when it opens a checkpoint directory (``metrics/metrics``: the
#: ranking metric of ``best/``); a damaged one fails inside Orbax with a long traceback.
ORBAX_JSON = ("_CHECKPOINT_METADATA", "meta/metadata")
RANKING_METRICS = "metrics/metrics"


def _json_file(path: WorkPath) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path.name} does not read as JSON ({type(err).__name__})") \
            from None


def vet_step(step_dir: WorkPath, ranked: bool = False) -> str | None:
    """Why the finished checkpoint ``step_dir`` cannot be trusted, or ``None``.

    With a manifest, every file must match it (:func:`check_manifest`). Without one (a run
    killed between a save and its manifest), the JSON files Orbax parses on opening must
    parse, and in ``best/`` (``ranked``) the ranking metric must be a finite accuracy equal to
    the one recorded with the state in ``meta``, so a damaged metric never reorders the
    best-k set.
    """
    try:
        if check_manifest(step_dir):
            return None
        for name in ORBAX_JSON:
            if (step_dir / name).is_file():
                _json_file(step_dir / name)
        if ranked:
            metrics = _json_file(step_dir / RANKING_METRICS)
            meta = _json_file(step_dir / "meta" / "metadata")
            accuracy = metrics.get("accuracy") if isinstance(metrics, dict) else None
            recorded = meta.get("accuracy") if isinstance(meta, dict) else None
            if not isinstance(accuracy, (int, float)) or not math.isfinite(accuracy) \
                    or recorded != accuracy:
                return (f"its ranking metric {str(accuracy)[:40]} is not the accuracy "
                        f"recorded with the state ({recorded})")
    except CheckpointError as err:
        return str(err)
    except OSError as err:
        return f"unreadable: {err.strerror or err}"
    return None


def quarantine(directory: WorkPath, steps: dict[int, str], prefix: str = "") -> None:
    """Move the unusable ``steps`` of a checkpoint ``directory`` to ``corrupt/`` beside it
    (kept for inspection), one warning each (the caller runs this on process 0 alone).

    Raises:
      CheckpointError: a move failed (the message says what to move by hand).
    """
    target = directory.parent / "corrupt"
    for step, reason in sorted(steps.items()):
        src = directory / str(step)
        dst = target / f"{prefix}{step}-{time.strftime('%Y%m%d-%H%M%S')}"
        try:
            target.mkdir(exist_ok=True)
            src.rename(dst)
        except OSError as err:
            raise CheckpointError(
                f"could not move the unusable checkpoint {src} to {target} "
                f"({err.strerror or err}); move or delete it, then rerun") from None
        log.warning("checkpoint step %d in %s is unreadable or corrupt (%s); moved unusable "
                    "checkpoint to %s", step, directory, reason, dst)


def _vet_directory(directory: WorkPath, ranked: bool) -> dict[int, str]:
    """The finished step folders of ``directory`` that fail :func:`vet_step`, with why."""
    if not directory.is_dir():
        return {}
    bad = {}
    for p in directory.iterdir():
        if p.name.isdigit() and p.is_dir():
            reason = vet_step(p, ranked)
            if reason is not None:
                bad[int(p.name)] = reason
    return bad


def _manager(directory: WorkPath, keep: int, best: bool, use_async: bool
             ) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        enable_async_checkpointing=use_async,
        best_fn=(lambda metrics: metrics["accuracy"]) if best else None,
        best_mode="max",
        keep_checkpoints_without_metrics=not best,
        cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager(_absolute(directory), options=options)


def _absolute(directory: Any) -> Any:
    """Orbax wants absolute paths; a URL is one already."""
    return directory.absolute() if isinstance(directory, pathlib.Path) else directory


def state_digest(state: Any) -> str:
    """Digest of a state's params and BN statistics (a TrainState or its restored dict)."""
    get = state.get if isinstance(state, dict) else lambda k, d=None: getattr(state, k, d)
    return tree_digest({"params": get("params"), "batch_stats": get("batch_stats", {}) or {}})


def full_state_digest(state: Any) -> str:
    """Digest of every leaf of a train state as the loop holds it (step, params, BN
    statistics, optimizer state); compared only against a state restored in the same form."""
    return tree_digest(state)


def _digests(state: Any) -> dict[str, str]:
    return {"digest": state_digest(state), "state_digest": full_state_digest(state)}


def _save_args(state: Any, meta: dict) -> ocp.args.Composite:
    return ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))


#: How a full disk reads in the messages of writers that raise no OSError (TensorStore).
DISK_FULL_MARKERS = ("RESOURCE_EXHAUSTED", "No space left on device", "ENOSPC")


def is_disk_full(err: BaseException) -> bool:
    """Whether ``err`` (or an exception it came from) says the disk is full."""
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, OSError) and cause.errno == errno.ENOSPC:
            return True
        if any(marker in str(cause) for marker in DISK_FULL_MARKERS):
            return True
        cause = cause.__cause__ or cause.__context__
    return False


class _DiskFullNoise(logging.Filter):
    """Drops what background savers (Orbax's threads, asyncio tasks of TensorStore writes)
    log about a full disk: the run reports it once, as its last line (:func:`_write_error`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if _DISK_FULL_REPORTED:  # the run has failed with its one line: the rest is echo
            return False
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and is_disk_full(exc):
            return False
        return not any(marker in record.getMessage() for marker in DISK_FULL_MARKERS)


#: Loggers of the background savers (Orbax logs through absl).
BACKGROUND_LOGGERS = ("absl", "asyncio", "orbax")
_NOISE = _DiskFullNoise()


def quiet_disk_full_noise() -> None:
    """Keep a full disk to one line: background savers' records and thread tracebacks about
    it are dropped for the rest of the process (idempotent; a new checkpointer calls it, and
    its run starts with nothing reported)."""
    global _DISK_FULL_REPORTED
    _DISK_FULL_REPORTED = False
    for name in BACKGROUND_LOGGERS:
        logger = logging.getLogger(name)
        if _NOISE not in logger.filters:
            logger.addFilter(_NOISE)
    previous = threading.excepthook
    if getattr(previous, "_hybrenet_quiet", False):
        return

    def hook(args: threading.ExceptHookArgs) -> None:
        if _DISK_FULL_REPORTED or (args.exc_value is not None
                                   and is_disk_full(args.exc_value)):
            return  # e.g. "Event loop is closed" of a saver thread outliving the failed save
        previous(args)

    hook._hybrenet_quiet = True  # type: ignore[attr-defined]
    threading.excepthook = hook


#: Set once a full disk was reported: what background savers say afterwards is dropped.
_DISK_FULL_REPORTED = False


def _disk_full_reported() -> None:
    """From now on, background savers' records, thread errors, unraisable exceptions and
    never-awaited coroutines of the failed save stay quiet: the one line stays last."""
    global _DISK_FULL_REPORTED
    _DISK_FULL_REPORTED = True
    warnings.filterwarnings("ignore", category=RuntimeWarning,
                            message="coroutine .* was never awaited")
    previous = sys.unraisablehook
    sys.unraisablehook = lambda unraisable: None if _DISK_FULL_REPORTED else previous(unraisable)


def _write_error(err: BaseException, what: str, intact: int | None = None) -> CheckpointError:
    """A clear one-line error for a failed checkpoint write (disk full named as such)."""
    cause: BaseException | None = err
    while cause is not None and not isinstance(cause, OSError):
        cause = cause.__cause__ or cause.__context__
    reason = (f"{cause.strerror or cause}" if isinstance(cause, OSError)
              else f"{type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''}")
    if is_disk_full(err):
        reason = "the disk is full (ENOSPC)"
        _disk_full_reported()
    kept = ("earlier checkpoints are intact" if intact is None
            else f"the last intact checkpoint is step {intact}" if intact >= 0
            else "no checkpoint was saved yet")
    return CheckpointError(f"writing {what} failed: {reason}; {kept}, free space (or fix the "
                           "path) and rerun the same command to resume")


class Checkpointer:
    """Periodic and best-k checkpoints of one run directory."""

    def __init__(self, workdir: str | os.PathLike, max_to_keep: int = 2, keep_best: int = 1,
                 use_async: bool = True):
        workdir = workdir_path(workdir)
        quiet_disk_full_noise()

        def vet() -> None:  # before Orbax opens (and ranks) anything; process 0 moves
            if jax.process_index() == 0:
                quarantine(workdir / "checkpoints", _vet_directory(workdir / "checkpoints",
                                                                   False))
                if keep_best:
                    quarantine(workdir / "best", _vet_directory(workdir / "best", True),
                               "best-")

        distributed.agree("checkpoints-vetted", vet)
        self.latest = _manager(workdir / "checkpoints", max_to_keep, False, use_async)
        self.best = _manager(workdir / "best", keep_best, True, use_async) if keep_best else None
        self.use_async = use_async
        self._in_flight: dict[int, int] = {}  # id(manager) -> step of its unsealed save

    def save(self, step: int, state: Any, meta: dict, force: bool = False) -> bool:
        """Save ``state`` at ``step`` (with its digest in ``meta``); returns whether it saved."""
        meta = {**meta, "step": int(step), **_digests(state)}
        self._seal(self.latest)  # an earlier save that failed is named as itself
        try:
            if int(step) in self.latest.all_steps():
                return False  # left by a run killed after this save (see the module notes)
            saved = self.latest.save(step, args=_save_args(state, meta), force=force)
            self._in_flight[id(self.latest)] = int(step)
            if not self.use_async:
                self._seal(self.latest)
            return saved
        except CheckpointError:
            raise
        except Exception as err:  # noqa: BLE001 - reported as one clear error
            raise _write_error(err, f"checkpoint step {step} to {self.latest.directory}",
                               self.last_intact_step()) from err

    def save_best(self, step: int, state: Any, meta: dict, accuracy: float) -> None:
        """Offer ``state`` to the best-k set (kept only if among the best accuracies)."""
        if self.best is None:
            return
        meta = {**meta, "step": int(step), "accuracy": float(accuracy),
                **_digests(state)}
        self._seal(self.best)
        try:
            if int(step) in self.best.all_steps():
                return  # left by a run killed between this save and the periodic one
            self.best.save(step, args=_save_args(state, meta),
                           metrics={"accuracy": float(accuracy)}, force=True)
            self._in_flight[id(self.best)] = int(step)
            if not self.use_async:
                self._seal(self.best)
        except CheckpointError:
            raise
        except Exception as err:  # noqa: BLE001
            raise _write_error(err, f"best checkpoint step {step} to {self.best.directory}",
                               self.last_intact_step()) from err

    def last_intact_step(self) -> int:
        """The newest periodic step with a manifest (-1: none); what a rerun resumes from."""
        directory = workdir_path(self.latest.directory)
        steps = [int(p.name) for p in directory.iterdir() if p.name.isdigit()
                 and (p / MANIFEST).is_file()] if directory.is_dir() else []
        return max(steps, default=-1)

    def _seal(self, manager: ocp.CheckpointManager) -> None:
        """Finish the in-flight async save (Orbax would wait for it anyway before the next
        one) and write the manifests of every finished checkpoint.

        Raises:
          CheckpointError: that save (named by its own step) or a manifest failed.
        """
        try:
            if self.use_async:
                manager.wait_until_finished()
            _write_manifests(manager)
        except Exception as err:  # noqa: BLE001 - reported as one clear error
            step = self._in_flight.get(id(manager))
            kind = "best checkpoint" if manager is self.best else "checkpoint"
            what = (f"{kind} step {step} to {manager.directory}" if step is not None
                    else f"a {kind} to {manager.directory}")
            raise _write_error(err, what, self.last_intact_step()) from err
        self._in_flight.pop(id(manager), None)

    def restore_latest(self, abstract_state: Any) -> tuple[Any, dict] | None:
        """Newest intact checkpoint as ``(state, meta)``.

        Corrupt newer checkpoints are reported and moved to ``corrupt/`` in the workdir (kept
        for inspection), so the resumed run can save those steps again. With several
        processes, every process reads, they check that they found the same step, and process
        0 alone moves the unusable ones while the others wait.

        Raises:
          CheckpointError: the processes found different checkpoints (a workdir not shared).
        """
        found = restore_newest_intact(self.latest, abstract_state)
        good = int(found[1]["step"]) if found else -1
        steps = distributed.gather_strings("restored-step", str(good))
        if len(set(steps)) > 1:
            raise CheckpointError(
                f"the processes found different newest checkpoints in {self.latest.directory} "
                f"(steps {', '.join(steps)} by process; -1: none): the workdir must be one "
                "folder every process sees")
        bad = [s for s in self.latest.all_steps() if s > good]

        def move() -> None:  # process 0 alone; a failure stops every process with its line
            if bad and jax.process_index() == 0:
                quarantine(workdir_path(self.latest.directory),
                           {step: "unreadable or corrupt" for step in bad})

        distributed.agree("quarantined", move)
        if bad:
            self.latest.reload()
        return found

    def wait(self) -> None:
        """Block until async saves are on disk."""
        for manager in (self.latest, self.best):
            if manager is not None:
                self._seal(manager)

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
            # a damaged file is rejected here, before Orbax (whose failing reads are noisy)
            check_manifest(workdir_path(manager.directory) / str(step))
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
            if not host_tree_is_finite(restored["state"]):
                raise CheckpointError("it holds NaN or infinite values (saved by a diverged "
                                      "run before divergence was checked at every save)")
            if abstract_state is not None and "state_digest" in meta:
                full = full_state_digest(restored["state"])
                if full != meta["state_digest"]:
                    raise CheckpointError(f"state digest mismatch (stored "
                                          f"{str(meta['state_digest'])[:12]}, read {full[:12]}; "
                                          "the optimizer state or step differs)")
            return restored["state"], meta
        except Exception as err:  # noqa: BLE001 - any read failure means "not trustworthy"
            log.warning("checkpoint step %d in %s is unreadable or corrupt (%s: %s); "
                        "falling back to an older checkpoint", step, manager.directory,
                        type(err).__name__, str(err).splitlines()[0][:200] if str(err) else "")
    return None


class _StepReader:
    """Reads the step folders of a checkpoint directory one by one, read-only, with the
    manager's interface that :func:`restore_newest_intact` uses. Unlike an Orbax manager it
    parses nothing when opened, so a damaged step (vetted away first) cannot break it."""

    def __init__(self, directory: WorkPath, steps: list[int]):
        self.directory = directory
        self._steps = steps
        self._reader = ocp.Checkpointer(ocp.CompositeCheckpointHandler())

    def all_steps(self) -> list[int]:
        return list(self._steps)

    def restore(self, step: int, args: Any) -> Any:
        return self._reader.restore(_absolute(self.directory / str(step)), args=args)


def load_variables(workdir: str | os.PathLike, which: str | int = "latest"
                   ) -> tuple[dict, dict]:
    """Flax variables (``params``, ``batch_stats``) and meta of a run's checkpoint.

    Every step folder is vetted first (:func:`vet_step`); a damaged one is named in a warning
    and skipped (nothing is moved: this reader writes nothing), the newest intact one is read.

    Args:
      workdir: the run directory (a path or a ``file://``/``gs://`` URL).
      which: ``"latest"``, ``"best"`` or a step number (searched in ``checkpoints/``).

    Raises:
      CheckpointError: no intact checkpoint found (the message says where it looked).
    """
    workdir = workdir_path(workdir)
    sub = "best" if which == "best" else "checkpoints"
    directory = workdir / sub
    if not directory.is_dir():
        raise CheckpointError(f"no {sub}/ directory in {workdir}: is this a training workdir?")
    finished = sorted((int(p.name) for p in directory.iterdir()
                       if p.name.isdigit() and p.is_dir()), reverse=True)
    if isinstance(which, int):
        if which not in finished:
            raise CheckpointError(f"no checkpoint at step {which} in {directory}; available: "
                                  f"{sorted(finished)}")
        finished = [which]
    steps = []
    for step in finished:
        reason = vet_step(directory / str(step), ranked=sub == "best")
        if reason is None:
            steps.append(step)
        else:
            log.warning("checkpoint step %d in %s is unreadable or corrupt (%s); falling back "
                        "to an older checkpoint", step, directory, reason)
    found = restore_newest_intact(_StepReader(directory, steps), None, steps)
    if found is None:
        raise CheckpointError(f"no intact checkpoint in {directory}")
    state, meta = found
    variables = {"params": state["params"], "batch_stats": state.get("batch_stats", {}) or {}}
    return jax.tree.map(np.asarray, variables), meta
