"""Rough training compute of a plan, for ``--dry-run``.

Training one image costs about 3x the forward FLOPs (forward + backward, which is about twice
the forward); distillation adds one teacher forward per image. Images seen = steps x batch
size, with steps from ``total_steps`` or ``num_epochs`` x steps per epoch (as the training
loop resolves them). FLOPs use the paper's convention (:mod:`hybrenet_jax.counts`).
"""

from __future__ import annotations

import ml_collections

from hybrenet_jax.data.digits import TRAIN_SIZE as DIGITS_TRAIN_SIZE
from hybrenet_jax.pipeline.errors import PipelineError

#: Training images per dataset (spec §8; digits: the embedded split).
TRAIN_IMAGES: dict[str, int] = {"cifar100": 50_000, "cifar10": 50_000,
                                "tinyimagenet": 100_000, "digits": DIGITS_TRAIN_SIZE}
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
