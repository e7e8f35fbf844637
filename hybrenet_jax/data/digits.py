"""The embedded default dataset: scikit-learn's handwritten digits, upscaled to 32x32x3.

``sklearn.datasets.load_digits`` ships 1,797 real 8x8 grayscale images (values 0..16, 10
classes) inside the scikit-learn wheel, so this dataset needs no download. Preparation:

1. scale 0..16 to [0, 1] (divide by 16);
2. upscale 8x8 -> 32x32 **bilinearly** with half-pixel centres and edge clamping (the
   convention of ``jax.image.resize(..., "bilinear")`` / PIL for upsampling);
3. quantise to ``uint8`` (``round(255 * x)``) and repeat the gray channel three times.

Split: stratified and fixed. Within each class the examples are permuted with
``np.random.default_rng(SPLIT_SEED)`` and the first ``round(TEST_FRACTION * n_class)`` go to
``test``; both splits keep the original sklearn order. Sizes: 1,438 train / 359 test.
"""

from __future__ import annotations

import functools

import numpy as np

from hybrenet_jax.data.arrays import ArraySplit
from hybrenet_jax.data.errors import DatasetError
from hybrenet_jax.dataset_info import DATASETS

SPLIT_SEED = 20240101
TEST_FRACTION = 0.2
TRAIN_SIZE = DATASETS["digits"].train_images  # 1,438
TEST_SIZE = DATASETS["digits"].eval_images  # 359
SPLITS = ("train", "test")


def bilinear_matrix(src: int, dst: int) -> np.ndarray:
    """Matrix ``[dst, src]`` that resamples a 1-D signal bilinearly (half-pixel centres).

    Args:
      src: input length.
      dst: output length.

    Returns:
      ``float64`` matrix whose rows sum to 1; ``M @ x`` is the resampled signal.
    """
    centres = (np.arange(dst) + 0.5) * (src / dst) - 0.5
    centres = np.clip(centres, 0.0, src - 1)
    lo = np.floor(centres).astype(np.int64)
    hi = np.minimum(lo + 1, src - 1)
    frac = centres - lo
    m = np.zeros((dst, src))
    m[np.arange(dst), lo] += 1.0 - frac
    m[np.arange(dst), hi] += frac
    return m


@functools.lru_cache(maxsize=1)
def _prepared() -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as ``uint8 [N, 32, 32, 3]`` plus ``int32`` labels (cached)."""
    from sklearn.datasets import load_digits  # sklearn is slow to import; only when needed

    raw = load_digits()
    size = DATASETS["digits"].input_size
    small = raw.images.astype(np.float64) / 16.0  # [N, 8, 8] in [0, 1]
    m = bilinear_matrix(small.shape[1], size)
    big = np.einsum("ij,njk,lk->nil", m, small, m)  # rows then columns
    gray = np.clip(np.rint(big * 255.0), 0, 255).astype(np.uint8)
    images = np.repeat(gray[..., None], 3, axis=-1)
    return images, raw.target.astype(np.int32)


def split_indices(labels: np.ndarray, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Stratified split of ``range(len(labels))`` into sorted ``train``/``test`` index arrays.

    Args:
      labels: integer class of every example.
      test_fraction: share of each class that goes to ``test`` (rounded per class).
      seed: seed of the per-class permutation.

    Returns:
      ``{"train": idx, "test": idx}``, disjoint, together covering every index once.
    """
    rng = np.random.default_rng(seed)
    test = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        take = int(round(test_fraction * members.size))
        test.append(rng.permutation(members)[:take])
    test_idx = np.sort(np.concatenate(test))
    train_idx = np.setdiff1d(np.arange(labels.size), test_idx)
    return {"train": train_idx, "test": test_idx}


def load_digits_split(split: str) -> ArraySplit:
    """Load the ``train`` or ``test`` split of the embedded digits dataset.

    Args:
      split: ``"train"`` (1,438 images) or ``"test"`` (359 images).

    Returns:
      An :class:`ArraySplit` with ``uint8 [N, 32, 32, 3]`` images and 10 classes.
    """
    if split not in SPLITS:
        raise DatasetError(f"digits has splits {', '.join(SPLITS)}; got {split!r}")
    images, labels = _prepared()
    idx = split_indices(labels, TEST_FRACTION, SPLIT_SEED)[split]
    return ArraySplit(
        images=images[idx],
        labels=labels[idx],
        num_classes=DATASETS["digits"].classes,
        name="digits",
        split=split,
    )
