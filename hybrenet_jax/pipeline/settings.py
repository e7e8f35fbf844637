"""The ``pipeline`` section of a training config: what the ReLU-optimization pipelines add.

Training configs (``configs/*.py``) describe one run; the pipelines train many (a teacher,
per-stage criticality networks, every planned variant), all from one config. The fields
below live under ``config.pipeline``; a config without that section (e.g. ``default.py``)
gets these defaults, so every training config works with the pipeline verbs.
"""

from __future__ import annotations

import ml_collections

#: Distillation kinds of the training loop (``config.distill.kind``).
DISTILL: tuple[str, ...] = ("none", "kd", "dkd")

#: Defaults of ``config.pipeline`` (the paper's choices: ResNet18 teacher, KD).
PIPELINE_DEFAULTS: dict[str, object] = {
    # Teacher of every KD/DKD run (spec §7: ResNet18); trained once per pipeline workdir.
    "teacher_model": "resnet18",
    # Teacher training length in epochs; 0 = the config's own duration (num_epochs or
    # total_steps). Distillation needs a teacher that is better than its students.
    "teacher_num_epochs": 0,
    # Distillation of the trained variants when the CLI does not say (kd | dkd | none).
    "distill": "kd",
}


def ensure_pipeline_section(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """Add ``config.pipeline`` (or its missing fields) with :data:`PIPELINE_DEFAULTS`."""
    if "pipeline" not in config:
        config.pipeline = ml_collections.ConfigDict()
    for key, value in PIPELINE_DEFAULTS.items():
        if key not in config.pipeline:
            config.pipeline[key] = value
    return config
