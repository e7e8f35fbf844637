"""Pure, jit-compiled train and eval steps over a device mesh (pjit style).

The batch is sharded over the mesh's ``data`` axis and everything else is replicated, so
under ``jit`` BatchNorm statistics are computed over the *global* batch (sync BN): a run on
8 devices computes the same function as on 1 device with the same global batch.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from hybrenet_jax.train.losses import cross_entropy, dkd_loss, kd_loss, topk_correct
from hybrenet_jax.train.state import TrainState


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """What the training loss is made of."""

    distill: str = "none"  # none | kd | dkd
    label_smoothing: float = 0.0
    temperature: float = 4.0
    kd_weight: float = 0.9  # KD: loss = (1 - kd_weight) * CE + kd_weight * KD
    dkd_alpha: float = 1.0
    dkd_beta: float = 1.0  # as hybrenet_jax.config (one of the paper's 0.8/1/2/6)
    dkd_warmup_steps: int = 0  # DKD term ramps in linearly over this many steps


@dataclasses.dataclass(frozen=True)
class Teacher:
    """A frozen teacher: its Flax module and variables (evaluated in eval mode)."""

    model: nn.Module
    variables: Any


def replicated(mesh: Mesh) -> NamedSharding:
    """Sharding that keeps a full copy on every device."""
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Sharding that splits the batch axis over ``data``."""
    return NamedSharding(mesh, P("data"))


def _tree_norm(tree) -> jnp.ndarray:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32)))
                        for x in jax.tree.leaves(tree)))


def training_loss(model: nn.Module, loss: LossConfig, params, batch_stats, batch,
                  teacher_logits, step):
    """Scalar loss and auxiliaries for one global batch."""
    logits, updates = model.apply({"params": params, "batch_stats": batch_stats},
                                  batch["image"], train=True, mutable=["batch_stats"])
    labels = batch["label"]
    ce = jnp.mean(cross_entropy(logits, labels, loss.label_smoothing))
    if loss.distill == "kd":
        kd = jnp.mean(kd_loss(logits, teacher_logits, loss.temperature))
        total = (1.0 - loss.kd_weight) * ce + loss.kd_weight * kd
    elif loss.distill == "dkd":
        ramp = 1.0 if loss.dkd_warmup_steps <= 0 else jnp.minimum(
            (step + 1) / loss.dkd_warmup_steps, 1.0)
        dkd = jnp.mean(dkd_loss(logits, teacher_logits, labels, loss.dkd_alpha,
                                loss.dkd_beta, loss.temperature))
        total = ce + ramp * dkd
    else:
        total = ce
    return total, (logits, updates["batch_stats"], ce)


#: ``objective(params, batch_stats, batch, teacher_logits, step, extra) -> (loss, (logits,
#: new batch_stats, metrics))``: what a step minimises. ``extra`` is the step's fourth
#: argument (SNL: the L1 weight lambda, or the fixed masks), passed as data so that changing
#: it does not recompile.
Objective = Callable[..., tuple[jnp.ndarray, tuple[Any, Any, dict]]]


def supervised_objective(model: nn.Module, loss: LossConfig) -> Objective:
    """Cross-entropy, KD or DKD (``loss.distill``) of ``model``: :func:`training_loss`."""

    def objective(params, batch_stats, batch, teacher_logits, step, extra):  # noqa: ARG001
        total, (logits, new_stats, ce) = training_loss(model, loss, params, batch_stats, batch,
                                                       teacher_logits, step)
        return total, (logits, new_stats, {"ce": ce})

    return objective


def teacher_logits(teacher: Teacher | None, teacher_variables, images) -> jnp.ndarray | None:
    """The frozen teacher's logits for ``images`` (eval mode, no gradient); ``None`` without
    a teacher."""
    if teacher is None:
        return None
    return jax.lax.stop_gradient(teacher.model.apply(teacher_variables, images, train=False))


def step_body(objective: Objective, optimizer: optax.GradientTransformation,
              schedule: optax.Schedule | None = None) -> Callable:
    """``body(state, batch, teacher_logits, extra) -> (state, metrics)``: one optimizer step
    on ``objective``, not jitted (:func:`make_step` jits one; a population jits several
    around one teacher pass). Metrics: ``loss``, ``accuracy``, ``grad_norm``, ``param_norm``,
    ``lr`` (with a ``schedule``) and the objective's own."""

    def body(state: TrainState, batch, t_logits, extra):
        grad_fn = jax.value_and_grad(
            lambda p: objective(p, state.batch_stats, batch, t_logits, state.step, extra),
            has_aux=True)
        (total, (logits, batch_stats, own)), grads = grad_fn(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": total, **own,
                   "accuracy": jnp.mean(topk_correct(logits, batch["label"], 1)),
                   "grad_norm": _tree_norm(grads), "param_norm": _tree_norm(params)}
        if schedule is not None:
            metrics["lr"] = schedule(state.step)
        new = TrainState(step=state.step + 1, params=params, batch_stats=batch_stats,
                         opt_state=opt_state)
        return new, metrics

    return body


def make_step(objective: Objective, optimizer: optax.GradientTransformation, mesh: Mesh,
              teacher: Teacher | None = None, schedule: optax.Schedule | None = None
              ) -> Callable:
    """``step(state, batch, teacher_variables=None, extra=None) -> (state, metrics)``: one
    optimizer step on ``objective`` (:func:`step_body`), jitted over ``mesh`` (batch sharded
    over ``data``, the rest replicated) with the state donated.

    The teacher (if any) runs in eval mode without gradients. ``step.traces`` counts how
    often the Python body was traced (it must stay 1).
    """
    body = step_body(objective, optimizer, schedule)

    def step(state: TrainState, batch, teacher_variables, extra):
        wrapper.traces += 1
        return body(state, batch, teacher_logits(teacher, teacher_variables, batch["image"]),
                    extra)

    rep = replicated(mesh)
    jitted = jax.jit(step, in_shardings=(rep, batch_sharded(mesh), rep, rep),
                     out_shardings=(rep, rep), donate_argnums=(0,))

    def wrapper(state, batch, teacher_variables=None, extra=None):
        return jitted(state, batch, teacher_variables, extra)

    wrapper.traces = 0
    return wrapper


def make_population_step(bodies: list[Callable], mesh: Mesh, teacher: Teacher | None = None
                         ) -> Callable:
    """``step(states, batch, teacher_variables=None) -> (states, metrics)``: one step of every
    member of a population in one jitted program (tuples, one entry per member, each state
    donated). The teacher's forward pass runs once per batch and its logits serve every
    member; each member's ``body`` (:func:`step_body`) is the computation its single run
    does, unrolled here one after the other (XLA schedules them together)."""

    def step(states, batch, teacher_variables):
        wrapper.traces += 1
        t_logits = teacher_logits(teacher, teacher_variables, batch["image"])
        out = [body(state, batch, t_logits, None) for body, state in zip(bodies, states)]
        return tuple(o[0] for o in out), tuple(o[1] for o in out)

    rep = replicated(mesh)
    jitted = jax.jit(step, in_shardings=(rep, batch_sharded(mesh), rep),
                     out_shardings=(rep, rep), donate_argnums=(0,))

    def wrapper(states, batch, teacher_variables=None):
        return jitted(tuple(states), batch, teacher_variables)

    wrapper.traces = 0
    return wrapper


def make_train_step(model: nn.Module, optimizer: optax.GradientTransformation,
                    schedule: optax.Schedule, loss: LossConfig, mesh: Mesh,
                    teacher: Teacher | None = None) -> Callable:
    """The training loop's step: :func:`make_step` on :func:`supervised_objective`."""
    if loss.distill != "none" and teacher is None:
        raise ValueError(f"distill={loss.distill!r} needs a teacher")
    return make_step(supervised_objective(model, loss), optimizer, mesh,
                     teacher if loss.distill != "none" else None, schedule)


def make_eval_step(model: nn.Module, mesh: Mesh) -> Callable:
    """``eval_step(variables, batch) -> sums`` of loss, top-1, top-5 and example count."""

    def step(variables, batch):
        logits = model.apply(variables, batch["image"], train=False)
        mask = batch["mask"]
        return {
            "loss": jnp.sum(cross_entropy(logits, batch["label"]) * mask),
            "top1": jnp.sum(topk_correct(logits, batch["label"], 1) * mask),
            "top5": jnp.sum(topk_correct(logits, batch["label"], 5) * mask),
            "count": jnp.sum(mask),
        }

    rep = replicated(mesh)
    return jax.jit(step, in_shardings=(rep, batch_sharded(mesh)), out_shardings=rep)
