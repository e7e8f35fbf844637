"""Train state, optimizer and learning-rate schedule (paper recipe, spec §7)."""

from __future__ import annotations

import hashlib
from typing import Any

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax


@flax.struct.dataclass
class TrainState:
    """Everything a step changes: step counter, params, BN statistics, optimizer state."""

    step: jnp.ndarray
    params: Any
    batch_stats: Any
    opt_state: Any

    @property
    def variables(self) -> dict:
        """The Flax variables for ``model.apply``."""
        return {"params": self.params, "batch_stats": self.batch_stats}


def learning_rate_schedule(base_lr: float, total_steps: int, warmup_steps: int = 0,
                           schedule: str = "cosine") -> optax.Schedule:
    """Linear warm-up from 0 then cosine annealing to 0 (or a constant rate)."""
    if schedule == "constant":
        main = optax.constant_schedule(base_lr)
    elif schedule == "cosine":
        main = optax.cosine_decay_schedule(base_lr, max(1, total_steps - warmup_steps))
    else:
        raise ValueError(f"schedule={schedule!r}; accepted: cosine, constant")
    if warmup_steps <= 0:
        return main
    warm = optax.linear_schedule(0.0, base_lr, warmup_steps)
    return optax.join_schedules([warm, main], [warmup_steps])


def make_optimizer(lr: optax.Schedule, momentum: float, weight_decay: float,
                   nesterov: bool = False, kind: str = "sgd") -> optax.GradientTransformation:
    """SGD with momentum and coupled (PyTorch-style) weight decay, or Adam for mask search."""
    if kind == "sgd":
        return optax.chain(optax.add_decayed_weights(weight_decay),
                           optax.sgd(lr, momentum=momentum, nesterov=nesterov))
    if kind == "adam":
        return optax.chain(optax.add_decayed_weights(weight_decay), optax.adam(lr))
    raise ValueError(f"optimizer={kind!r}; accepted: sgd, adam")


def create_state(variables: dict, optimizer: optax.GradientTransformation) -> TrainState:
    """A step-0 state from initialised Flax variables."""
    params = variables["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      batch_stats=variables.get("batch_stats", {}),
                      opt_state=optimizer.init(params))


def _host_leaf(x) -> np.ndarray:
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
        x = x.addressable_data(0)  # replicated: any local shard is the whole array
    return np.asarray(jax.device_get(x))


def tree_digest(tree: Any) -> str:
    """SHA-256 over every leaf's path, dtype, shape and bytes, in a fixed key order."""
    h = hashlib.sha256()
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    for path, leaf in sorted(leaves, key=lambda kv: jax.tree_util.keystr(kv[0])):
        arr = np.ascontiguousarray(_host_leaf(leaf))
        h.update(jax.tree_util.keystr(path).encode())
        h.update(str(arr.dtype).encode())
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def params_digest(state: TrainState) -> str:
    """Digest of the final params and batch statistics (for exact run comparisons)."""
    return tree_digest({"params": state.params, "batch_stats": state.batch_stats})
