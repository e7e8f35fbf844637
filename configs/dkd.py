"""Decoupled KD from a teacher run of ours: ``--config configs/dkd.py:DATASET/MODEL``.

    python -m launch.train --config "configs/dkd.py:cifar100/hrn-2x5x3x:cull=S1,thin=S2+S3+S4" \\
        --config.distill.teacher_workdir runs/teacher-c100 --config.distill.dkd_beta=2 \\
        --workdir runs/hrn253-dkd

Target weight 1, non-target beta (paper sweeps 0.8, 1, 2, 6; DKD default 8), T=4, DKD term
ramped in over 20 epochs (spec §7).
"""

from __future__ import annotations

from configs.base import base_config
from configs.kd import parse_arg


def get_config(arg: str | None = None):
    """DKD run of MODEL on DATASET."""
    c = base_config()
    c.dataset, c.model = parse_arg(arg, "hrn-5x5x3x:thin=S1+S2+S3+S4")
    c.distill.kind = "dkd"
    return c
