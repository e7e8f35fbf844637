"""Divergence: non-finite losses, metrics or states are caught before anything is kept.

Every training procedure (the training loop, SNL's mask search and fine-tuning) folds each
step's metrics into a :class:`DivergenceWatch` on the device (one tiny jitted op a step, no
host sync), and asks it :meth:`DivergenceWatch.check` before it logs, evaluates, ranks or
saves: the first step whose loss or any metric was NaN/inf is then known exactly, and the
state about to be saved is checked leaf by leaf. So no checkpoint, ``best/`` entry, summary or
result line ever holds a non-finite value; the error names the last checkpoint kept (which is
finite by construction) and what a rerun will do.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def _all_finite(tree: Any) -> jax.Array:
    leaves = [x for x in jax.tree.leaves(tree)
              if jnp.issubdtype(jnp.asarray(x).dtype, jnp.inexact)]
    if not leaves:
        return jnp.bool_(True)
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


@jax.jit
def _fold(first_bad: jax.Array, step: jax.Array, metrics: Any) -> jax.Array:
    bad = jnp.logical_not(_all_finite(metrics))
    return jnp.where((first_bad < 0) & bad, step.astype(jnp.int32), first_bad)


@jax.jit
def tree_is_finite(tree: Any) -> jax.Array:
    """Whether every floating leaf of ``tree`` is finite (a scalar bool on the device)."""
    return _all_finite(tree)


def host_tree_is_finite(tree: Any) -> bool:
    """:func:`tree_is_finite` on host (numpy) trees, e.g. a restored checkpoint."""
    for leaf in jax.tree.leaves(tree):
        arr = np.asarray(leaf)
        if np.issubdtype(arr.dtype, np.inexact) and not np.all(np.isfinite(arr)):
            return False
    return True


def finite_numbers(values: Mapping[str, Any]) -> bool:
    """Whether every number of a flat mapping of host metrics is finite."""
    return all(math.isfinite(float(v)) for v in values.values()
               if isinstance(v, (int, float, np.number)) and not isinstance(v, bool))


class DivergenceWatch:
    """The first step whose metrics were not finite, folded on the device step by step."""

    def __init__(self) -> None:
        self._first_bad: jax.Array | None = None

    def observe(self, step: jax.Array, metrics: Any) -> None:
        """Fold the metrics of the step that ended with counter ``step`` (no host sync)."""
        if self._first_bad is None:
            self._first_bad = jnp.full((), -1, jnp.int32)
        self._first_bad = _fold(self._first_bad, step, metrics)

    def first_bad_step(self) -> int | None:
        """The first step with non-finite metrics since the watch started (syncs)."""
        if self._first_bad is None:
            return None
        bad = int(jax.device_get(self._first_bad))
        return bad if bad >= 0 else None

    def check(self, state: Any = None) -> int | None:
        """The step where training diverged, or ``None``: the first non-finite metrics, or
        (with ``state``) the state's own step when a leaf of it is NaN/inf."""
        bad = self.first_bad_step()
        if bad is not None:
            return bad
        if state is not None and not bool(jax.device_get(tree_is_finite(state))):
            return int(jax.device_get(state.step)) if hasattr(state, "step") else -1
        return None


def diverged_message(what: str, step: int, kept: int | None, where: str,
                     fix: str = "lower learning_rate or add warmup_epochs") -> str:
    """The one line of a diverged run: where it went non-finite, what is kept, what a rerun
    with the advised fix does (``kept``: the last checkpoint step, ``None``: none)."""
    if kept is not None and kept >= 0:
        keeps = (f"nothing non-finite was saved: the last checkpoint, step {kept} in {where}, "
                 f"is finite; {fix} and rerun the same command to resume from step {kept}")
    else:
        keeps = (f"no checkpoint was saved yet; {fix} and rerun the same command to start "
                 "over")
    return f"{what} diverged: non-finite loss or metrics at step {step}; {keeps}"
