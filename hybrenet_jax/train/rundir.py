"""Run directories: what training, the pipelines and SNL read and write in a workdir.

A run directory holds one run's checkpoints, ``config.json``, ``metrics.jsonl``,
``run_identity.json`` and, once finished, ``summary.json``; pipeline and SNL directories add
``results.jsonl``, one line per finished model for ``hybrenet pareto``. This module owns the
names, the checks before a run writes (:func:`run_directory`, :func:`make_workdir`,
:func:`check_writable`), the atomic writes (:func:`write_atomically`, one line on a full
disk), reading a finished run (:func:`read_summary`, :func:`finished_run_model`) and
:class:`ResultsLog`. Paths may be local or ``gs://``/``file://`` (:mod:`.storage`).

Every record of a workdir goes through here, and so is crash-safe:

* whole files (``summary.json``, ``plan.json``, ``criticality.json``, markdown, reports,
  ``.npz`` masks) are written to a temporary sibling, fsynced and renamed over the old one
  (:func:`write_atomically`, :func:`write_json`, :func:`atomic_file`): a failed write (a full
  disk) leaves the old file as it was;
* JSON-lines logs (``results.jsonl``, ``search.jsonl``: :class:`JsonLinesLog`) are appended one
  fsynced line at a time; an append first cuts a torn last line (a writer killed mid-line, no
  trailing newline) with one warning, and reading warns once about each damaged line (with its
  number) instead of dropping it silently;
* JSON is written with ``allow_nan=False``: a record holding NaN or Infinity is refused with
  one line naming the field (:class:`RecordError`) instead of becoming invalid JSON;
* readers of a record treat a damaged file as damaged (:func:`read_json`: one warning, the
  file optionally set aside as ``NAME.damaged``) and recompute, never a traceback;
* before each write, every :class:`~.workdir_lock.WorkdirLock` this process holds on the
  folder (or above) is checked (:meth:`~.workdir_lock.WorkdirLock.check`): a lock file
  removed or replaced under the run stops it before it writes again.

:func:`locked_workdir` is how a verb (a pipeline, SNL) holds its workdir's lock for its whole
run; nested training runs in subfolders take their own locks.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import math
import os
import pathlib
from collections.abc import Callable, Iterator

from hybrenet_jax.errors import HybrenetError
from hybrenet_jax.train.storage import (WorkPath, is_local, temporary_sibling, workdir_path,
                                          write_text_atomically)
from hybrenet_jax.train.workdir_lock import LOCK_FILE, WorkdirLock, check_locks_covering

log = logging.getLogger(__name__)

#: Files a run writes into its workdir (a folder or other non-file of that name is an error).
OUTPUT_FILES = ("summary.json", "config.json", "metrics.jsonl", "run_identity.json")
OUTPUT_DIRS = ("checkpoints", "best", "tensorboard")
SUMMARY = "summary.json"
RESULTS = "results.jsonl"


class TrainingError(HybrenetError):
    """A run cannot start or continue (bad config, diverged loss, unwritable workdir)."""


class RecordError(HybrenetError):
    """A record cannot be written as valid JSON (a NaN or infinite number in it)."""


class RunDirError(HybrenetError):
    """A run directory given as input (teacher, pretrained run) is missing or unfinished."""


class Preempted(Exception):
    """A training run was stopped by SIGTERM after saving a checkpoint; rerun to resume."""

    def __init__(self, workdir: os.PathLike | str, step: int):
        super().__init__(f"preempted at step {step} in {workdir}; rerun the same command to "
                         "resume")
        self.workdir = workdir
        self.step = step


def run_directory(workdir: str | os.PathLike) -> WorkPath:
    """``workdir`` as a path (local, ``file://`` or cloud storage: ``storage.workdir_path``);
    an empty name is an error (it would mean the current folder)."""
    if not os.fspath(workdir).strip():
        raise TrainingError("workdir is empty: name a run directory, e.g. --workdir runs/NAME")
    return workdir_path(workdir)


def make_workdir(path: WorkPath) -> None:
    """Create ``path`` (and its parents); one line when that is not allowed."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise TrainingError(f"workdir {path} is not writable: {err.strerror or err}") from None


def remove_if_untouched(path: WorkPath, leftovers: set[str]) -> bool:
    """Remove ``path`` when it holds nothing but ``leftovers`` (e.g. the lock of a run refused
    before it wrote anything): a refused run leaves no folder behind. Returns whether it did."""
    try:
        names = {p.name for p in path.iterdir()}
        if not names <= leftovers:
            return False
        for name in names:
            (path / name).unlink()
        path.rmdir()
    except OSError:
        return False
    return True


def check_writable(path: WorkPath) -> None:
    """Write a probe file, and refuse output names taken by the wrong kind of entry."""
    try:
        # unique per process: the processes of a multi-host run share one workdir
        probe = temporary_sibling(path / ".write_test")
        probe.write_text("")
        probe.unlink()
    except OSError as err:
        raise TrainingError(f"workdir {path} is not writable: {err.strerror or err}") from None
    for name in OUTPUT_FILES:
        if (path / name).exists() and not (path / name).is_file():
            raise TrainingError(f"{path / name} is not a file; the run writes its {name} there: "
                                "move it away or use another workdir")
    for name in OUTPUT_DIRS:
        if (path / name).exists() and not (path / name).is_dir():
            raise TrainingError(f"{path / name} is not a folder; the run keeps its {name} "
                                "there: move it away or use another workdir")


@contextlib.contextmanager
def writing(path: WorkPath | pathlib.Path) -> Iterator[None]:
    """Turn an OSError of the ``with`` body into one line naming ``path`` (disk full named)."""
    try:
        yield
    except OSError as err:
        reason = ("the disk is full (ENOSPC)" if err.errno == errno.ENOSPC
                  else err.strerror or str(err))
        raise TrainingError(f"writing {path} failed: {reason}; free space (or fix the path) and "
                            "rerun the same command to resume") from None


#: (path, line number, text) of damaged records already warned about (one warning each).
_WARNED: set = set()


def _warn_once(key, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning("%s", message)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is not a finite number")
    return value


def _no_constant(name: str):
    raise ValueError(f"{name} is not a finite number")


def loads_record(text: str | bytes):
    """``json.loads`` of a record line that must hold finite numbers only: ``NaN``,
    ``Infinity`` and overflowing literals (``1e999``) make it a damaged line (ValueError)."""
    return json.loads(text, parse_float=_finite_float, parse_constant=_no_constant)


def check_lock(path: WorkPath | pathlib.Path) -> None:
    """Raise :class:`~.workdir_lock.LockLostError` when a lock this process holds on ``path``'s
    folder (or a folder above) was removed or replaced (see :meth:`WorkdirLock.check`)."""
    check_locks_covering(path)


def write_atomically(path: WorkPath | pathlib.Path, text: str | bytes) -> None:
    """Write ``text`` (or bytes) to ``path`` through a temporary file, an fsync and a rename;
    a failure (full disk) is one line and leaves the old ``path`` as it was."""
    check_lock(path)
    with writing(path):
        write_text_atomically(path, text)


@contextlib.contextmanager
def atomic_file(path: WorkPath | pathlib.Path, mode: str = "w") -> Iterator:
    """A file object (``"w"`` text, ``"wb"`` bytes) whose content replaces ``path``
    atomically (:func:`write_atomically`'s temporary sibling, fsync and rename) when the
    ``with`` body finishes; nothing is written if the body fails (OSError passes). For
    writers that want a file object: ``np.savez``, ``csv``, ``fig.savefig(f, format=)``."""
    if mode not in ("w", "wb"):
        raise ValueError(f"mode {mode!r}: 'w' or 'wb'")
    check_lock(path)
    buffer = io.StringIO() if mode == "w" else io.BytesIO()
    yield buffer
    write_text_atomically(path, buffer.getvalue())


def _non_finite_field(value, where: str = "") -> str | None:
    """The first field (``a.b[2]``) of ``value`` holding NaN or an infinity, if any."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or "the value"
    if isinstance(value, dict):
        for k, v in value.items():
            found = _non_finite_field(v, f"{where}.{k}" if where else str(k))
            if found:
                return found
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found = _non_finite_field(v, f"{where}[{i}]")
            if found:
                return found
    return None


def dumps_record(record, path: WorkPath | pathlib.Path | str, indent: int | None = None) -> str:
    """``json.dumps(record, allow_nan=False)``; NaN/Infinity is one :class:`RecordError`
    naming the field and the file (nothing is written)."""
    try:
        return json.dumps(record, indent=indent, allow_nan=False)
    except ValueError:
        field = _non_finite_field(record) or "a field"
        raise RecordError(f"not writing {path}: {field} is not a finite number (NaN or "
                          "Infinity is not valid JSON); the run diverged or a value is "
                          "undefined: fix the run (e.g. a lower learning rate) and rerun") \
            from None
    except TypeError as err:
        raise RecordError(f"not writing {path}: {err}") from None


def write_json(path: WorkPath | pathlib.Path, record, indent: int = 2) -> None:
    """``record`` as JSON (valid JSON only: see :func:`dumps_record`), written atomically."""
    write_atomically(path, dumps_record(record, path, indent) + "\n")


def quarantine(path: WorkPath | pathlib.Path) -> pathlib.Path | None:
    """Rename a damaged ``path`` to ``NAME.damaged`` (``NAME.damaged-2``, ... when taken), so
    it is kept for inspection but no longer read; returns the new name (None if it failed)."""
    path = pathlib.Path(path)
    for n in range(1, 1000):
        target = path.with_name(f"{path.name}.damaged" + (f"-{n}" if n > 1 else ""))
        if not target.exists():
            try:
                check_lock(path)
                path.replace(target)
            except OSError:
                return None
            return target
    return None


def read_json(path: WorkPath | pathlib.Path, what: str = "record",
              set_aside: bool = False) -> dict | None:
    """The JSON object in ``path``; ``None`` when it is missing or damaged (empty, torn,
    invalid JSON, not an object). A damaged file is one warning and, with ``set_aside`` (the
    caller holds the workdir and will write it again), renamed by :func:`quarantine`."""
    if not path.is_file():
        return None
    try:
        data = path.read_bytes()
    except OSError as err:
        damaged(path, what, f"unreadable: {err.strerror or err}")
        return None
    try:
        record = json.loads(data)
        if not isinstance(record, dict):
            raise ValueError("not a JSON object")
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError included
        reason = "empty" if not data.strip() else str(err).splitlines()[0][:120]
        damaged(path, what, reason, set_aside)
        return None
    return record


def damaged(path: WorkPath | pathlib.Path, what: str, reason: str,
            set_aside: bool = False) -> None:
    """Warn (once per file) that the ``what`` in ``path`` is damaged; set it aside if asked."""
    moved = quarantine(path) if set_aside else None
    tail = (f"moved to {moved.name}; it is recomputed" if moved else
            "ignored; it is recomputed (and rewritten) by the next run")
    _warn_once((str(path), "file", reason, moved is not None),
               f"{what} {path} is damaged ({reason}): {tail}")


def write_summary(workdir: WorkPath | pathlib.Path, summary: dict) -> None:
    """``workdir/summary.json`` (atomic, valid JSON): the run is finished."""
    path = workdir / SUMMARY
    write_atomically(path, dumps_record(summary, path, indent=2))


def read_summary(workdir: str | os.PathLike) -> dict | None:
    """The ``summary.json`` of a finished run, or ``None`` when the run has not finished."""
    path = workdir_path(workdir) / SUMMARY
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        # half-written by another tool: train again (train_and_evaluate resumes)
        _warn_once((str(path), "summary"), f"{path} is damaged (not valid JSON): the "
                   "run is treated as unfinished and resumes from its checkpoints")
        return None
    return summary if isinstance(summary, dict) and "test_accuracy" in summary else None


def finished_run_model(workdir: str | os.PathLike, role: str = "teacher") -> str:
    """The model string of the finished run in ``workdir`` (a teacher, a pretrained network).

    Raises:
      RunDirError: the folder does not exist or holds no finished training run.
    """
    path = workdir_path(workdir)
    if not path.is_dir():
        raise RunDirError(f"{role} workdir {path} does not exist; train the {role} first "
                          "(python -m launch.train ...) or leave the option out")
    summary = read_summary(path)
    if summary is None or not ((path / "best").is_dir() or (path / "checkpoints").is_dir()):
        raise RunDirError(f"{role} workdir {path} holds no finished training run "
                          "(summary.json and checkpoints); finish its training first")
    return str(summary.get("model", ""))


class JsonLinesLog:
    """A JSON-lines record log (``results.jsonl``, ``search.jsonl``): one object per line,
    appended durably, a torn tail repaired before the next append, damaged lines warned about
    with their line number (once each) and kept in the file."""

    def __init__(self, path: str | os.PathLike, what: str = "record log"):
        self.path = pathlib.Path(path)
        self.what = what

    def _scan(self) -> tuple[list[tuple[int, bytes, dict | None]], bytes]:
        """``(lines, torn)``: every line as ``(number, text, record or None)`` and the torn
        tail (a last line without newline that is not a whole record; ``b""`` if none). A
        whole record whose newline is missing counts as a line (``text`` without the
        newline)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return [], b""
        lines = []
        parts = [part + b"\n" for part in data.split(b"\n")]
        parts[-1] = parts[-1][:-1]  # what follows the last newline (b"" when none)
        for number, line in enumerate(filter(None, parts), start=1):
            try:
                rec = loads_record(line)
            except ValueError:
                rec = None
            rec = rec if isinstance(rec, dict) else None
            if not line.endswith(b"\n") and rec is None:
                return lines, line  # torn: a writer died mid-line
            lines.append((number, line, rec))
        return lines, b""

    def _warn(self, lines, torn: bytes) -> None:
        for number, line, rec in lines:
            if rec is None and line.strip():
                _warn_once((str(self.path), number, line),
                           f"{self.path}:{number}: damaged line (not a JSON object) "
                           f"skipped: {_shown(line)}; the file keeps it: fix or delete that "
                           "line")
        if torn:
            _warn_once((str(self.path), "torn", torn),
                       f"{self.path}: torn last line (a writer was stopped mid-line) "
                       f"skipped: {_shown(torn)}; the next write cuts it")

    def records(self) -> list[dict]:
        """Every well-formed line; each damaged one is skipped with one warning naming its
        line number, a torn last line with one warning (the next append cuts it)."""
        lines, torn = self._scan()
        self._warn(lines, torn)
        return [rec for _, _, rec in lines if rec is not None]

    def _repair_tail(self) -> None:
        """Cut a torn last line (one warning), or end a whole last record lacking its
        newline, so that the next line starts on a line of its own."""
        lines, torn = self._scan()
        missing_newline = bool(lines) and not lines[-1][1].endswith(b"\n")
        if not torn and not missing_newline:
            return
        self._warn([], torn)
        with writing(self.path), self.path.open("r+b") as f:
            if torn:
                f.truncate(sum(len(line) for _, line, _ in lines))
            if missing_newline:
                f.seek(0, os.SEEK_END)
                f.write(b"\n")
            f.flush()
            os.fsync(f.fileno())

    def append(self, record: dict) -> None:
        """Append ``record`` as one line (valid JSON, flushed and fsynced), after cutting a
        torn last line, so the new record never glues onto a partial one."""
        line = dumps_record(record, self.path) + "\n"
        check_lock(self.path)
        with writing(self.path):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair_tail()
        with writing(self.path), self.path.open("ab") as f:
            f.write(line.encode())
            f.flush()
            os.fsync(f.fileno())

    def retain(self, keep: Callable[[dict], bool], reason: str = "") -> int:
        """Rewrite the log (atomically) without the records ``keep`` rejects, e.g. the search
        epochs a resumed run redoes; a torn tail goes too (one warning), damaged lines stay.
        Returns how many records were dropped (the file is not touched when nothing is)."""
        lines, torn = self._scan()
        dropped = sum(1 for _, _, rec in lines if rec is not None and not keep(rec))
        if dropped == 0 and not torn:
            return 0
        self._warn([], torn)
        kept = [line if line.endswith(b"\n") else line + b"\n"
                for _, line, rec in lines if rec is None or keep(rec)]
        write_atomically(self.path, b"".join(kept))
        if dropped:
            log.info("%s: dropped %d line(s)%s", self.path, dropped,
                     f" ({reason})" if reason else "")
        return dropped


class ResultsLog(JsonLinesLog):
    """``results.jsonl``: one JSON object per finished model, appended durably."""

    def __init__(self, path: str | os.PathLike):
        super().__init__(path, "results")


def _shown(line: bytes, limit: int = 80) -> str:
    text = line.decode(errors="replace").strip()
    return repr(text if len(text) <= limit else text[:limit] + "...")


@contextlib.contextmanager
def locked_workdir(workdir: str | os.PathLike, enabled: bool = True,
                   error: type[HybrenetError] = TrainingError) -> Iterator[WorkdirLock]:
    """Make ``workdir`` and hold its ``run.lock`` for the ``with`` body (a whole verb: a
    pipeline, SNL); a second run is refused with one line
    (:class:`~.workdir_lock.WorkdirBusyError`). ``enabled``: whether this process takes it
    (process 0). A workdir this made and that ends up holding only the lock (the verb was
    refused before writing) is removed again."""
    path = run_directory(workdir)
    created = enabled and is_local(str(path)) and not path.exists()
    make_workdir(path)
    lock = WorkdirLock(path, enabled=enabled)
    try:
        lock.acquire()
    except OSError as err:
        raise error(f"workdir {path} is not writable: {err.strerror or err}") from None
    finished = False
    try:
        yield lock
        finished = True
    finally:
        if created and not finished:
            remove_if_untouched(path, {LOCK_FILE})
        lock.release()
