"""Fields every training config has, with the paper's recipe as defaults (spec §7).

Not a runnable config on its own: ``default.py``, ``cifar100_hrn.py`` etc. start from
:func:`base_config` and change what differs. Durations are resolved at run time: when
``total_steps > 0`` it overrides ``num_epochs``; ``*_every_steps = 0`` means once per epoch.
Every field has a rule (type, range, choices) in ``hybrenet_jax/train/config_rules.py``, checked
before a run builds anything; a new field needs one there (a test keeps the two in step).
"""

from __future__ import annotations

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    """The paper recipe: SGD momentum 0.9, lr 0.1 cosine, batch 128, wd 4e-4, 200 epochs."""
    c = ml_collections.ConfigDict()
    c.seed = 0
    c.model = "resnet18"
    c.dataset = "cifar100"
    c.data_dir = ""
    c.manual_dir = ""
    c.batch_size = 128
    # global: batch_size is the global batch on any number of devices (paper recipe);
    # per_device: batch_size per data-axis device, learning_rate scaled by the device count
    c.batch_rule = "global"
    c.num_epochs = 200
    c.total_steps = 0
    c.optimizer = "sgd"
    c.learning_rate = 0.1
    c.lr_schedule = "cosine"
    c.warmup_epochs = 0.0
    c.momentum = 0.9
    c.nesterov = False
    c.weight_decay = 4e-4
    c.label_smoothing = 0.0
    c.crop_padding = 4
    c.flip = True
    c.augment = True
    c.dtype = "float32"
    c.mesh_model_axis = 1
    c.prefetch = 2
    c.data_workers = 0  # threads preparing training batches; 0: min(4, cores); same batches
    c.log_every_steps = 50
    c.eval_every_steps = 0
    c.checkpoint_every_steps = 0
    c.checkpoint_keep = 2
    c.checkpoint_keep_best = 1
    c.async_checkpointing = True
    c.tensorboard = True
    c.progress = True
    c.distill = ml_collections.ConfigDict()
    c.distill.kind = "none"  # none | kd | dkd
    c.distill.teacher_workdir = ""
    c.distill.teacher_model = ""  # default: the model string recorded in the teacher's run
    c.distill.teacher_checkpoint = "best"  # best | latest
    c.distill.temperature = 4.0
    c.distill.kd_weight = 0.9
    c.distill.dkd_alpha = 1.0
    c.distill.dkd_beta = 1.0  # one of the paper's sweep 0.8/1/2/6 (DKD authors' own: 8)
    c.distill.dkd_warmup_epochs = 20.0
    return c
