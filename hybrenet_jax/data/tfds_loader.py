"""Loading tensorflow-datasets splits fully into memory as numpy arrays.

TensorFlow is only used here, for reading and decoding, and is imported on first use so that
``import hybrenet_jax.data`` and the digits path stay TensorFlow-free. GPUs are hidden from
TensorFlow before anything else so that it never reserves accelerator memory JAX needs.
"""

from __future__ import annotations

import functools
import pathlib
import re
import shutil
import urllib.parse

import numpy as np

from hybrenet_jax.data.arrays import ArraySplit
from hybrenet_jax.data.errors import DatasetError, TfdsUnavailableError

_READ_BATCH = 2048


#: How to get what the tfds datasets need (the ``tfds`` extra pins the same packages).
INSTALL_HINT = ("`pip install 'hybrenet_jax[tfds]'` "
                "or `pip install tensorflow-cpu tensorflow-datasets`")


@functools.cache
def _import_tfds():
    import os

    # TensorFlow only reads files here: its C++ start-up notes (oneDNN, CUDA) are noise on a
    # command line whose errors are one line. A value the user set is kept.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except RuntimeError:  # TF was initialised elsewhere already; keep its setting
        pass
    import tensorflow_datasets as tfds

    return tfds


def import_tfds(dataset: str | None = None):
    """Import ``tensorflow_datasets`` with GPUs hidden from TensorFlow; return the module.

    Raises:
      TfdsUnavailableError: TensorFlow or tensorflow-datasets cannot be imported; the one-line
        message names ``dataset``, what failed to import and what to install.
    """
    try:
        return _import_tfds()
    except ImportError as err:
        what = f"dataset {dataset!r}" if dataset else "tfds datasets"
        raise TfdsUnavailableError(
            f"{what} is loaded through tensorflow-datasets, which could not be imported "
            f"({err}); install it with {INSTALL_HINT} (digits needs neither)") from err


def _to_numpy(builder, split: str) -> tuple[np.ndarray, np.ndarray]:
    """Read a prepared split into ``uint8`` images and ``int32`` labels.

    tfds stores examples in an order hashed from their keys; when the dataset has an ``id``
    feature the arrays are sorted by it, so the in-memory order is the source's own order
    (``train_00000``, ...; file paths for TinyImageNet) whatever tfds does on disk.
    """
    tfds = import_tfds()
    ds = builder.as_dataset(split=split, batch_size=_READ_BATCH, shuffle_files=False)
    images, labels, ids = [], [], []
    for chunk in tfds.as_numpy(ds):
        images.append(np.asarray(chunk["image"], np.uint8))
        labels.append(np.asarray(chunk["label"], np.int32))
        if "id" in chunk:
            ids.append(np.asarray(chunk["id"]))
    if not images:
        raise DatasetError(f"{builder.name}/{split} is empty")
    images_np, labels_np = np.concatenate(images), np.concatenate(labels)
    if ids:
        order = np.argsort(np.concatenate(ids), kind="stable")
        images_np, labels_np = images_np[order], labels_np[order]
    return images_np, labels_np


def _check_split(builder, split: str) -> None:
    known = list(builder.info.splits.keys())
    # Under tfds.testing.mock_data (no metadata) the split list is empty: accept any name.
    if known and split not in known:
        raise DatasetError(f"{builder.name} has splits {', '.join(known)}; got {split!r}")


#: Seconds the reachability probe waits to connect and for the first byte, per download URL.
PROBE_TIMEOUT_S = 8.0


def _is_prepared(builder) -> bool:
    """``builder.is_prepared()``, without tfds's warning about a folder that does not exist."""
    if not pathlib.Path(str(builder.data_dir)).expanduser().is_dir():
        return False
    return builder.is_prepared()


def _data_root(builder) -> pathlib.Path:
    """The tfds data dir a builder writes under (``data_dir``, or ``~/tensorflow_datasets``)."""
    root = getattr(builder, "_data_dir_root", None)
    if root is None:  # pragma: no cover - every tfds we support has it
        root = pathlib.Path(str(builder.data_dir)).parents[1]
    return pathlib.Path(str(root)).expanduser()


def _locally_available(root: pathlib.Path, builder, url: str, url_info) -> bool:
    """Whether tfds would take ``url`` from ``downloads/manual`` or its download cache."""
    downloads = root / "downloads"
    filename = getattr(url_info, "filename", None)
    if filename and (downloads / "manual" / filename).exists():
        return True
    try:
        from tensorflow_datasets.core.download import resource as resource_lib

        names = {resource_lib.get_dl_fname(url),
                 resource_lib.get_dl_fname(url, getattr(url_info, "checksum", None))}
    except Exception:  # noqa: BLE001 - an internal API moved: probe, as for a missing file
        return False
    return any((folder / name).exists() and (folder / f"{name}.INFO").exists()
               for folder in (downloads, downloads / builder.name) for name in names)


def _downloads_for_real(builder) -> bool:
    """False under ``tfds.testing.mock_data``, whose ``download_and_prepare`` is a no-op."""
    method = getattr(type(builder), "download_and_prepare", None)
    return not getattr(method, "__module__", "").startswith("tensorflow_datasets.testing")


def _probe(url: str) -> str | None:
    """``None`` when ``url``'s server (or the configured proxy) answers, else why not.

    One request, no retries, :data:`PROBE_TIMEOUT_S` to connect and to answer; any HTTP
    status counts as reachable (tfds judges the answer itself). Proxy variables are honoured.
    """
    import requests

    try:
        with requests.Session() as session:
            session.head(url, timeout=(PROBE_TIMEOUT_S, PROBE_TIMEOUT_S), allow_redirects=False)
    except requests.exceptions.RequestException as err:
        return _short_reason(err)
    return None


def _short_reason(err: BaseException) -> str:
    """A short, one-line reason for a failed request (``connection refused``, ``timed out``…)."""
    text = " ".join(str(err).split())
    for pattern, reason in ((r"Connection refused", "connection refused"),
                            (r"Name or service not known|nodename nor servname|"
                             r"Temporary failure in name resolution|getaddrinfo failed",
                             "the host name does not resolve"),
                            (r"Network is unreachable", "the network is unreachable"),
                            (r"timed out|Timeout", "no answer in time"),
                            (r"ProxyError|proxy", "the proxy does not answer"),
                            (r"SSL|certificate", "TLS failed")):
        if re.search(pattern, text):
            return reason
    return type(err).__name__


def _snapshot(root: pathlib.Path) -> tuple[pathlib.Path | None, set[pathlib.Path]]:
    """The first missing folder on the way to ``root`` and the entries two levels under it."""
    missing = None
    for folder in [root, *root.parents]:
        if folder.exists():
            break
        missing = folder
    entries: set[pathlib.Path] = set()
    if missing is None:
        for child in root.iterdir():
            entries.add(child)
            if child.is_dir() and not child.is_symlink():
                entries.update(child.iterdir())
    return missing, entries


def _undo(root: pathlib.Path, before: tuple[pathlib.Path | None, set[pathlib.Path]]) -> None:
    """Remove what a failed download created under ``root`` (nothing that was there before)."""
    missing, entries = before
    if missing is not None:
        shutil.rmtree(missing, ignore_errors=True)
        return
    if not root.is_dir():
        return
    for child in sorted(root.iterdir()):
        if child not in entries:
            shutil.rmtree(child, ignore_errors=True)
        elif child.is_dir() and not child.is_symlink():
            for grandchild in child.iterdir():
                if grandchild not in entries:
                    if grandchild.is_dir() and not grandchild.is_symlink():
                        shutil.rmtree(grandchild, ignore_errors=True)
                    else:
                        grandchild.unlink(missing_ok=True)


def _no_download_message(tfds_name: str, root: pathlib.Path, url: str, reason: str,
                         filename: str | None) -> str:
    host = urllib.parse.urlsplit(url).netloc or url
    manual = root / "downloads" / "manual"
    what = f"put {filename} (from {url}) in {manual}" if filename else (
        f"prepare it with `tfds build {tfds_name} --data_dir {root}`")
    return (f"dataset {tfds_name!r} is not prepared in data_dir {root} and cannot be "
            f"downloaded ({host}: {reason}); connect to the network, or {what} and rerun, "
            f"or point data_dir (--config.data_dir) at a folder where it is prepared")


class _Unreachable(Exception):
    """A download URL did not answer the probe (carried out of tfds's download threads)."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"{url}: {reason}")
        self.url, self.reason = url, reason


def _network_cause(err: BaseException) -> tuple[str | None, str] | None:
    """``(url, reason)`` when ``err`` or an exception it came from is a network failure."""
    import requests

    cause: BaseException | None = err
    seen = set()
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, _Unreachable):
            return cause.url, cause.reason
        if isinstance(cause, requests.exceptions.RequestException):
            return getattr(getattr(cause, "request", None), "url", None), _short_reason(cause)
        cause = cause.__cause__ or cause.__context__
    return None


def _download_or_fail_fast(builder, tfds_name: str) -> None:
    """``download_and_prepare`` that fails in seconds, in one line, when offline.

    tfds retries an unreachable URL for minutes. Here every URL of the builder that is not in
    ``downloads/manual`` or tfds's cache is probed once before tfds starts (no progress bars,
    no folders), and every URL tfds fetches is probed again just before (tfds may fetch more
    than it lists). An unreachable URL, or a network failure during the download, is a
    :class:`DatasetError` naming the data dir and the manual download, and the folders the
    attempt created under the data dir are removed.
    """
    from tensorflow_datasets.core.download import downloader

    root = _data_root(builder)
    infos = dict(getattr(builder, "url_infos", None) or {})
    # first, before tfds draws its progress bars or makes a folder: the URLs it will fetch
    for url, info in infos.items() if _downloads_for_real(builder) else ():
        if not _locally_available(root, builder, url, info):
            reason = _probe(url)
            if reason is not None:
                raise DatasetError(_no_download_message(
                    tfds_name, root, url, reason, getattr(info, "filename", None)))
    before = _snapshot(root)
    original = getattr(downloader, "_open_url", None)

    def probing_open_url(url, *args, **kwargs):
        reason = _probe(url)
        if reason is not None:
            raise _Unreachable(url, reason)
        return original(url, *args, **kwargs)

    if original is not None:  # a tfds without it: no probe, its own retries apply
        downloader._open_url = probing_open_url
    try:
        builder.download_and_prepare()
    except Exception as err:
        found = _network_cause(err)
        if found is None:
            raise
        _undo(root, before)
        url = found[0] or next(iter(infos), "")
        info = infos.get(url)
        raise DatasetError(_no_download_message(
            tfds_name, root, url, found[1], getattr(info, "filename", None))) from None
    finally:
        if original is not None:
            downloader._open_url = original


def load_tfds_split(
    tfds_name: str,
    split: str,
    *,
    name: str,
    num_classes: int,
    data_dir: str | None = None,
    download: bool = True,
) -> ArraySplit:
    """Load a catalogue dataset (e.g. ``cifar100``) split into memory.

    Args:
      tfds_name: tfds builder name.
      split: tfds split name (``train``, ``test``, slicing like ``train[:10%]`` works too).
      name: our dataset name stored on the result.
      num_classes: class count stored on the result.
      data_dir: tfds data dir (``None``: tfds default, ``~/tensorflow_datasets``).
      download: download and prepare when not prepared yet; with ``False`` a missing dataset
        is an error instead of a (possibly slow, failing) download.

    Returns:
      The split as an :class:`ArraySplit`.
    """
    tfds = import_tfds(name)
    builder = tfds.builder(tfds_name, data_dir=data_dir)
    if download:
        if not _is_prepared(builder):
            _download_or_fail_fast(builder, tfds_name)
    elif not _is_prepared(builder):
        raise DatasetError(
            f"{tfds_name} is not prepared in {builder.data_dir}; pass download=True or run "
            f"`tfds build {tfds_name} --data_dir ...` first"
        )
    _check_split(builder, split.split("[")[0])
    images, labels = _to_numpy(builder, split)
    return ArraySplit(images, labels, num_classes=num_classes, name=name, split=split)


def load_tinyimagenet_split(
    split: str,
    *,
    num_classes: int,
    data_dir: str | None = None,
    manual_dir: str | None = None,
) -> ArraySplit:
    """Prepare (once, from ``manual_dir``) and load a TinyImageNet split into memory.

    Args:
      split: ``train`` or ``validation``.
      num_classes: class count stored on the result.
      data_dir: tfds data dir where the prepared records live.
      manual_dir: folder with ``tiny-imagenet-200.zip`` or ``tiny-imagenet-200/``; only
        needed until the dataset is prepared in ``data_dir``.

    Returns:
      The split as an :class:`ArraySplit` named ``tinyimagenet``.
    """
    tfds = import_tfds("tinyimagenet")
    from hybrenet_jax.data import tinyimagenet_files as files
    from hybrenet_jax.data.tinyimagenet import TinyImagenet

    builder = TinyImagenet(data_dir=data_dir)
    if not _is_prepared(builder):
        files.index_release(files.open_release(manual_dir))  # clear error before tfds runs
        config = tfds.download.DownloadConfig(manual_dir=str(pathlib.Path(manual_dir)))
        builder.download_and_prepare(download_config=config)
    _check_split(builder, split.split("[")[0])
    images, labels = _to_numpy(builder, split)
    return ArraySplit(images, labels, num_classes=num_classes, name="tinyimagenet", split=split)
