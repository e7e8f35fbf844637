"""One writer per workdir: an advisory ``fcntl.flock`` on ``WORKDIR/run.lock``.

Process 0 of a run holds the lock for the run's duration; a second run on the same workdir
is refused with :class:`WorkdirBusyError` naming the holder (pid, host, start time) and
changes nothing. The lock file stays behind (a stale file locks nothing: the kernel drops an
flock when its holder exits, even by ``kill -9``).

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


class WorkdirLock:
    """Context manager holding the workdir's lock (a no-op when ``enabled`` is False)."""

    def __init__(self, workdir: str | os.PathLike, enabled: bool = True) -> None:
        self.path = workdir_path(workdir) / LOCK_FILE
        self.enabled = enabled
        self._fd: int | None = None
        if enabled and not is_local(self.path):
            log.warning("workdir %s is on cloud storage, where no lock can be taken: make sure "
                        "no other run uses it", self.path.parent)
            self.enabled = False

    def acquire(self) -> None:
        """Take the lock or raise :class:`WorkdirBusyError`; OSError if it cannot be opened."""
        if not self.enabled or self._fd is not None:
            return
        fd = os.open(os.fspath(self.path), os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(_read_holder(fd))
            os.close(fd)
            raise WorkdirBusyError(
                f"workdir {self.path.parent} is in use by another run ({holder}); wait for it "
                "to finish or use another workdir (nothing was changed)") from None
        except OSError:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "since": time.strftime("%Y-%m-%d %H:%M:%S")}).encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Drop the lock (the file stays)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "WorkdirLock":
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


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
