"""Jitted steps of the SNL mask search and fine-tuning (reusing the project's losses).

* search: ``CE + kd_weight * KD + lambda * ||mask||_1`` with learnable masks in ``params``;
  ``lambda`` is an argument, so changing it does not recompile;
* fine-tune: ``CE + kd_weight * KD`` with fixed 0/1 masks passed as the ``relu_masks``
  collection (an argument too: the masks are data, not constants baked into the program).

Both keep the project's layout: the batch is sharded over the mesh's ``data`` axis and the
state replicated (see :mod:`hybrenet_jax.train.steps`).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from hybrenet_jax.train.losses import cross_entropy, kd_loss, topk_correct
from hybrenet_jax.train.state import TrainState
from hybrenet_jax.train.steps import Teacher, batch_sharded, replicated


@dataclasses.dataclass(frozen=True)
class SNLLoss:
    """Distillation part of the SNL losses."""

    kd: bool = True
    temperature: float = 4.0
    kd_weight: float = 1.0


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


def _teacher_logits(teacher: Teacher | None, teacher_variables, images, loss: SNLLoss):
    if teacher is None or not loss.kd:
        return None
    return jax.lax.stop_gradient(teacher.model.apply(teacher_variables, images, train=False))


def _descend(state: TrainState, optimizer: optax.GradientTransformation, objective, labels):
    """One optimizer step on ``objective(params) -> (total, (logits, batch_stats, metrics))``."""
    (total, (logits, batch_stats, metrics)), grads = jax.value_and_grad(
        objective, has_aux=True)(state.params)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {"loss": total, **metrics,
               "accuracy": jnp.mean(topk_correct(logits, labels, 1))}
    return TrainState(step=state.step + 1, params=params, batch_stats=batch_stats,
                      opt_state=opt_state), metrics


def _jit(step: Callable, mesh: Mesh) -> Callable:
    """``step(state, batch, teacher_variables, extra)``: batch sharded, the rest replicated."""
    rep = replicated(mesh)
    return jax.jit(step, in_shardings=(rep, batch_sharded(mesh), rep, rep),
                   out_shardings=(rep, rep), donate_argnums=(0,))


def make_search_step(model: nn.Module, optimizer: optax.GradientTransformation,
                     loss: SNLLoss, mesh: Mesh, teacher: Teacher | None) -> Callable:
    """``step(state, batch, teacher_variables, lam) -> (state, metrics)`` (jitted, donated)."""

    def step(state: TrainState, batch, teacher_variables, lam):
        t_logits = _teacher_logits(teacher, teacher_variables, batch["image"], loss)

        def objective(params):
            logits, updates = model.apply({"params": params, "batch_stats": state.batch_stats},
                                          batch["image"], train=True, mutable=["batch_stats"])
            task, ce = _distilled(logits, batch["label"], t_logits, loss)
            l1 = mask_l1(params)
            return task + lam * l1, (logits, updates["batch_stats"], {"ce": ce, "mask_l1": l1})

        return _descend(state, optimizer, objective, batch["label"])

    return _jit(step, mesh)


def make_finetune_step(model: nn.Module, optimizer: optax.GradientTransformation,
                       loss: SNLLoss, mesh: Mesh, teacher: Teacher | None) -> Callable:
    """``step(state, batch, teacher_variables, masks) -> (state, metrics)`` (fixed masks)."""

    def step(state: TrainState, batch, teacher_variables, masks):
        t_logits = _teacher_logits(teacher, teacher_variables, batch["image"], loss)

        def objective(params):
            logits, updates = model.apply(
                {"params": params, "batch_stats": state.batch_stats, "relu_masks": masks},
                batch["image"], train=True, mutable=["batch_stats"])
            total, ce = _distilled(logits, batch["label"], t_logits, loss)
            return total, (logits, updates["batch_stats"], {"ce": ce})

        return _descend(state, optimizer, objective, batch["label"])

    return _jit(step, mesh)
