"""Default run: a small HybReNet on the embedded digits dataset, minutes on a laptop CPU.

Command (from the repository root):

    python -m launch.train --config configs/default.py --workdir runs/default

Hardware / time: 2 CPU cores, about 2 minutes; expected test accuracy >= 0.95 (see README).
Needs no download: the digits ship with scikit-learn.
"""

from __future__ import annotations

from hybrenet_jax.config import base_config


def get_config(arg: str | None = None):
    """Digits + ``hrn-2x2x2x:m=8`` (or the model string given as ``default.py:MODEL``)."""
    c = base_config()
    c.model = arg or "hrn-2x2x2x:m=8"
    c.dataset = "digits"
    c.batch_size = 64
    c.num_epochs = 12
    c.learning_rate = 0.05
    c.warmup_epochs = 1.0
    c.weight_decay = 5e-4
    c.crop_padding = 2
    c.flip = False  # digits are not mirror-symmetric
    c.log_every_steps = 10
    return c
