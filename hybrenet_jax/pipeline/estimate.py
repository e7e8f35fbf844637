"""Rough training compute of a plan, for ``--dry-run``.

Training one image costs about 3x the forward FLOPs (forward + backward, which is about twice
the forward); distillation adds one teacher forward per image. Images seen = steps x batch
size, with steps from ``total_steps`` or ``num_epochs`` x steps per epoch (as the training
loop resolves them). FLOPs use the paper's convention (:mod:`hybrenet_jax.counts`).
"""

from __future__ import annotations

import ml_collections

from hybrenet_jax.dataset_info import DATASETS
from hybrenet_jax.pipeline.errors import PipelineError

#: Training images per dataset (spec §8; digits: the embedded split).
TRAIN_IMAGES: dict[str, int] = {name: info.train_images for name, info in DATASETS.items()}
#: Forward + backward of one training image, in forward-pass units.
TRAIN_FACTOR = 3


def images_seen(config: ml_collections.ConfigDict, dataset: str) -> int:
    """Training images one run of ``config`` processes (steps x batch size)."""
    if dataset not in TRAIN_IMAGES:
        raise PipelineError(f"no training-set size known for dataset {dataset!r}")
    batch = int(config.batch_size)
    steps_per_epoch = TRAIN_IMAGES[dataset] // batch
    steps = int(config.total_steps) if config.total_steps > 0 \
        else int(config.num_epochs) * steps_per_epoch
    return steps * batch


def training_flops(flops: int, images: int, teacher_flops: int = 0) -> float:
    """``3 x FLOPs x images`` plus one teacher forward per image when distilling."""
    return float(TRAIN_FACTOR * flops * images + teacher_flops * images)


def add_epochs(config: ml_collections.ConfigDict, extra: float) -> ml_collections.ConfigDict:
    """``config`` (in place) trained ``extra`` epochs longer than its own schedule.

    Whole epochs on an epoch-based config raise ``num_epochs``; otherwise ``total_steps``
    grows by ``round(extra x steps per epoch)`` (steps per epoch = training images // batch).
    """
    if extra <= 0:
        return config
    if int(config.total_steps) <= 0 and float(extra).is_integer():
        config.num_epochs = int(config.num_epochs) + int(extra)
        return config
    if config.dataset not in TRAIN_IMAGES:
        raise PipelineError(f"no training-set size known for dataset {config.dataset!r}")
    per_epoch = TRAIN_IMAGES[config.dataset] // int(config.batch_size)
    base = int(config.total_steps) if int(config.total_steps) > 0 \
        else int(config.num_epochs) * per_epoch
    config.total_steps = base + int(round(extra * per_epoch))
    return config


def planned_epochs(config: ml_collections.ConfigDict) -> float:
    """Epochs a run of ``config`` trains (``total_steps`` converted with the dataset's size)."""
    if int(config.total_steps) <= 0:
        return float(config.num_epochs)
    per_epoch = TRAIN_IMAGES.get(config.dataset, 0) // int(config.batch_size)
    return round(int(config.total_steps) / per_epoch, 4) if per_epoch else 0.0
