"""A masked model that evaluates ReLUs only where a fixed binary mask keeps them.

:class:`hybrenet_jax.models.ReluGate` blends ``m * relu(x) + (1 - m) * x`` over *all*
positions, so a traced graph of it (:func:`hybrenet_jax.trace.measure`) counts every position
as a ReLU even where the mask is 0. For binary masks the same function is computed here by
gathering the kept positions, applying ``max(x, 0)`` to that compact array and scattering it
back; every other position passes through unchanged. The traced ReLU count of this model is
therefore exactly the ReLU count of the masks, which :func:`traced_relus` measures.

Outputs equal those of ``build_snl_model(spec, mask_granularity=g, learnable_masks=False,
mask_stem=...)`` with the same 0/1 masks in its ``relu_masks`` collection (the tests check
it); a stem that SNL leaves linear (:mod:`.model`) is linear here too and counts no ReLU.
"""

from __future__ import annotations

from typing import Any, Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hybrenet_jax.architecture import ReluSite
from hybrenet_jax.models import input_shape, relu
from hybrenet_jax.netspec import NetSpec
from hybrenet_jax.snl.masks import kept_indices, mask_sites
from hybrenet_jax.snl.model import SNLNetwork, linear_sites
from hybrenet_jax.trace import count_jaxpr, measure

KeptTable = tuple[tuple[str, tuple[int, ...]], ...]


class KeptRelu(nn.Module):
    """ReLU on the kept entries of a fixed mask only (flat indices, see :mod:`.masks`)."""

    granularity: str
    kept: tuple[int, ...]

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        if not self.kept:
            return x
        idx = np.asarray(self.kept, np.int32)
        if self.granularity == "channel":
            return x.at[..., idx].set(relu(x[..., idx]))
        flat = x.reshape(x.shape[0], -1)
        return flat.at[:, idx].set(relu(flat[:, idx])).reshape(x.shape)


class SparseMaskedNetwork(SNLNetwork):
    """:class:`~hybrenet_jax.snl.model.SNLNetwork` whose masked sites use :class:`KeptRelu`.

    Attributes:
      kept: ``((site name, flat kept indices), ...)`` for every masked site.
    """

    kept: KeptTable = ()

    def layer(self, record, train: bool):
        if isinstance(record, ReluSite) and record.kept and record.name not in self.linear:
            table = dict(self.kept)
            if record.name not in table:
                raise KeyError(f"no mask for ReLU site {record.name}")
            return KeptRelu(self.mask_granularity, table[record.name], name=record.name)
        return super().layer(record, train)


def build_sparse_model(spec: NetSpec, granularity: str, binary: Mapping[str, np.ndarray],
                       dtype: Any = jnp.float32, mask_stem: bool = False) -> SparseMaskedNetwork:
    """The model of ``spec`` with ReLUs only at the kept entries of the 0/1 masks ``binary``
    (the stem linear unless ``mask_stem``, as in :func:`~.model.build_snl_model`)."""
    sites = mask_sites(spec, granularity, mask_stem)
    for s in sites:
        if s.name not in binary or tuple(np.shape(binary[s.name])) != s.shape:
            raise ValueError(f"mask of {s.name} is missing or not shaped {s.shape}")
    table = kept_indices({s.name: binary[s.name] for s in sites})
    return SparseMaskedNetwork(spec, dtype=dtype, mask_granularity=granularity,
                               learnable_masks=False, linear=linear_sites(spec, mask_stem),
                               kept=tuple((s.name, table[s.name]) for s in sites))


def traced_relus(spec: NetSpec, granularity: str, binary: Mapping[str, np.ndarray],
                 mask_stem: bool = False) -> int:
    """ReLUs of one image counted on the traced jaxpr of the sparse masked model."""
    model = build_sparse_model(spec, granularity, binary, mask_stem=mask_stem)
    x = jnp.zeros(input_shape(spec, 1), jnp.float32)
    variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    closed = jax.make_jaxpr(lambda v, inp: model.apply(v, inp, train=False))(variables, x)
    relus, _ = count_jaxpr(closed.jaxpr)
    return relus


def dense_traced_relus(spec: NetSpec, granularity: str) -> int:
    """What :func:`hybrenet_jax.trace.measure` counts for the blended masked model.

    Every position of every kept site: the blend evaluates ``max(x, 0)`` everywhere.
    """
    return measure(spec, mask_granularity=granularity, learnable_masks=False).relus


__all__ = ["KeptRelu", "SparseMaskedNetwork", "build_sparse_model", "dense_traced_relus",
           "traced_relus"]
