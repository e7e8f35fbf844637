"""Per-channel mean/std normalisation and the constants of each dataset.

Images are scaled to [0, 1] (``uint8 / 255``) and then normalised per channel:
``(x / 255 - mean) / std``. The constants are those of the training split in the [0, 1]
scale (std over all pixels of a channel):

* CIFAR-100: mean (0.5071, 0.4865, 0.4409), std (0.2673, 0.2564, 0.2762).
* CIFAR-10: mean (0.4914, 0.4822, 0.4465), std (0.2470, 0.2435, 0.2616).
* TinyImageNet: mean (0.4802, 0.4481, 0.3975), std (0.2302, 0.2265, 0.2262).
* digits: computed from its train split by :func:`channel_stats` (see ``registry``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from hybrenet_jax.data.errors import DatasetError


@dataclasses.dataclass(frozen=True)
class Normalization:
    """Per-channel mean and standard deviation in the [0, 1] pixel scale."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.mean) != len(self.std) or min(self.std) <= 0:
            raise DatasetError(f"bad normalisation constants mean={self.mean} std={self.std}")

    def apply(self, images: np.ndarray) -> np.ndarray:
        """Turn ``uint8`` NHWC images into normalised ``float32`` NHWC images.

        Args:
          images: ``uint8`` array whose last axis has ``len(mean)`` channels.

        Returns:
          ``float32`` array ``(images / 255 - mean) / std`` of the same shape.
        """
        std = np.asarray(self.std, np.float32)
        scale = (1.0 / (255.0 * std)).astype(np.float32)
        shift = (np.asarray(self.mean, np.float32) / std).astype(np.float32)
        out = images.astype(np.float32, order="C")
        if out.ndim < 2 or out.shape[-1] != scale.size or out.size == 0:
            out *= scale
            out -= shift
            return out
        # Same two float32 operations per element as broadcasting over the channel axis, but
        # with the constants tiled along a whole image, so numpy's inner loop is long.
        rows = out.reshape(out.shape[0], -1)
        reps = rows.shape[1] // scale.size
        rows *= np.tile(scale, reps)
        rows -= np.tile(shift, reps)
        return out


CIFAR100 = Normalization(mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762))
CIFAR10 = Normalization(mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))
TINYIMAGENET = Normalization(mean=(0.4802, 0.4481, 0.3975), std=(0.2302, 0.2265, 0.2262))


def channel_stats(images: np.ndarray) -> Normalization:
    """Per-channel mean and std (over all pixels) of ``uint8`` NHWC images, in [0, 1] scale.

    Args:
      images: ``uint8`` array ``[N, H, W, C]``.

    Returns:
      The :class:`Normalization` that maps these images to zero mean and unit std.
    """
    x = images.reshape(-1, images.shape[-1]).astype(np.float64) / 255.0
    return Normalization(mean=tuple(x.mean(axis=0).tolist()), std=tuple(x.std(axis=0).tolist()))
