"""The network SNL trains: the model of a spec with some ReLU sites made linear.

SNL's public ResNet models have no stem ReLU (their ResNet18 has 491,520 ReLUs where the
DeepReShape paper counts 557,056, spec §7). By default (``snl.mask_stem = false``) SNL here
works on that network: the stem's ReLU site is linear (identity) during the mask search, the
fine-tuning and the final evaluation, it gets no mask, and ReLU counts and budgets cover the
masked sites only. ``snl.mask_stem = true`` masks the stem like every other site (the
paper's count convention).
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp

from hybrenet_jax.architecture import ReluSite, expand
from hybrenet_jax.models import MASK_GRANULARITIES, Network
from hybrenet_jax.netspec import NetSpec
from hybrenet_jax.snl.masks import STEM_SITE


def linear_sites(spec: NetSpec, mask_stem: bool) -> tuple[str, ...]:
    """Kept ReLU sites of ``spec`` that SNL makes linear: the stem's unless ``mask_stem``."""
    if mask_stem:
        return ()
    return tuple(s.name for s in expand(spec).relu_sites() if s.kept and s.name == STEM_SITE)


class SNLNetwork(Network):
    """:class:`~hybrenet_jax.models.Network` whose ``linear`` ReLU sites are the identity.

    Attributes:
      linear: names of kept ReLU sites computed as the identity (no mask, no ReLU).
    """

    linear: tuple[str, ...] = ()

    def layer(self, record, train: bool) -> Callable[[jnp.ndarray], jnp.ndarray]:
        if isinstance(record, ReluSite) and record.name in self.linear:
            return lambda x: x
        return super().layer(record, train)


def build_snl_model(spec: NetSpec, dtype: Any = jnp.float32, mask_granularity: str = "pixel",
                    learnable_masks: bool = True, mask_stem: bool = False) -> SNLNetwork:
    """The masked model SNL searches/fine-tunes (stem linear unless ``mask_stem``)."""
    if mask_granularity not in MASK_GRANULARITIES or mask_granularity is None:
        raise ValueError(f"mask_granularity={mask_granularity!r}; accepted: channel, pixel")
    return SNLNetwork(spec, dtype=dtype, mask_granularity=mask_granularity,
                      learnable_masks=learnable_masks, linear=linear_sites(spec, mask_stem))


__all__ = ["STEM_SITE", "SNLNetwork", "as_float32", "build_snl_model", "linear_sites"]


def as_float32(tree: Any) -> Any:
    """Host numpy tree -> float32 jax arrays (mask values, loaded variables)."""
    return jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)
