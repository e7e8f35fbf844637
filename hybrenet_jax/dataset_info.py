"""Input shape and class count of the datasets a network can be described for."""

from __future__ import annotations

import dataclasses

from hybrenet_jax.errors import DescriptionError


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a dataset that the network description needs."""

    name: str
    input_size: int
    classes: int


DATASETS: dict[str, DatasetInfo] = {
    d.name: d
    for d in (
        DatasetInfo("cifar100", 32, 100),
        DatasetInfo("cifar10", 32, 10),
        DatasetInfo("tinyimagenet", 64, 200),
        DatasetInfo("digits", 32, 10),  # embedded scikit-learn digits, upscaled to 32x32
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
