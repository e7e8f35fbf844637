"""CIFAR-100, paper recipe (spec §7): ``--config configs/cifar100_hrn.py:MODEL``.

    python -m launch.train --config configs/cifar100_hrn.py:hrn-5x5x3x --workdir runs/hrn553

200 epochs, batch 128, SGD momentum 0.9, lr 0.1 cosine, wd 4e-4, crop(4)+flip. Needs
CIFAR-100 prepared by tensorflow-datasets (``--config.data_dir``); one GPU: a few hours for
HRN-5x5x3x. Paper top-1: HRN-5x5x3x 78.40%, ResNet18 79.01% (without KD).
"""

from __future__ import annotations

from hybrenet_jax.config import base_config


def get_config(arg: str | None = None):
    """The model string is the config argument (default ``hrn-5x5x3x``)."""
    c = base_config()
    c.model = arg or "hrn-5x5x3x"
    c.dataset = "cifar100"
    c.log_every_steps = 100
    return c
