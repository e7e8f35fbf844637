"""One writer per workdir: an advisory ``fcntl.flock`` on ``WORKDIR/run.lock``.

Process 0 of a run holds the lock for the run's duration; a second run on the same workdir
is refused with :class:`WorkdirBusyError` naming the holder (pid, host, start time) and
changes nothing. The lock file stays behind (a stale file locks nothing: the kernel drops an
flock when its holder exits, even by ``kill -9``).

Deleting or replacing ``run.lock`` (the usual "stale lock" fix) under a running holder
would let a second run in: the holder's flock stays on the unlinked file, and the second run
locks a new file of the same name. The holder cannot be stopped at that moment, but
:meth:`WorkdirLock.check` notices it (the path no longer names the file it holds the flock
on) and raises :class:`LockLostError`; every record write of :mod:`.rundir` into a locked
workdir calls it, and training calls it before each checkpoint. The limit: the second run
cannot tell that the first still runs (a new lock file is normal: the first run of a workdir
makes it), so both may write until the first reaches its next check. Acquiring re-checks the
path after the flock, so a file deleted between ``open`` and ``flock`` is not trusted.

A workdir on cloud storage (``gs://``, ``s3://``, ``az://``) has no flock: no lock is taken
there (a warning says so), and keeping to one run per such workdir is the user's job. On a
network filesystem the lock is only as good as its ``flock``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import time

from hybrenet_jax.errors import HybrenetError
from hybrenet_jax.train.storage import is_local, workdir_path

log = logging.getLogger(__name__)

LOCK_FILE = "run.lock"


class WorkdirBusyError(HybrenetError):
    """Another run holds the workdir's lock."""


class LockLostError(WorkdirBusyError):
    """The lock file was removed or replaced while this run held it."""


#: Locks held by this process (the newest last): :func:`check_locks_covering` checks them.
_HELD: list["WorkdirLock"] = []


class WorkdirLock:
    """Context manager holding the workdir's lock (a no-op when ``enabled`` is False)."""

    def __init__(self, workdir: str | os.PathLike, enabled: bool = True) -> None:
        self.path = workdir_path(workdir) / LOCK_FILE
        self.enabled = enabled
        self._fd: int | None = None
        self._abs = ""  # absolute path of the lock file, set when acquiring
        if enabled and not is_local(self.path):
            log.warning("workdir %s is on cloud storage, where no lock can be taken: make sure "
                        "no other run uses it", self.path.parent)
            self.enabled = False

    def acquire(self) -> None:
        """Take the lock or raise :class:`WorkdirBusyError`; OSError if it cannot be opened."""
        if not self.enabled or self._fd is not None:
            return
        self._abs = os.path.abspath(os.fspath(self.path))  # checks survive a chdir
        for _ in range(10):
            fd = os.open(self._abs, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _describe(_read_holder(fd))
                os.close(fd)
                raise WorkdirBusyError(
                    f"workdir {self.path.parent} is in use by another run ({holder}); wait for "
                    "it to finish or use another workdir (nothing was changed)") from None
            except OSError:
                os.close(fd)
                raise
            if _same_file(fd, self._abs):
                break
            # deleted or replaced between our open and flock: lock the file the path names now
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)
        else:
            raise WorkdirBusyError(f"lock file {self.path} keeps being replaced; another tool "
                                   "is rewriting it: stop it and rerun (nothing was changed)")
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
        self._fd = fd
        _HELD.append(self)

    @property
    def held(self) -> bool:
        """Whether this object holds the flock now."""
        return self._fd is not None

    def check(self) -> None:
        """Raise :class:`LockLostError` unless ``run.lock`` is still the file we hold the flock
        on (it was deleted or replaced: another run may have taken a new lock and be writing).
        A no-op when the lock is not held (disabled, cloud storage, other processes)."""
        if self._fd is None:
            return
        if not _same_file(self._fd, self._abs):
            raise LockLostError(
                f"lock file {self.path} was removed or replaced while this run held it; "
                f"another run may be writing to {self.path.parent}: make sure no other run "
                "uses it, then rerun the same command to resume")

    def release(self) -> None:
        """Drop the lock (the file stays)."""
        if self._fd is not None:
            if self in _HELD:
                _HELD.remove(self)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "WorkdirLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def check_locks_covering(path: str | os.PathLike) -> None:
    """:meth:`WorkdirLock.check` every lock this process holds on ``path``'s folder or a
    folder above it (what :mod:`.rundir` calls before each record write)."""
    if not _HELD:
        return
    target = os.path.abspath(os.fspath(path))
    for lock in list(_HELD):
        folder = os.path.dirname(lock._abs)
        if target == folder or target.startswith(folder.rstrip(os.sep) + os.sep):
            lock.check()


def _same_file(fd: int, path) -> bool:
    """Whether ``path`` names the open file ``fd`` (same device and inode)."""
    try:
        named = os.stat(os.fspath(path))
    except OSError:
        return False
    held = os.fstat(fd)
    return (named.st_ino, named.st_dev) == (held.st_ino, held.st_dev)


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(holder: dict) -> str:
    if not isinstance(holder, dict) or "pid" not in holder:
        return "holder unknown"
    return (f"pid {holder.get('pid')} on host {holder.get('host', '?')}, "
            f"since {holder.get('since', '?')}")
