"""Training augmentation: random crop after zero padding, random horizontal flip.

The DeepReShape paper does not state its augmentation; this is the common CIFAR choice
(4-pixel zero padding + random 32x32 crop, horizontal flip with probability 1/2), used by the
ResNet/DeepReDuce/SNL training scripts the paper builds on (see docs/data.md).

Both are done on ``uint8`` images: for every example the crop offset ``(dy, dx)`` in
``[0, 2 * padding]`` selects a window of the zero-padded image and ``flip`` reverses its
columns. The window is gathered row by row (contiguous runs of ``W * C`` values); a flipped
example is first mirrored once, so no per-pixel gather is needed. Padding is applied before
normalisation, like torchvision's ``RandomCrop(padding=4)`` followed by ``Normalize``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from numpy.lib.stride_tricks import as_strided


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
    b, h, w, c = images.shape
    if images.size == 0:
        return images.copy()
    flip = np.asarray(params.flip, dtype=bool)
    hp, wp = h + 2 * padding, w + 2 * padding
    # One zero-padded buffer: the b images, then a mirrored copy of each flipped one. A flipped
    # crop is an unflipped crop of the mirrored padded image, at column offset 2*padding - dx.
    mirrored = images[flip]
    buf = np.zeros((b + len(mirrored), hp, wp, c), images.dtype)
    buf[:b, padding:padding + h, padding:padding + w] = images
    for k in range(c):  # per channel, so each strided copy runs along whole rows
        buf[b:, padding:padding + h, padding:padding + w, k] = mirrored[:, :, ::-1, k]
    source = np.where(flip, b + np.cumsum(flip) - 1, np.arange(b))
    x0 = np.where(flip, 2 * padding - params.dx, params.dx)
    # Every run of w pixels starting at any pixel of buf, as rows of one (read-only) view.
    pixels = buf.size // c
    windows = as_strided(buf, (pixels - w + 1, w * c), (buf.strides[2], buf.strides[3]),
                         writeable=False)
    start = ((source[:, None] * hp + params.dy[:, None] + np.arange(h)) * wp
             + x0[:, None])  # [B, H]: first pixel of each output row in buf
    return windows[start.reshape(-1)].reshape(b, h, w, c)
