"""SNL's objectives on the training core's step (:func:`hybrenet_jax.train.steps.make_step`).

* search: ``CE + kd_weight * KD + lambda * ||mask||_1`` with learnable masks in ``params``;
  ``lambda`` is the step's ``extra`` argument, so changing it does not recompile;
* fine-tune: ``CE + kd_weight * KD`` with fixed 0/1 masks passed as the ``relu_masks``
  collection (the ``extra`` argument too: the masks are data, not constants baked into the
  program).

The step itself (sharding, donation, the optimizer update, metrics) is the training loop's.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from hybrenet_jax.schema import SNLConfig
from hybrenet_jax.train.losses import cross_entropy, kd_loss
from hybrenet_jax.train.steps import Objective, Teacher, make_step


@dataclasses.dataclass(frozen=True)
class SNLLoss:
    """Distillation part of the SNL losses (``CE + kd_weight * KD``, SNL's own sum)."""

    kd: bool = True
    temperature: float = 4.0
    kd_weight: float = 1.0

    @classmethod
    def of(cls, settings: SNLConfig) -> "SNLLoss":
        """The loss ``config.snl`` asks for."""
        return cls(settings.kd, settings.temperature, settings.kd_weight)


def is_mask_path(path) -> bool:
    """Whether a pytree path ends in a ReLU mask leaf (``.../<site>/mask``)."""
    last = path[-1] if path else None
    return getattr(last, "key", None) == "mask"


def mask_labels(params: Any) -> Any:
    """``"mask"`` / ``"weights"`` label per leaf, for :func:`optax.multi_transform`."""
    return jax.tree_util.tree_map_with_path(
        lambda p, _: "mask" if is_mask_path(p) else "weights", params)


def mask_l1(params: Any) -> jnp.ndarray:
    """Sum of |mask| over every mask leaf of ``params``."""
    leaves = jax.tree_util.tree_flatten_with_path(params)[0]
    return sum((jnp.sum(jnp.abs(x)) for p, x in leaves if is_mask_path(p)),
               jnp.zeros((), jnp.float32))


def search_optimizer(weights_lr: float, masks_lr: float) -> optax.GradientTransformation:
    """Adam over every parameter; the masks may get their own learning rate."""
    return optax.multi_transform({"weights": optax.adam(weights_lr),
                                  "mask": optax.adam(masks_lr)}, mask_labels)


def _distilled(logits, labels, teacher_logits, loss: SNLLoss):
    ce = jnp.mean(cross_entropy(logits, labels))
    if teacher_logits is None:
        return ce, ce
    kd = jnp.mean(kd_loss(logits, teacher_logits, loss.temperature))
    return ce + loss.kd_weight * kd, ce


def search_objective(model: nn.Module, loss: SNLLoss) -> Objective:
    """Task loss + ``lambda * ||mask||_1`` (``extra`` = lambda), masks learnt in ``params``."""

    def objective(params, batch_stats, batch, teacher_logits, step, lam):  # noqa: ARG001
        logits, updates = model.apply({"params": params, "batch_stats": batch_stats},
                                      batch["image"], train=True, mutable=["batch_stats"])
        task, ce = _distilled(logits, batch["label"], teacher_logits, loss)
        l1 = mask_l1(params)
        return task + lam * l1, (logits, updates["batch_stats"], {"ce": ce, "mask_l1": l1})

    return objective


def finetune_objective(model: nn.Module, loss: SNLLoss) -> Objective:
    """Task loss with the fixed ``relu_masks`` collection (``extra``)."""

    def objective(params, batch_stats, batch, teacher_logits, step, masks):  # noqa: ARG001
        logits, updates = model.apply(
            {"params": params, "batch_stats": batch_stats, "relu_masks": masks},
            batch["image"], train=True, mutable=["batch_stats"])
        total, ce = _distilled(logits, batch["label"], teacher_logits, loss)
        return total, (logits, updates["batch_stats"], {"ce": ce})

    return objective


def make_search_step(model: nn.Module, optimizer: optax.GradientTransformation,
                     loss: SNLLoss, mesh: Mesh, teacher: Teacher | None) -> Callable:
    """``step(state, batch, teacher_variables, lam) -> (state, metrics)`` (jitted, donated)."""
    return make_step(search_objective(model, loss), optimizer, mesh,
                     teacher if loss.kd else None)


def make_finetune_step(model: nn.Module, optimizer: optax.GradientTransformation,
                       loss: SNLLoss, mesh: Mesh, teacher: Teacher | None,
                       schedule: optax.Schedule | None = None) -> Callable:
    """``step(state, batch, teacher_variables, masks) -> (state, metrics)`` (fixed masks)."""
    return make_step(finetune_objective(model, loss), optimizer, mesh,
                     teacher if loss.kd else None, schedule)
