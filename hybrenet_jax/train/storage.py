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

import importlib.util
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


#: ``BUCKET[/PATH]`` of a gs:// URL: Cloud Storage's bucket naming rules (dotted names up to
#: 222 characters are allowed in parts of 63); a malformed one otherwise retries for minutes.
_GCS_BUCKET = re.compile(r"[a-z0-9](?:[a-z0-9._-]{1,220}[a-z0-9])(?:/[^\s]*)?$")


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
        if scheme == "gs" and not _GCS_BUCKET.match(text[len(match.group(0)):]):
            raise StorageError(f"workdir {text!r}: not a gs://BUCKET/PATH URL (a bucket name is "
                               "3-63 characters: lower-case letters, digits, '-', '_', '.', "
                               "starting and ending with a letter or digit)")
        missing = missing_support(scheme)
        if missing:
            raise StorageError(f"workdir {text!r}: {missing}")
        return epath.Path(text)
    return pathlib.Path(text)


#: What epath needs to reach each cloud scheme through fsspec, and how to install it.
FSSPEC_SUPPORT: dict[str, tuple[tuple[str, ...], str]] = {
    "gs": (("fsspec", "gcsfs"), 'install the gcs extra: pip install -e ".[gcs]" (fsspec, gcsfs)'),
    "s3": (("fsspec", "s3fs"), "pip install fsspec s3fs"),
    "az": (("fsspec", "adlfs"), "pip install fsspec adlfs"),
}


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or half-imported package
        return False


def through_tensorflow() -> bool:
    """Whether epath reaches cloud storage through TensorFlow's file systems (TensorFlow
    installed and ``EPATH_USE_TF`` not false: epath's own rule) rather than fsspec."""
    if os.environ.get("EPATH_USE_TF", "").lower() in ("false", "no", "f", "0"):
        return False
    return _installed("tensorflow")


def missing_support(scheme: str) -> str | None:
    """What is missing to read and write ``scheme://`` URLs here (``None``: nothing), said
    with what to install; no I/O, so a missing package is one line before anything runs
    rather than an ``ImportError`` traceback at the first checkpoint."""
    packages, install = FSSPEC_SUPPORT[scheme]
    if through_tensorflow():
        if scheme == "gs" or _installed("tensorflow_io"):
            return None  # TensorFlow reads gs:// itself; s3://, az:// through tensorflow-io
        return (f"TensorFlow is installed, so etils.epath reaches {scheme}:// through "
                f"TensorFlow, which needs tensorflow-io for it (pip install tensorflow-io); or "
                f"set EPATH_USE_TF=0 and {install}")
    absent = [p for p in packages if not _installed(p)]
    if absent:
        return (f"{scheme}:// storage needs {' and '.join(absent)}, not installed; "
                f"{install}")
    return None


def check_reachable(path: WorkPath, what: str = "workdir") -> WorkPath:
    """``path``, after one probe (``exists``) when it is on cloud storage: a store that
    cannot be reached (no network, no credentials, no such bucket) is one line here instead
    of the storage library's traceback in the middle of a run. Local paths are not probed.

    Raises:
      StorageError: the probe failed; the message names ``what``, the URL and the reason.
    """
    text = os.fspath(path)
    match = _SCHEME.match(text)
    if match is None or match.group(1).lower() == "file":
        return path
    try:
        path.exists()
    except Exception as err:  # noqa: BLE001 - any backend's failure means: unreachable
        reason = (str(err).strip().splitlines() or [""])[0]
        raise StorageError(f"{what} {text!r}: cannot reach {match.group(1)}:// storage "
                           f"({type(err).__name__}: {reason}); check the network, the "
                           "credentials and the bucket name") from None
    return path


def is_local(path: str | os.PathLike) -> bool:
    """Whether ``path`` is on a local (POSIX) filesystem rather than an object store."""
    text = os.fspath(path)
    return _SCHEME.match(text) is None


def temporary_sibling(path: WorkPath) -> WorkPath:
    """A unique name beside ``path`` (for write-then-rename), starting with its name."""
    return path.parent / f"{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"


def write_text_atomically(path: str | os.PathLike, text: str | bytes) -> None:
    """Write ``text`` (or bytes) to ``path`` through a temporary sibling and a rename (OSError
    passes; ``path`` is then unchanged). On a local disk the temporary file is fsynced before
    the rename, so a crash never leaves an empty ``path``."""
    path = workdir_path(path)
    tmp = temporary_sibling(path)
    try:
        if isinstance(text, str):
            tmp.write_text(text)
        else:
            tmp.write_bytes(bytes(text))
        if is_local(str(tmp)):
            fd = os.open(os.fspath(tmp), os.O_RDONLY)
            try:
                os.fsync(fd)  # the data is on disk before the name points at it
            finally:
                os.close(fd)
        tmp.replace(path)
    except BaseException:
        try:
            if tmp.exists():
                tmp.unlink()
        except OSError:
            pass
        raise
