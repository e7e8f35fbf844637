"""The KD teacher of every paper run: ResNet18 (m=64) with the paper recipe.

    python -m launch.train --config configs/teacher_resnet18.py:cifar100 --workdir runs/teacher-c100

Config argument: dataset (``cifar100`` default, ``tinyimagenet``, ``digits``). Paper top-1 on
CIFAR-100: 79.01%.
"""

from __future__ import annotations

from hybrenet_jax.config import base_config


def get_config(arg: str | None = None):
    """ResNet18 teacher for dataset ``arg``."""
    c = base_config()
    c.model = "resnet18"
    c.dataset = arg or "cifar100"
    return c
