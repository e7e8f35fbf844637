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
never on the process count, on earlier batches, or on wall-clock state. That is what lets
``train_batches(..., workers=k)`` prepare ``k`` batches at once in threads and still yield
exactly the batches, in the same order, that ``workers=1`` makes one after another.
Evaluation visits every example once in stored order; the last global batch is padded (with
copies of example 0) and a ``mask`` marks real rows, so every process runs
``ceil(N / G)`` batches.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from hybrenet_jax.data.arrays import ArraySplit
from hybrenet_jax.data.augment import crop_and_flip, sample_params
from hybrenet_jax.data.errors import DatasetError
from hybrenet_jax.data.normalization import Normalization
from hybrenet_jax.data.prefetch import default_workers, ordered_map

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
    start_batch: int = 0,
    **options: Any,
) -> Iterator[Batch]:
    """Yield this process's share of every training batch of one epoch.

    Args:
      data: the training split.
      global_batch_size: rows of a global batch (over all processes).
      seed: run seed (>= 0); with ``epoch`` it fixes order and augmentation.
      epoch: epoch number (>= 0).
      start_batch: first global batch to produce (to resume inside an epoch).
      **options: the keyword arguments of :func:`train_stream` (processes, normalisation,
        augmentation, workers).

    Yields:
      ``{"image": float32 [G/P, H, W, C], "label": int32 [G/P]}``,
      ``steps_per_epoch(len(data), global_batch_size) - start_batch`` times, in order.
      An error while making a batch is raised here; closing the generator stops the threads.
    """
    if epoch < 0 or start_batch < 0:
        raise DatasetError(f"epoch and start_batch must be >= 0, got epoch={epoch} "
                           f"start_batch={start_batch}")
    spe = steps_per_epoch(len(data), global_batch_size)
    yield from train_stream(
        data, global_batch_size, seed=seed, start_step=epoch * spe + min(start_batch, spe),
        stop_step=(epoch + 1) * spe, **options)


def train_stream(
    data: ArraySplit,
    global_batch_size: int,
    *,
    seed: int,
    start_step: int = 0,
    stop_step: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    normalization: Normalization | None = None,
    crop_padding: int = 4,
    flip: bool = True,
    augment: bool = True,
    workers: int | None = None,
    ahead: int | None = None,
) -> Iterator[Batch]:
    """Yield the training batches of steps ``start_step .. stop_step - 1``, across epochs.

    Step ``s`` is batch ``s % S`` of epoch ``s // S`` (``S = steps_per_epoch``), the batch
    :func:`train_batches` makes for that epoch; one stream keeps the workers busy over epoch
    boundaries. ``stop_step=None`` never stops.

    Args:
      process_index: this process (``jax.process_index()``).
      process_count: number of processes (``jax.process_count()``).
      normalization: per-channel constants; ``None`` uses the dataset's (by ``data.name``).
      crop_padding: zero padding for the random crop (4, the common CIFAR choice; 0 disables
        cropping).
      flip: whether to apply random horizontal flips.
      augment: ``False`` disables crop and flip (same order, no augmentation).
      workers: threads preparing batches concurrently (``None`` or 0: ``default_workers()``,
        i.e. ``min(4, cores)``; 1: one after another in the caller's thread, no threads).
        The batches do not depend on it.
      ahead: with ``workers > 1``, most batches in preparation or ready ahead of the consumer
        (default ``2 * workers``).
    """
    rows = _local_rows(global_batch_size, process_index, process_count)
    norm = _resolve_normalization(data, normalization)
    spe = steps_per_epoch(len(data), global_batch_size)
    if spe == 0:
        raise DatasetError(
            f"{data.name}/{data.split}: global batch size {global_batch_size} exceeds the "
            f"{len(data)} examples"
        )
    if crop_padding < 0:
        raise DatasetError(f"crop_padding must be >= 0, got {crop_padding}")
    if start_step < 0:
        raise DatasetError(f"start_step must be >= 0, got {start_step}")
    if workers is None or workers == 0:
        workers = default_workers()
    if workers < 0:
        raise DatasetError(f"workers must be >= 0 (0: automatic), got {workers}")
    settings = dict(data=data, global_batch_size=global_batch_size, rows=rows, norm=norm,
                    seed=seed, crop_padding=crop_padding, flip=flip, augment=augment)

    def jobs() -> Iterator[tuple[Callable[[int], Batch], int]]:
        """``(make, i)`` per step; the epoch's order is drawn once, in the consumer's thread."""
        step = start_step
        while stop_step is None or step < stop_step:
            epoch, first = divmod(step, spe)
            make = _epoch_maker(epoch=epoch, **settings)
            last = spe if stop_step is None else min(spe, first + stop_step - step)
            for i in range(first, last):
                yield make, i
            step += last - first

    def run(job: tuple[Callable[[int], Batch], int]) -> Batch:
        make, i = job
        return make(i)

    if workers == 1:
        yield from map(run, jobs())
    else:
        yield from ordered_map(run, jobs(), workers, ahead)


def _epoch_maker(
    *,
    data: ArraySplit,
    global_batch_size: int,
    rows: slice,
    norm: Normalization,
    seed: int,
    epoch: int,
    crop_padding: int,
    flip: bool,
    augment: bool,
) -> Callable[[int], Batch]:
    """``i -> this process's rows of global batch i of epoch``: a pure function of ``i``."""
    order = epoch_order(len(data), seed, epoch)
    order.flags.writeable = False  # shared by the worker threads

    def make(i: int) -> Batch:
        idx = order[i * global_batch_size:(i + 1) * global_batch_size][rows]
        images = data.images[idx]
        if augment and (crop_padding or flip):
            rng = np.random.default_rng([seed, epoch, _AUGMENT_STREAM, i])
            params = sample_params(rng, global_batch_size, crop_padding, flip)[rows]
            images = crop_and_flip(images, params, crop_padding)
        return {"image": norm.apply(images), "label": data.labels[idx]}

    return make


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
