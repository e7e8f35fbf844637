"""Run directories: what training, the pipelines and SNL read and write in a workdir.

A run directory holds one run's checkpoints, ``config.json``, ``metrics.jsonl``,
``run_identity.json`` and, once finished, ``summary.json``; pipeline and SNL directories add
``results.jsonl``, one line per finished model for ``hybrenet pareto``. This module owns the
names, the checks before a run writes (:func:`run_directory`, :func:`make_workdir`,
:func:`check_writable`), the atomic writes (:func:`write_atomically`, one line on a full
disk), reading a finished run (:func:`read_summary`, :func:`finished_run_model`) and
:class:`ResultsLog`. Paths may be local or ``gs://``/``file://`` (:mod:`.storage`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import pathlib
from collections.abc import Iterator

from hybrenet_jax.errors import HybrenetError
from hybrenet_jax.train.storage import (WorkPath, temporary_sibling, workdir_path,
                                          write_text_atomically)

#: Files a run writes into its workdir (a folder or other non-file of that name is an error).
OUTPUT_FILES = ("summary.json", "config.json", "metrics.jsonl", "run_identity.json")
OUTPUT_DIRS = ("checkpoints", "best", "tensorboard")
SUMMARY = "summary.json"
RESULTS = "results.jsonl"


class TrainingError(HybrenetError):
    """A run cannot start or continue (bad config, diverged loss, unwritable workdir)."""


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


def write_atomically(path: WorkPath | pathlib.Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename."""
    with writing(path):
        write_text_atomically(path, text)


def write_summary(workdir: WorkPath | pathlib.Path, summary: dict) -> None:
    """``workdir/summary.json`` (atomic): the run is finished."""
    write_atomically(workdir / SUMMARY, json.dumps(summary, indent=2))


def read_summary(workdir: str | os.PathLike) -> dict | None:
    """The ``summary.json`` of a finished run, or ``None`` when the run has not finished."""
    path = workdir_path(workdir) / SUMMARY
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None  # half-written by another tool: train again (train_and_evaluate resumes)
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


class ResultsLog:
    """``results.jsonl``: one JSON object per finished model, appended durably."""

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)

    def records(self) -> list[dict]:
        """Every well-formed line (lines that fail to parse are ignored here)."""
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                out.append(rec)
        return out

    def append(self, record: dict) -> None:
        """Append ``record`` as one line (flushed and fsynced)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
            os.fsync(f.fileno())
