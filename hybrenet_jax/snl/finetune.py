"""SNL fine-tuning: train the weights with the binarized masks fixed (SGD, cosine, KD).

The masks live in the ``relu_masks`` collection of
``build_snl_model(spec, mask_granularity=g, learnable_masks=False)``; only ``params`` and the
BatchNorm statistics change. Checkpointed under ``directory`` once per data epoch and at the
end, so an interrupted fine-tuning resumes.
"""

from __future__ import annotations

import pathlib
from typing import Callable, Mapping

import jax
import numpy as np

from hybrenet_jax.netspec import NetSpec
from hybrenet_jax.schema import SNLConfig
from hybrenet_jax.snl.model import as_float32, build_snl_model
from hybrenet_jax.snl.steps import SNLLoss, make_finetune_step
from hybrenet_jax.snl.errors import SNLError
from hybrenet_jax.train.checkpoint import Checkpointer
from hybrenet_jax.train.divergence import DivergenceWatch, diverged_message
from hybrenet_jax.train.setup import Setup
from hybrenet_jax.train.state import create_state, learning_rate_schedule, make_optimizer
from hybrenet_jax.train.steps import Teacher


def mask_collection(binary: Mapping[str, np.ndarray]) -> dict:
    """The ``relu_masks`` collection of 0/1 masks: ``{site: {"mask": array}}``."""
    return {name: {"mask": np.asarray(m, np.float32)} for name, m in binary.items()}


def finetune_steps(settings: SNLConfig, steps_per_epoch: int) -> int:
    """Fine-tuning length in steps (``finetune_steps`` or epochs x steps per epoch)."""
    return settings.finetune_steps or settings.finetune_epochs * steps_per_epoch


def finetune(setup: Setup, settings: SNLConfig, spec: NetSpec, params: dict,
             batch_stats: dict, binary: Mapping[str, np.ndarray], teacher: Teacher | None,
             directory: pathlib.Path, log: Callable[[str], None]) -> dict:
    """Fine-tune (or resume) and return the final variables, ``relu_masks`` included."""
    model = build_snl_model(spec, setup.dtype, settings.granularity, learnable_masks=False,
                            mask_stem=settings.mask_stem)
    total = finetune_steps(settings, setup.steps_per_epoch)
    masks = setup.replicate(as_float32(mask_collection(binary)))
    if total == 0:
        return {"params": params, "batch_stats": batch_stats, "relu_masks": masks}
    schedule = learning_rate_schedule(settings.finetune_learning_rate, total, 0, "cosine")
    optimizer = make_optimizer(schedule, settings.finetune_momentum,
                               settings.finetune_weight_decay, False, "sgd")

    def init():
        return create_state({"params": params, "batch_stats": batch_stats}, optimizer)

    directory.mkdir(parents=True, exist_ok=True)
    checkpointer = Checkpointer(directory, max_to_keep=1, keep_best=0, use_async=False)
    state, meta = setup.restore(checkpointer, init)
    if meta is not None:
        log(f"SNL fine-tuning resumed at step {int(state.step)} of {total}")
    step_fn = make_finetune_step(model, optimizer, SNLLoss.of(settings), setup.mesh, teacher,
                                 schedule)
    teacher_vars = teacher.variables if teacher else None
    watch = DivergenceWatch()
    for step, state, metrics in setup.steps(step_fn, state, total, teacher_vars, masks):
        watch.observe(state.step, metrics)
        if step % setup.steps_per_epoch == 0 or step == total:
            bad = watch.check(state)  # nothing non-finite is saved
            if bad is not None:
                raise SNLError(diverged_message(
                    "SNL fine-tuning", bad, checkpointer.last_intact_step(), str(directory),
                    "lower snl.finetune_learning_rate"))
            checkpointer.save(step, state, {"step": step, "of": total}, force=True)
    checkpointer.close()
    state = jax.device_get(state)
    return {"params": state.params, "batch_stats": state.batch_stats, "relu_masks": masks}
