"""TinyImageNet (64x64, 200 classes), paper recipe: ``--config configs/tinyimagenet_hrn.py:MODEL``.

    python -m launch.train --config configs/tinyimagenet_hrn.py:hrn-5x5x3x \\
        --config.manual_dir /data/tiny-imagenet-200 --workdir runs/tiny-hrn553

Reads the standard ``tiny-imagenet-200`` folder or zip from ``manual_dir`` through our tfds
builder. Paper top-1 (KD): HRN-5x5x3x thinned 65.76%.
"""

from __future__ import annotations

from hybrenet_jax.config import base_config


def get_config(arg: str | None = None):
    """The model string is the config argument (default ``hrn-5x5x3x``)."""
    c = base_config()
    c.model = arg or "hrn-5x5x3x"
    c.dataset = "tinyimagenet"
    c.log_every_steps = 100
    return c
