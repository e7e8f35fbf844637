"""Hinton KD from a teacher run of ours: ``--config configs/kd.py:DATASET/MODEL``.

    python -m launch.train --config "configs/kd.py:cifar100/hrn-2x5x3x:cull=S1,thin=S2+S3+S4" \\
        --config.distill.teacher_workdir runs/teacher-c100 --workdir runs/hrn253-kd

T=4, loss = 0.1*CE + 0.9*KD*T^2 (spec §7).
"""

from __future__ import annotations

from hybrenet_jax.config import base_config


def parse_arg(arg: str | None, default_model: str) -> tuple[str, str]:
    """``"DATASET/MODEL"`` -> (dataset, model); either part may be omitted."""
    if not arg:
        return "cifar100", default_model
    dataset, sep, model = arg.partition("/")
    return (dataset, model or default_model) if sep else ("cifar100", dataset)


def get_config(arg: str | None = None):
    """KD run of MODEL on DATASET."""
    c = base_config()
    c.dataset, c.model = parse_arg(arg, "hrn-5x5x3x:thin=S1+S2+S3+S4")
    c.distill.kind = "kd"
    return c
