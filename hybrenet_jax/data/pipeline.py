"""Deterministic, process-sharded numpy input pipeline.

Determinism contract (what a resumed or multi-process run relies on):

* The order of epoch ``e`` is ``np.random.default_rng([seed, e, 0]).permutation(N)``.
* Training keeps ``N // global_batch_size`` full global batches (the remainder is dropped);
  global batch ``i`` is ``order[i * G:(i + 1) * G]``.
* The augmentation of global batch ``i`` is drawn for all ``G`` rows from
  ``np.random.default_rng([seed, e, 1, i])``; each process then keeps its rows.
* Process ``p`` of ``P`` gets the contiguous rows ``[p * G/P, (p + 1) * G/P)`` of every
  global batch, so the processes' slices concatenate to the one-process batch.

So a batch depends only on ``(data, G, seed, epoch, batch index, augmentation settings)``:
never on the process count, on earlier batches, or on wall-clock state.
Evaluation visits every example once in stored order; the last global batch is padded (with
copies of example 0) and a ``mask`` marks real rows, so every process runs
``ceil(N / G)`` batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from hybrenet_jax.data.arrays import ArraySplit
from hybrenet_jax.data.augment import crop_and_flip, sample_params
from hybrenet_jax.data.errors import DatasetError
from hybrenet_jax.data.normalization import Normalization

Batch = dict[str, np.ndarray]

_ORDER_STREAM = 0
_AUGMENT_STREAM = 1


def _local_rows(global_batch_size: int, process_index: int, process_count: int) -> slice:
    """Rows of a global batch that belong to ``process_index``."""
    if process_count < 1 or not 0 <= process_index < process_count:
        raise DatasetError(f"process_index {process_index} not in [0, {process_count})")
    if global_batch_size < 1 or global_batch_size % process_count:
        raise DatasetError(
            f"global batch size {global_batch_size} must be a positive multiple of the "
            f"process count {process_count}"
        )
    per = global_batch_size // process_count
    return slice(process_index * per, (process_index + 1) * per)


def _resolve_normalization(data: ArraySplit, normalization: Normalization | None) -> Normalization:
    if normalization is not None:
        return normalization
    from hybrenet_jax.data.registry import LOADABLE, normalization_for  # avoid import cycle

    if data.name.lower() not in LOADABLE:
        raise DatasetError(
            f"no normalisation constants for dataset {data.name!r}; pass normalization=..."
        )
    return normalization_for(data.name)


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
    """Number of training batches per epoch (remainder dropped)."""
    return num_examples // global_batch_size


def num_eval_batches(num_examples: int, global_batch_size: int) -> int:
    """Number of evaluation batches (last one padded)."""
    return -(-num_examples // global_batch_size)


def epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of example indices used in training epoch ``epoch``."""
    if seed < 0 or epoch < 0:
        raise DatasetError(f"seed and epoch must be >= 0, got seed={seed} epoch={epoch}")
    return np.random.default_rng([seed, epoch, _ORDER_STREAM]).permutation(num_examples)


def train_batches(
    data: ArraySplit,
    global_batch_size: int,
    *,
    seed: int,
    epoch: int,
    process_index: int = 0,
    process_count: int = 1,
    normalization: Normalization | None = None,
    crop_padding: int = 4,
    flip: bool = True,
    augment: bool = True,
    start_batch: int = 0,
) -> Iterator[Batch]:
    """Yield this process's share of every training batch of one epoch.

    Args:
      data: the training split.
      global_batch_size: rows of a global batch (over all processes).
      seed: run seed (>= 0); with ``epoch`` it fixes order and augmentation.
      epoch: epoch number (>= 0).
      process_index: this process (``jax.process_index()``).
      process_count: number of processes (``jax.process_count()``).
      normalization: per-channel constants; ``None`` uses the dataset's (by ``data.name``).
      crop_padding: zero padding for the random crop (4 in the paper; 0 disables cropping).
      flip: whether to apply random horizontal flips.
      augment: ``False`` disables crop and flip (same order, no augmentation).
      start_batch: first global batch to produce (to resume inside an epoch).

    Yields:
      ``{"image": float32 [G/P, H, W, C], "label": int32 [G/P]}``,
      ``steps_per_epoch(len(data), global_batch_size) - start_batch`` times.
    """
    rows = _local_rows(global_batch_size, process_index, process_count)
    norm = _resolve_normalization(data, normalization)
    steps = steps_per_epoch(len(data), global_batch_size)
    if steps == 0:
        raise DatasetError(
            f"{data.name}/{data.split}: global batch size {global_batch_size} exceeds the "
            f"{len(data)} examples"
        )
    if crop_padding < 0:
        raise DatasetError(f"crop_padding must be >= 0, got {crop_padding}")
    order = epoch_order(len(data), seed, epoch)
    for i in range(start_batch, steps):
        idx = order[i * global_batch_size:(i + 1) * global_batch_size][rows]
        images = data.images[idx]
        if augment and (crop_padding or flip):
            rng = np.random.default_rng([seed, epoch, _AUGMENT_STREAM, i])
            params = sample_params(rng, global_batch_size, crop_padding, flip)[rows]
            images = crop_and_flip(images, params, crop_padding)
        yield {"image": norm.apply(images), "label": data.labels[idx]}


def eval_batches(
    data: ArraySplit,
    global_batch_size: int,
    *,
    process_index: int = 0,
    process_count: int = 1,
    normalization: Normalization | None = None,
) -> Iterator[Batch]:
    """Yield this process's share of every evaluation batch, padding the last one.

    Args:
      data: the evaluation split.
      global_batch_size: rows of a global batch (over all processes).
      process_index: this process.
      process_count: number of processes.
      normalization: per-channel constants; ``None`` uses the dataset's.

    Yields:
      ``{"image": float32, "label": int32, "mask": float32}`` with ``G/P`` rows each,
      ``num_eval_batches(len(data), global_batch_size)`` times; ``mask`` is 1 for real
      examples and 0 for padding, and over all processes every example appears exactly once
      with mask 1.
    """
    rows = _local_rows(global_batch_size, process_index, process_count)
    norm = _resolve_normalization(data, normalization)
    n = len(data)
    for i in range(num_eval_batches(n, global_batch_size)):
        idx = np.arange(i * global_batch_size, (i + 1) * global_batch_size)[rows]
        real = idx < n
        idx = np.where(real, idx, 0)
        yield {
            "image": norm.apply(data.images[idx]),
            "label": data.labels[idx],
            "mask": real.astype(np.float32),
        }
