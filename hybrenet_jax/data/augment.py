"""Training augmentation (paper §7): random crop after zero padding, random horizontal flip.

Both are done in one vectorised gather on ``uint8`` images: for every example the crop offset
``(dy, dx)`` in ``[0, 2 * padding]`` selects a window of the zero-padded image and ``flip``
reverses its columns. Padding is applied before normalisation, like torchvision's
``RandomCrop(padding=4)`` followed by ``Normalize``.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class AugmentParams:
    """Random choices for a batch: crop offsets ``dy``, ``dx`` and ``flip`` flags, one per row."""

    dy: np.ndarray
    dx: np.ndarray
    flip: np.ndarray

    def __getitem__(self, rows: slice) -> AugmentParams:
        return AugmentParams(self.dy[rows], self.dx[rows], self.flip[rows])


def sample_params(
    rng: np.random.Generator, batch: int, padding: int, flip: bool
) -> AugmentParams:
    """Draw crop offsets in ``[0, 2 * padding]`` and flips with probability 1/2.

    Args:
      rng: the generator (derived from seed, epoch and batch index by the pipeline).
      batch: number of rows.
      padding: pixels of zero padding on each side (0: no crop).
      flip: whether horizontal flips are drawn at all.

    Returns:
      The :class:`AugmentParams` of ``batch`` rows (always drawn in the same order, so a
      disabled option does not shift the random stream of the others).
    """
    dy = rng.integers(0, 2 * padding + 1, size=batch)
    dx = rng.integers(0, 2 * padding + 1, size=batch)
    flips = rng.random(batch) < 0.5
    return AugmentParams(dy=dy, dx=dx, flip=flips & flip)


def crop_and_flip(images: np.ndarray, params: AugmentParams, padding: int) -> np.ndarray:
    """Crop every image from its zero-padded version and optionally mirror it.

    Args:
      images: ``[B, H, W, C]`` array (any dtype).
      params: offsets ``dy``/``dx`` in ``[0, 2 * padding]`` and ``flip`` flags for each row.
      padding: zero padding on each side of height and width.

    Returns:
      ``[B, H, W, C]`` array of the same dtype: ``out[b] = pad(images[b])[dy:dy+H, dx:dx+W]``,
      column-reversed where ``flip[b]``.
    """
    b, h, w, _ = images.shape
    if padding:
        images = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    rows = params.dy[:, None] + np.arange(h)  # [B, H]
    cols = np.where(
        params.flip[:, None], w - 1 - np.arange(w), np.arange(w)
    ) + params.dx[:, None]  # [B, W]
    return images[np.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]
