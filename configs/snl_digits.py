"""SNL on the embedded digits, small enough for 2 CPU cores (docs/snl.md).

    hybrenet snl --config configs/snl_digits.py "hrn-2x2x2x:m=4,depths=1-1-1-1" \\
        --budget 5000 --workdir runs/digits/snl

The pretrained network uses the pipeline_digits recipe (4 epochs); the SNL settings are the
public SNL defaults (``SNLConfig`` in hybrenet_jax/schema.py) except where a tiny run needs less:
masks learn with Adam lr 1e-2 (weights keep 1e-3), lambda starts at 1e-4 and grows from
search epoch 1, a search epoch is 8 steps, and fine-tuning lasts 2 epochs. Like public SNL,
binarization keeps only masks above the threshold (``fill_to_budget`` false) and the stem has
no ReLU (``mask_stem`` false); ``--fill-to-budget`` / ``--mask-stem`` restore the older
behaviour of this project.
"""

from __future__ import annotations

from configs.pipeline_digits import get_config as pipeline_config


def get_config(arg: str | None = None):
    """``arg``: the network's model string (default ``hrn-2x2x2x:m=4,depths=1-1-1-1``)."""
    c = pipeline_config(arg)
    c.snl = {
        "granularity": "pixel",
        "threshold": 1e-2,
        "search_learning_rate": 1e-3,
        "mask_learning_rate": 1e-2,
        "lasso": 1e-4,
        "lasso_growth": 1.1,
        "lasso_patience_epochs": 1,
        "max_epochs": 400,
        "epoch_steps": 8,
        "kd": True,
        "temperature": 4.0,
        "kd_weight": 1.0,
        "finetune_epochs": 2,
        "finetune_steps": 0,
        "finetune_learning_rate": 1e-3,
        "finetune_momentum": 0.9,
        "finetune_weight_decay": 5e-4,
        "fill_to_budget": False,
        "mask_stem": False,
        "thin": "",
    }
    return c
