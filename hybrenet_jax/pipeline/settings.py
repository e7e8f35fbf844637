"""The ``pipeline`` section of a training config: what the ReLU-optimization pipelines add.

Training configs (``configs/*.py``) describe one run; the pipelines train many (a teacher,
per-stage criticality networks, every planned variant), all from one config. The fields
below live under ``config.pipeline``; a config without that section (e.g. ``default.py``)
gets these defaults, so every training config works with the pipeline verbs.
"""

from __future__ import annotations

import math

import ml_collections

from hybrenet_jax.pipeline.errors import PipelineError

#: Distillation kinds of the training loop (``config.distill.kind``).
DISTILL: tuple[str, ...] = ("none", "kd", "dkd")

#: The paper's DKD sweep of the non-target weight beta (target weight 1; spec §7).
PAPER_DKD_BETAS: tuple[float, ...] = (0.8, 1.0, 2.0, 6.0)

#: Defaults of ``config.pipeline`` (the paper's choices: ResNet18 teacher, KD; DKD sweep).
PIPELINE_DEFAULTS: dict[str, object] = {
    # Teacher of every KD/DKD run (spec §7: ResNet18); trained once per pipeline workdir.
    "teacher_model": "resnet18",
    # Teacher training length in epochs; 0 = the config's own duration (num_epochs or
    # total_steps). Distillation needs a teacher that is better than its students.
    "teacher_num_epochs": 0,
    # Distillation of the trained variants when the CLI does not say (kd | dkd | none).
    "distill": "kd",
    # DKD runs: one run per non-target weight beta (comma-separated; the paper's sweep), the
    # best per variant is reported. The target weight is distill.dkd_alpha (1).
    "dkd_betas": "0.8,1,2,6",
    # DKD runs train distill.dkd_warmup_epochs more epochs than the base schedule (the paper's
    # "20 additional epochs for warmup": 200 + 20); False = the DKD ramp lies inside the base
    # epochs (the other reading).
    "dkd_warmup_extra": True,
}


def parse_dkd_betas(value: object) -> tuple[float, ...]:
    """``"0.8,1,2,6"`` / ``[0.8, 1]`` -> ``(0.8, 1.0)`` (sorted, unique, each > 0).

    Raises:
      PipelineError: empty, non-numeric, non-finite or non-positive values.
    """
    if isinstance(value, str):
        tokens = [t for t in value.replace(",", " ").split() if t]
    elif isinstance(value, (list, tuple)):
        tokens = list(value)
    else:
        tokens = [value]
    betas = []
    for token in tokens:
        try:
            beta = float(token)
        except (TypeError, ValueError):
            raise PipelineError(f"DKD beta {token!r} is not a number (e.g. --dkd-betas 0.8 1 2 "
                                "6)") from None
        if not math.isfinite(beta) or beta <= 0:
            raise PipelineError(f"DKD beta {token!r} must be a positive number")
        betas.append(beta)
    if not betas:
        raise PipelineError("no DKD beta given (e.g. --dkd-betas 0.8 1 2 6)")
    return tuple(sorted(set(betas)))


def ensure_pipeline_section(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Add ``config.pipeline`` (or its missing fields) with :data:`PIPELINE_DEFAULTS`."""
    if "pipeline" not in config:
        config.pipeline = ml_collections.ConfigDict()
    for key, value in PIPELINE_DEFAULTS.items():
        if key not in config.pipeline:
            config.pipeline[key] = value
    return config
