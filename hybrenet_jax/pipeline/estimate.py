"""Rough training compute of a plan, for ``--dry-run``.

Training one image costs about 3x the forward FLOPs (forward + backward, which is about twice
the forward); distillation adds one teacher forward per image. Images seen = steps x batch
size, with steps from ``total_steps`` or ``num_epochs`` x steps per epoch (as the training
loop resolves them). FLOPs use the paper's convention (:mod:`hybrenet_jax.counts`).
"""

from __future__ import annotations

from hybrenet_jax.dataset_info import DATASETS
from hybrenet_jax.pipeline.errors import PipelineError
from hybrenet_jax.schema import TrainConfig, extra_epochs, schedule_steps

#: Training images per dataset (spec §8; digits: the embedded split).
TRAIN_IMAGES: dict[str, int] = {name: info.train_images for name, info in DATASETS.items()}
#: Forward + backward of one training image, in forward-pass units.
TRAIN_FACTOR = 3


def _steps_per_epoch(config: TrainConfig, dataset: str) -> int:
    if dataset not in TRAIN_IMAGES:
        raise PipelineError(f"no training-set size known for dataset {dataset!r}")
    return TRAIN_IMAGES[dataset] // int(config.batch_size)


def images_seen(config: TrainConfig, dataset: str) -> int:
    """Training images one run of ``config`` processes (steps x batch size; a DKD warm-up
    trained on top included, as the training loop resolves it)."""
    return schedule_steps(config, _steps_per_epoch(config, dataset)) * int(config.batch_size)


def training_flops(flops: int, images: int, teacher_flops: int = 0) -> float:
    """``3 x FLOPs x images`` plus one teacher forward per image when distilling."""
    return float(TRAIN_FACTOR * flops * images + teacher_flops * images)


def planned_epochs(config: TrainConfig) -> float:
    """Epochs a run of ``config`` trains (``total_steps`` converted with the dataset's size;
    a DKD warm-up trained on top included)."""
    per_epoch = TRAIN_IMAGES.get(config.dataset, 0) // int(config.batch_size)
    if int(config.total_steps) <= 0:
        return float(config.num_epochs) + extra_epochs(config)
    return round(schedule_steps(config, per_epoch) / per_epoch, 4) if per_epoch else 0.0
