"""Flax variable trees as flat ``{"params/layer/kernel": ndarray}`` maps, and their validation.

Export, teacher loading and bundles work on host NumPy copies of variables. :func:`validate_variables` checks a tree
against the model that a :class:`~hybrenet_jax.netspec.NetSpec` builds (same keys, shapes and
dtypes) before anything uses it, so a checkpoint or bundle that does not fit its description
fails with a message naming the first offending entries instead of a shape error deep inside
folding or inference.
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from hybrenet_jax.errors import VariablesMismatchError
from hybrenet_jax.models import build_model, input_shape
from hybrenet_jax.netspec import NetSpec

SEPARATOR = "/"
COLLECTIONS = ("params", "batch_stats")


def flatten(tree: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Nested dicts of arrays -> ``{"params/stage1_block1_conv1/kernel": ndarray}``."""
    flat: dict[str, np.ndarray] = {}

    def visit(prefix: str, node: Any) -> None:
        if isinstance(node, Mapping):
            for key in sorted(node):
                if SEPARATOR in str(key):
                    raise VariablesMismatchError(f"variable name {key!r} contains {SEPARATOR!r}")
                visit(f"{prefix}{SEPARATOR}{key}" if prefix else str(key), node[key])
        else:
            flat[prefix] = np.asarray(jax.device_get(node))

    visit("", tree)
    return flat


def unflatten(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Inverse of :func:`flatten`."""
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, leaf = key.split(SEPARATOR)
        node = tree
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def expected_shapes(spec: NetSpec) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """``{flat name: (shape, dtype)}`` of the variables ``build_model(spec)`` initialises."""
    model = build_model(spec)
    abstract = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                              jnp.zeros(input_shape(spec, 1), jnp.float32))
    leaves = jax.tree_util.tree_flatten_with_path(
        {k: abstract[k] for k in COLLECTIONS if k in abstract})[0]
    return {SEPARATOR.join(str(p.key) for p in path): (tuple(leaf.shape), np.dtype(leaf.dtype))
            for path, leaf in leaves}


def validate_variables(spec: NetSpec, variables: Mapping[str, Any], what: str,
                       hint: str = "") -> dict[str, Any]:
    """Check ``variables`` against ``build_model(spec)``; return a NumPy copy of them.

    Args:
      spec: the description the variables must fit.
      variables: Flax variables (``params`` and, if the model has BatchNorm, ``batch_stats``).
      what: where the variables came from, for the error message (e.g. a workdir).
      hint: a sentence appended to the error message (what to check).

    Raises:
      VariablesMismatchError: missing or unexpected entries, or wrong shapes or dtypes.
    """
    expected = expected_shapes(spec)
    got = flatten(variables)
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    wrong = [f"{k}: {got[k].shape} {got[k].dtype} (expected {expected[k][0]} {expected[k][1]})"
             for k in sorted(set(expected) & set(got))
             if got[k].shape != expected[k][0] or got[k].dtype != expected[k][1]]
    if missing or extra or wrong:
        details = []
        if missing:
            details.append(f"{len(missing)} missing (e.g. {', '.join(missing[:3])})")
        if extra:
            details.append(f"{len(extra)} unexpected (e.g. {', '.join(extra[:3])})")
        if wrong:
            details.append(f"{len(wrong)} with wrong shape/dtype (e.g. {'; '.join(wrong[:2])})")
        name = spec.name or spec.family
        raise VariablesMismatchError(
            f"the variables of {what} do not fit model {name!r}: " + "; ".join(details)
            + (f". {hint}" if hint else ""))
    return unflatten(got)
