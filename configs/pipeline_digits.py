"""ReLU-optimization pipelines on the embedded digits, small enough for 2 CPU cores.

    hybrenet deepreshape --config configs/pipeline_digits.py --depths 1-1-1-1 --m 4 \\
        --measure-order --networks alpha2 --top 1 --reuse 4 --workdir runs/digits/deepreshape
    hybrenet criticality --config configs/pipeline_digits.py "hrn-2x2x2x:m=4,depths=1-1-1-1" \\
        --teacher-workdir runs/digits/deepreshape/teacher --workdir runs/digits/criticality

Every run: digits (1,438 train / 359 test images, 32x32), batch 64, a few epochs. The KD
teacher is ``hrn-2x2x2x:m=8`` (ResNet18 is too slow for this budget), trained longer than the
students. DKD runs (``--distill dkd``) sweep the paper's betas 0.8/1/2/6 and add their
1-epoch warm-up (``distill.dkd_warmup_epochs``) to the 4 epochs. docs/pipeline.md shows the
real output and timings (2 CPU cores: about 4 minutes for the whole worked example). Any
field can be overridden: ``--config.num_epochs=1``.
"""

from __future__ import annotations

from configs.default import get_config as digits_config


def get_config(arg: str | None = None):
    """Digits recipe with short runs; ``arg`` sets ``model`` (used by the SNL/base runs)."""
    c = digits_config(arg or "hrn-2x2x2x:m=4,depths=1-1-1-1")
    c.num_epochs = 4
    c.warmup_epochs = 0.5
    c.log_every_steps = 20
    c.checkpoint_keep = 1
    c.async_checkpointing = False  # runs of seconds: synchronous saves are simpler and as fast
    c.tensorboard = False
    c.progress = False
    c.distill.dkd_warmup_epochs = 1.0
    c.pipeline = {
        "teacher_model": "hrn-2x2x2x:m=8",
        "teacher_num_epochs": 8,
        "distill": "kd",
    }
    return c
