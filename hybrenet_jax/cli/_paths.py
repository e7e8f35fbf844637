"""Paths the verbs take: the folders and files they write, and the training runs they read.

``hybrenet train`` (``launch.train``) writes its workdir on a local disk or through a URL
(``file:///abs/run``, ``gs://``, ``s3://``, ``az://``; :mod:`hybrenet_jax.train.storage`).
Every verb that reads such a run (``export --workdir``, ``--teacher-workdir``,
``--pretrained-workdir``) takes the same URLs (:func:`training_workdir`). What the other
verbs write (pipeline folders, reports, exports) is local: a path or a ``file://`` URL
(:func:`local_path`); a cloud URL is one line, not a local folder named ``gs:``. A missing
package for a scheme, an unsupported scheme or unreachable storage is one line naming the
option (exit code 2).
"""

from __future__ import annotations

import os
import pathlib

#: What :func:`local_path` says about cloud URLs when the caller gives no hint.
COPY_HINT = "write it locally and copy it there afterwards"
READ_HINT = "copy it to a local folder first"


def _storage():
    from hybrenet_jax.train import storage  # noqa: PLC0415 (imports etils.epath)

    return storage


def local_path(text: str | os.PathLike, option: str, verb: str, what: str = "files",
               hint: str | None = None, reads: bool = False) -> pathlib.Path:
    """``text`` (a local path or a ``file:///abs/path`` URL) as a ``pathlib.Path``.

    Raises:
      StorageError: a cloud URL (``hybrenet {verb}`` writes, or ``reads``, local ``what``;
        ``hint`` says what to do instead), an unsupported scheme or a relative ``file://``
        URL.
    """
    text = os.fspath(text)
    if "://" not in text:
        return pathlib.Path(text)
    storage = _storage()
    if text.partition("://")[0].lower() in storage.CLOUD_SCHEMES:
        hint = hint or (READ_HINT if reads else COPY_HINT)
        raise storage.StorageError(f"{option} {text!r}: hybrenet {verb} "
                                   f"{'reads' if reads else 'writes'} local {what} (a path or "
                                   f"a file:///abs/path URL); {hint}")
    try:
        return pathlib.Path(os.fspath(storage.workdir_path(text)))
    except storage.StorageError as err:
        raise storage.StorageError(f"{option}: {err}") from None


def training_workdir(text: str | os.PathLike, option: str) -> str:
    """A training run a verb reads (a teacher, a pretrained network, what ``export``
    exports): a local path or any URL ``train`` writes, as the text the library reads
    (``file:///abs/run`` becomes ``/abs/run``; a cloud URL stays).

    Raises:
      StorageError: an unsupported scheme, a package the scheme needs (named, with how to
        install it), or cloud storage that cannot be reached (one probe).
    """
    storage = _storage()
    try:
        path = storage.workdir_path(text)
    except storage.StorageError as err:
        raise storage.StorageError(f"{option}: {err}") from None
    return os.fspath(storage.check_reachable(path, option))
