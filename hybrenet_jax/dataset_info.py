"""The datasets hybrenet_jax knows: one record each, the single place for their facts.

The network description reads the input size and class count; the data registry the splits
and where the data comes from; ``--dry-run`` estimates the training-set size. Normalisation
constants are data (``hybrenet_jax.data.normalization``), keyed by the same names.
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from hybrenet_jax.errors import DescriptionError

Source = Literal["embedded", "tfds", "manual"]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static facts about one dataset."""

    name: str
    input_size: int
    classes: int
    train_images: int
    eval_split: str  # the split evaluation uses ("test" or "validation")
    eval_images: int
    source: Source  # embedded in the package, downloaded by tfds, or a manual download


DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        DatasetInfo("cifar100", 32, 100, 50_000, "test", 10_000, "tfds"),
        DatasetInfo("cifar10", 32, 10, 50_000, "test", 10_000, "tfds"),
        DatasetInfo("tinyimagenet", 64, 200, 100_000, "validation", 10_000, "manual"),
        # embedded scikit-learn digits, upscaled to 32x32 (hybrenet_jax.data.digits)
        DatasetInfo("digits", 32, 10, 1_438, "test", 359, "embedded"),
    )
}


def dataset_info(name: str) -> DatasetInfo:
    """Look up a dataset by name, with an error listing the accepted names."""
    try:
        return DATASETS[name.lower()]
    except KeyError:
        raise DescriptionError(
            f"unknown dataset {name!r}; accepted: {', '.join(DATASETS)}"
        ) from None
