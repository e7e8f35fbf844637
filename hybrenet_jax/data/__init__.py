"""Datasets and the input pipeline for training (spec §7-8).

Typical use in a training loop::

    from hybrenet_jax import data
    train = data.load_dataset("cifar100", "train")
    test = data.load_dataset("cifar100", "eval")
    for epoch in range(start_epoch, epochs):
        batches = data.train_batches(train, 128, seed=seed, epoch=epoch,
                                     process_index=jax.process_index(),
                                     process_count=jax.process_count())
        for batch in data.prefetch(data.shard_batch(b, mesh) for b in batches):
            ...

Nothing here imports TensorFlow; it is imported only when a tfds dataset is loaded.
See ``docs/data.md`` for split sizes, constants and the determinism contract.
"""

from hybrenet_jax.data.arrays import ArraySplit
from hybrenet_jax.data.augment import AugmentParams, crop_and_flip, sample_params
from hybrenet_jax.data.errors import DatasetError
from hybrenet_jax.data.normalization import Normalization, channel_stats
from hybrenet_jax.data.pipeline import (
    Batch,
    epoch_order,
    eval_batches,
    num_eval_batches,
    steps_per_epoch,
    train_batches,
)
from hybrenet_jax.data.prefetch import prefetch
from hybrenet_jax.data.registry import LOADABLE, eval_split, load_dataset, normalization_for
from hybrenet_jax.data.sharding import batch_sharding, shard_batch

__all__ = [
    "ArraySplit",
    "AugmentParams",
    "Batch",
    "DatasetError",
    "LOADABLE",
    "Normalization",
    "batch_sharding",
    "channel_stats",
    "crop_and_flip",
    "epoch_order",
    "eval_batches",
    "eval_split",
    "load_dataset",
    "normalization_for",
    "num_eval_batches",
    "prefetch",
    "sample_params",
    "shard_batch",
    "steps_per_epoch",
    "train_batches",
]
