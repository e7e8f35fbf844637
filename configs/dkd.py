"""Decoupled KD from a teacher run of ours, as the DeepReShape paper runs it:
``--config configs/dkd.py:DATASET/MODEL``.

    python -m launch.train --config "configs/dkd.py:cifar100/hrn-2x5x3x:cull=S1,thin=S2+S3+S4" \\
        --config.distill.teacher_workdir runs/teacher-c100 --config.distill.dkd_beta=2 \\
        --workdir runs/hrn253-dkd-b2

What it does (spec §7): the paper recipe (SGD, lr 0.1 cosine, batch 128, wd 4e-4) with
loss = CE + (target weight alpha=1) * TCKD + beta * NCKD at T=4, the DKD term ramped in
linearly over 20 warm-up epochs that are *added* to the 200 base epochs (220 in all: the
direct reading of the paper's "20 additional epochs for warmup", ``distill.dkd_warmup_extra``;
for the other reading, a ramp inside 200 epochs, pass --config.distill.dkd_warmup_extra=false).
One file is one run, so it trains one
beta: 1 by default, one of the paper's sweep {0.8, 1, 2, 6}; pick another with
--config.distill.dkd_beta. The DKD authors' own default beta=8 is not used by the paper.
``hybrenet deepreshape --distill dkd`` runs the whole sweep and reports the best per variant.
"""

from __future__ import annotations

from hybrenet_jax.config import base_config
from configs.kd import parse_arg

def get_config(arg: str | None = None):
    """DKD run of MODEL on DATASET: beta=1, 200 + 20 warm-up epochs."""
    c = base_config()
    c.dataset, c.model = parse_arg(arg, "hrn-5x5x3x:thin=S1+S2+S3+S4")
    c.distill.kind = "dkd"
    c.distill.dkd_alpha = 1.0
    c.distill.dkd_beta = 1.0
    # the base config's 20 warm-up epochs (spec §7) are trained on top of the 200:
    # distill.dkd_warmup_extra = True (the default)
    return c
