"""In-memory dataset split: the unit every loader returns and the input pipeline consumes."""

from __future__ import annotations

import dataclasses

import numpy as np

from hybrenet_jax.data.errors import DatasetError


@dataclasses.dataclass(frozen=True, eq=False)
class ArraySplit:
    """One split of a dataset held as numpy arrays.

    Attributes:
      images: ``uint8`` array ``[N, H, W, C]`` (NHWC, values 0..255), read-only.
      labels: ``int32`` array ``[N]`` with values in ``[0, num_classes)``, read-only.
      num_classes: number of classes of the dataset (not of this split).
      name: dataset name (a key of ``hybrenet_jax.dataset_info.DATASETS`` for real data).
      split: split name, e.g. ``"train"`` or ``"test"``.

    Construction validates dtypes, shapes and label range, and marks both arrays read-only.
    """

    images: np.ndarray
    labels: np.ndarray
    num_classes: int
    name: str
    split: str = ""

    def __post_init__(self) -> None:
        images, labels = self.images, self.labels
        if images.dtype != np.uint8 or images.ndim != 4:
            raise DatasetError(
                f"{self.name}: images must be uint8 NHWC, got {images.dtype} {images.shape}"
            )
        if labels.dtype != np.int32 or labels.shape != (images.shape[0],):
            raise DatasetError(
                f"{self.name}: labels must be int32 [{images.shape[0]}], "
                f"got {labels.dtype} {labels.shape}"
            )
        if labels.size and (labels.min() < 0 or labels.max() >= self.num_classes):
            raise DatasetError(
                f"{self.name}: labels must lie in [0, {self.num_classes}), "
                f"got [{labels.min()}, {labels.max()}]"
            )
        # Loaders may cache splits; read-only arrays stop one consumer corrupting another's.
        images.flags.writeable = False
        labels.flags.writeable = False

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of one image."""
        return tuple(self.images.shape[1:])  # type: ignore[return-value]
