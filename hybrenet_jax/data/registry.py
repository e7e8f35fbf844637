"""``load_dataset``: one entry point from a dataset name and split to an in-memory split.

=================  =========================================  ==================================
name               source                                     splits (eval split marked *)
=================  =========================================  ==================================
``digits``         scikit-learn, embedded (no download)       train 1,438 / test* 359
``cifar10``        tfds ``cifar10``                           train 50,000 / test* 10,000
``cifar100``       tfds ``cifar100``                          train 50,000 / test* 10,000
``tinyimagenet``   our tfds builder, from a manual download   train 100,000 / validation* 10,000
=================  =========================================  ==================================

``split="eval"`` names the evaluation split of any dataset. Sizes, class counts, eval split
and source come from the one record per dataset in ``hybrenet_jax.dataset_info.DATASETS``.
"""

from __future__ import annotations

import functools

from hybrenet_jax.data import normalization as norms
from hybrenet_jax.data.arrays import ArraySplit
from hybrenet_jax.data.errors import DatasetError
from hybrenet_jax.dataset_info import DATASETS

#: Every dataset with a loader (all of ``DATASETS``: one record per dataset).
LOADABLE = tuple(DATASETS)
EVAL_SPLIT = {name: info.eval_split for name, info in DATASETS.items()}


def _canonical(name: str) -> str:
    key = name.lower()
    if key not in LOADABLE:
        raise DatasetError(f"unknown dataset {name!r}; accepted: {', '.join(LOADABLE)}")
    return key


def eval_split(name: str) -> str:
    """The split that evaluation uses for dataset ``name`` (``test`` or ``validation``)."""
    return EVAL_SPLIT[_canonical(name)]


@functools.cache
def _digits_normalization() -> norms.Normalization:
    from hybrenet_jax.data.digits import load_digits_split

    return norms.channel_stats(load_digits_split("train").images)


def normalization_for(name: str) -> norms.Normalization:
    """Per-channel normalisation constants of dataset ``name`` (digits: from its train split)."""
    key = _canonical(name)
    if key == "digits":
        return _digits_normalization()
    return {"cifar100": norms.CIFAR100, "cifar10": norms.CIFAR10,
            "tinyimagenet": norms.TINYIMAGENET}[key]


def load_dataset(
    name: str,
    split: str,
    data_dir: str | None = None,
    manual_dir: str | None = None,
    *,
    download: bool = True,
) -> ArraySplit:
    """Load one split of a dataset fully into memory.

    Args:
      name: ``digits``, ``cifar100``, ``cifar10`` or ``tinyimagenet`` (case-insensitive).
      split: ``train``, the dataset's eval split (``test``; ``validation`` for tinyimagenet),
        or ``eval`` for whichever that is. tfds slicing (``train[:10%]``) works for tfds data.
      data_dir: tfds data dir (ignored for digits).
      manual_dir: folder with the TinyImageNet download (only until it is prepared).
      download: for cifar, download when not prepared; ``False`` makes that an error
        (tinyimagenet is always prepared from ``manual_dir``, never downloaded).

    Returns:
      :class:`ArraySplit` with ``uint8`` NHWC images and ``int32`` labels; image size and
      class count as in ``DATASETS[name]``.
    """
    key = _canonical(name)
    info = DATASETS[key]
    if split == "eval":
        split = EVAL_SPLIT[key]
    if key == "digits":
        from hybrenet_jax.data.digits import load_digits_split

        data = load_digits_split(split)
    elif key == "tinyimagenet":
        from hybrenet_jax.data.tfds_loader import load_tinyimagenet_split

        data = load_tinyimagenet_split(
            split, num_classes=info.classes, data_dir=data_dir, manual_dir=manual_dir
        )
    else:
        from hybrenet_jax.data.tfds_loader import load_tfds_split

        data = load_tfds_split(
            key, split, name=key, num_classes=info.classes, data_dir=data_dir, download=download
        )
    expected = (info.input_size, info.input_size, 3)
    if data.image_shape != expected:
        raise DatasetError(f"{key}/{split}: images are {data.image_shape}, expected {expected}")
    return data
