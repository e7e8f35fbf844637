"""Loading tensorflow-datasets splits fully into memory as numpy arrays.

TensorFlow is only used here, for reading and decoding, and is imported on first use so that
``import hybrenet_jax.data`` and the digits path stay TensorFlow-free. GPUs are hidden from
TensorFlow before anything else so that it never reserves accelerator memory JAX needs.
"""

from __future__ import annotations

import functools
import pathlib

import numpy as np

from hybrenet_jax.data.arrays import ArraySplit
from hybrenet_jax.data.errors import DatasetError, TfdsUnavailableError

_READ_BATCH = 2048


#: How to get what the tfds datasets need (the ``tfds`` extra pins the same packages).
INSTALL_HINT = ("`pip install 'hybrenet_jax[tfds]'` "
                "or `pip install tensorflow-cpu tensorflow-datasets`")


@functools.cache
def _import_tfds():
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
        builder.download_and_prepare()
    elif not builder.is_prepared():
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
    if not builder.is_prepared():
        files.index_release(files.open_release(manual_dir))  # clear error before tfds runs
        config = tfds.download.DownloadConfig(manual_dir=str(pathlib.Path(manual_dir)))
        builder.download_and_prepare(download_config=config)
    _check_split(builder, split.split("[")[0])
    images, labels = _to_numpy(builder, split)
    return ArraySplit(images, labels, num_classes=num_classes, name="tinyimagenet", split=split)
