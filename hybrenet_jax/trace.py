"""Counts measured on the traced Flax graph, to prove model and description agree.

:func:`measure` builds the real Flax model of a spec, traces one eval-mode forward pass of a
single image with :func:`jax.make_jaxpr` (no FLOPs are executed) and walks every equation,
nested jaxprs included:

* ReLUs: output elements of every ``max(x, 0)`` (the ReLU in :func:`hybrenet_jax.models.relu`);
* MACs: ``conv_general_dilated`` output elements x (kernel area x input channels per group),
  and ``dot_general`` output elements x contracted size;
* params: leaves of the initialised ``params`` collection (shapes via :func:`jax.eval_shape`).

These are compared with the analytic :func:`hybrenet_jax.counts.count` in the tests and by
``hybrenet count --measure``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Iterator

import jax
from jax.extend import core as jcore
import jax.numpy as jnp
import numpy as np

from hybrenet_jax.models import build_model, input_shape
from hybrenet_jax.netspec import NetSpec


@dataclasses.dataclass(frozen=True)
class Measured:
    """Counts read off the traced model for one image."""

    relus: int
    macs: int
    params: int

    def as_dict(self) -> dict:
        return {"measured_relus": self.relus, "measured_macs": self.macs,
                "measured_params": self.params}


def _sub_jaxprs(value) -> Iterator[jcore.Jaxpr]:
    if isinstance(value, jcore.ClosedJaxpr):
        yield value.jaxpr
    elif isinstance(value, jcore.Jaxpr):
        yield value
    elif isinstance(value, (tuple, list)):
        for v in value:
            yield from _sub_jaxprs(v)


def _equations(jaxpr: jcore.Jaxpr) -> Iterator[jcore.JaxprEqn]:
    for eqn in jaxpr.eqns:
        yield eqn
        for param in eqn.params.values():
            for sub in _sub_jaxprs(param):
                yield from _equations(sub)


def _is_zero(var) -> bool:
    if isinstance(var, jcore.Literal):
        return bool(np.all(np.asarray(var.val) == 0))
    return False


def _size(var) -> int:
    return math.prod(var.aval.shape)


def _eqn_macs(eqn: jcore.JaxprEqn) -> int:
    name = eqn.primitive.name
    if name == "conv_general_dilated":
        rhs = eqn.invars[1].aval.shape
        out_feature_dim = eqn.params["dimension_numbers"].rhs_spec[0]
        return _size(eqn.outvars[0]) * math.prod(rhs) // rhs[out_feature_dim]
    if name == "dot_general":
        (lhs_contract, _), _ = eqn.params["dimension_numbers"]
        lhs = eqn.invars[0].aval.shape
        return _size(eqn.outvars[0]) * math.prod(lhs[d] for d in lhs_contract)
    return 0


def count_jaxpr(jaxpr: jcore.Jaxpr) -> tuple[int, int]:
    """``(relus, macs)`` of a jaxpr: elements of ``max(x, 0)`` and conv/dot MACs."""
    relus = macs = 0
    zero_consts: set = set()
    for eqn in _equations(jaxpr):
        name = eqn.primitive.name
        # jnp.maximum(x, 0) may broadcast a zero literal first; remember those outputs.
        if name == "broadcast_in_dim" and _is_zero(eqn.invars[0]):
            zero_consts.add(eqn.outvars[0])
        elif name == "max" and any(_is_zero(v) or v in zero_consts for v in eqn.invars):
            relus += _size(eqn.outvars[0])
        macs += _eqn_macs(eqn)
    return relus, macs


def measure(spec: NetSpec, **model_kwargs) -> Measured:
    """Trace the Flax model of ``spec`` on one image and count ReLUs, MACs and params."""
    model = build_model(spec, **model_kwargs)
    x = jnp.zeros(input_shape(spec, 1), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    params = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(variables["params"]))
    closed = jax.make_jaxpr(lambda v, inp: model.apply(v, inp, train=False))(variables, x)
    relus, macs = count_jaxpr(closed.jaxpr)
    return Measured(relus=relus, macs=macs, params=params)
