"""Workdir paths on a local disk or on cloud storage, through ``etils.epath`` (as Orbax).

``workdir_path("runs/x")`` is the ``pathlib.Path`` it always was;
``workdir_path("gs://bucket/run")`` (or ``s3://``, ``az://``) an :class:`epath.Path` on that
store, which checkpoints (Orbax), metrics, summaries and the run identity are written through;
``workdir_path("file:///abs/run")`` is an :class:`epath.Path` of the local folder ``/abs/run``:
the same code as for ``gs://`` with the local backend (the stand-in our tests use for cloud
storage). Writes that must not be seen half done go through a uniquely named temporary file and
a rename (on object stores a rename is a copy and a delete: readers still never see a partial
file).
"""

from __future__ import annotations

import os
import pathlib
import re
import uuid

from etils import epath

from hybrenet_jax.errors import HybrenetError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
#: URL schemes epath (hence Orbax) can write to, besides ``file://``.
CLOUD_SCHEMES = ("gs", "s3", "az")


class StorageError(HybrenetError):
    """A workdir URL of a scheme we cannot write to."""


WorkPath = pathlib.Path | epath.Path


def workdir_path(workdir: str | os.PathLike) -> WorkPath:
    """``workdir`` as a ``pathlib.Path`` (a local path) or :class:`epath.Path` (a URL).

    Raises:
      StorageError: a URL scheme other than ``file``, ``gs``, ``s3``, ``az``.
    """
    if isinstance(workdir, (epath.Path, pathlib.Path)):
        return workdir
    text = os.fspath(workdir)
    match = _SCHEME.match(text)
    if match:
        scheme = match.group(1).lower()
        if scheme == "file":
            local = text[len(match.group(0)):]
            if local.startswith("localhost/"):
                local = local[len("localhost"):]
            if not local.startswith("/"):
                raise StorageError(f"{text!r} is not an absolute file:// URL (file:///abs/path)")
            return epath.Path(os.path.normpath(local))
        if scheme not in CLOUD_SCHEMES:
            raise StorageError(f"workdir {text!r}: unsupported URL scheme {scheme}:// "
                               "(accepted: a local path, file://, gs://, s3://, az://)")
        return epath.Path(text)
    return pathlib.Path(text)


def is_local(path: str | os.PathLike) -> bool:
    """Whether ``path`` is on a local (POSIX) filesystem rather than an object store."""
    text = os.fspath(path)
    return _SCHEME.match(text) is None


def temporary_sibling(path: WorkPath) -> WorkPath:
    """A unique name beside ``path`` (for write-then-rename), starting with its name."""
    return path.parent / f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary sibling and a rename (OSError passes)."""
    path = workdir_path(path)
    tmp = temporary_sibling(path)
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except BaseException:
        try:
            if tmp.exists():
                tmp.unlink()
        except OSError:
            pass
        raise
