"""Counts measured on the traced Flax graph, to prove model and description agree.

:func:`measure` builds the real Flax model of a spec, traces one eval-mode forward pass of a
single image with :func:`jax.make_jaxpr` (no FLOPs are executed) and walks every equation,
nested jaxprs included:

* ReLUs: output elements of every ``max(x, 0)`` (the ReLU in :func:`hybrenet_jax.models.relu`);
* MACs: ``conv_general_dilated`` output elements x (kernel area x input channels per group),
  and ``dot_general`` output elements x contracted size;
* params: leaves of the initialised ``params`` collection (shapes via :func:`jax.eval_shape`).

These are compared with the analytic :func:`hybrenet_jax.counts.count` in the tests and by
``hybrenet count --measure``. :func:`conv_sources` reads the wiring off the same trace: which
convs' outputs reach each conv's input (the ReLU-reuse links are checked this way).
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


def _module_path(eqn: jcore.JaxprEqn, prefix: str) -> str:
    """The Flax module path of an equation (``stage2_block1_conv1/relu_group``)."""
    # Flax names scopes after modules and methods ("Network.run"); transforms add "jvp(...)".
    parts = f"{prefix}/{eqn.source_info.name_stack}".split("/")
    return "/".join(p for p in parts if p and not any(c in p for c in ".()") and p != "Network")


def _flow(jaxpr: jcore.Jaxpr, sources: list[frozenset], prefix: str,
          found: dict[str, frozenset[str]]) -> list[frozenset]:
    """Propagate "nearest conv upstream" sets through ``jaxpr``; record each conv's input."""
    env: dict = dict(zip(jaxpr.invars, sources))
    read = lambda v: frozenset() if isinstance(v, jcore.Literal) else env.get(v, frozenset())  # noqa: E731
    for eqn in jaxpr.eqns:
        ins = [read(v) for v in eqn.invars]
        subs = [s for p in eqn.params.values() for s in _sub_jaxprs(p)]
        if eqn.primitive.name == "conv_general_dilated":
            name = _module_path(eqn, prefix)
            found[name] = found.get(name, frozenset()) | ins[0]
            outs = [frozenset({name})]
        elif len(subs) == 1 and len(subs[0].invars) == len(eqn.invars):
            outs = _flow(subs[0], ins, f"{prefix}/{eqn.source_info.name_stack}", found)
        else:
            union = frozenset().union(*ins)
            outs = [union] * len(eqn.outvars)
        env.update(zip(eqn.outvars, outs))
    return [read(v) for v in jaxpr.outvars]


def conv_sources(spec: NetSpec) -> dict[str, frozenset[str]]:
    """For each conv of the traced model (by module path, e.g. ``stage2_block2_conv1/relu_group``;
    a plain conv by its layer name), the convs whose outputs reach its input through non-conv
    operations only (``"input"`` stands for the image)."""
    model = build_model(spec)
    x = jnp.zeros(input_shape(spec, 1), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    closed = jax.make_jaxpr(lambda v, inp: model.apply(v, inp, train=False))(variables, x)
    invars = closed.jaxpr.invars
    sources = [frozenset()] * (len(invars) - 1) + [frozenset({"input"})]
    found: dict[str, frozenset[str]] = {}
    _flow(closed.jaxpr, sources, "", found)
    return found
