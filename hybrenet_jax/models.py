"""Pure-functional Flax (linen) models generated from the network description.

:func:`build_model` turns a :class:`~hybrenet_jax.netspec.NetSpec` into one generic module
tree: :class:`Network` walks the blocks of :func:`~hybrenet_jax.architecture.expand` and maps
every layer record to a Flax layer of the same name, so parameter paths read
``params/stage2_block1_conv1/kernel``. There is no per-family model code: the block kinds
(``stem``, ``basic``, ``bottleneck``, ``preact``, ``plain``, ``head``) only decide how the
residual sum is wired; a grouped conv record (RegNet-X) is an ``nn.Conv`` with
``feature_group_count``.

ReLU placement comes from the description: culled and thinned sites are the identity, kept
sites apply ``max(x, 0)`` (only to the last, ReLU group under ReLU-reuse). A ReLU-reuse conv
and the BatchNorm after it run as one :class:`ReuseConv`: its groups in order, each normalised
by its slice of the BatchNorm before it feeds the next group (see
:mod:`hybrenet_jax.architecture`). Every kept site can also carry a fine-grained mask
(``mask_granularity="channel"`` or ``"pixel"``): ``y = m * relu(x) + (1 - m) * x``, so a mask
value of 0 makes that activation linear (the SNL parameterisation). Masks live in the
``params`` collection when learnable, else in the ``relu_masks`` collection.

Layouts are NHWC; convs use symmetric padding k//2 (as PyTorch/ONNX do). ``dtype`` sets the
compute dtype (e.g. ``jnp.bfloat16``) while parameters stay float32.
"""

from __future__ import annotations

from typing import Any, Callable

import flax.linen as nn
import jax.numpy as jnp
from jax import lax

from hybrenet_jax.architecture import (RESIDUAL, Architecture, BatchNorm, Block, Conv, Dense, Pool,
                                       ReluSite, expand)
from hybrenet_jax.errors import DescriptionError
from hybrenet_jax.netspec import NetSpec

MASK_GRANULARITIES = (None, "channel", "pixel")
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def relu(x: jnp.ndarray) -> jnp.ndarray:
    """The ReLU used everywhere: ``max(x, 0)`` (what :mod:`hybrenet_jax.trace` counts)."""
    return jnp.maximum(x, 0)


class SlicedBatchNorm(nn.Module):
    """BatchNorm over ``channels`` features, applied to one channel slice per call.

    The same variables (``scale``, ``bias``; ``batch_stats`` ``mean``, ``var``) and arithmetic
    as ``nn.BatchNorm(use_fast_variance=False)``; a Re2 layer normalises each group's output
    with its slice before the next group reads it.
    """

    channels: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, start: int, train: bool) -> jnp.ndarray:
        stop = start + x.shape[-1]
        shape = (self.channels,)
        scale = self.param("scale", nn.initializers.ones, shape, jnp.float32)[start:stop]
        bias = self.param("bias", nn.initializers.zeros, shape, jnp.float32)[start:stop]
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, shape, jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, shape, jnp.float32)
        if train:
            xf = x.astype(jnp.promote_types(self.dtype, jnp.float32))
            axes = tuple(range(x.ndim - 1))
            mean = xf.mean(axes)
            var = jnp.square(xf - mean).mean(axes)
            if not self.is_initializing():
                for v, new in ((ra_mean, mean), (ra_var, var)):
                    old = v.value[start:stop]
                    v.value = v.value.at[start:stop].set(BN_MOMENTUM * old
                                                          + (1 - BN_MOMENTUM) * new)
        else:
            mean, var = ra_mean.value[start:stop], ra_var.value[start:stop]
        y = (x - mean) * (lax.rsqrt(var + BN_EPSILON) * scale) + bias
        return y.astype(self.dtype)


def add_link(x: jnp.ndarray, previous: jnp.ndarray, channels: int) -> jnp.ndarray:
    """``x`` with the first ``channels`` of ``previous`` added onto its first channels."""
    if channels == x.shape[-1]:
        return x + previous[..., :channels]
    return jnp.concatenate([x[..., :channels] + previous[..., :channels], x[..., channels:]],
                           axis=-1)


class ReuseConv(nn.Module):
    """A ReLU-reuse conv and its BatchNorm (:meth:`~hybrenet_jax.architecture.Conv.groups`).

    Groups run in order: input slice (plus the previous group's normalised output where the
    group links), conv (the identity for a pass-through reuse group), the group's BatchNorm
    slice; the outputs are concatenated. ``norm`` is the network's BatchNorm module, so its
    variables keep the BatchNorm's own name.
    """

    layer: Conv
    norm: SlicedBatchNorm
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        outs: list[jnp.ndarray] = []
        for g in self.layer.groups():
            h = x[..., g.in_start:g.in_stop]
            if g.link:
                h = add_link(h, outs[-1], g.link)
            if not g.is_identity:
                h = _conv(g.out_ch, g.kernel, self.layer.stride, self.dtype, g.name)(h)
            outs.append(self.norm(h, g.out_start, train))
        return jnp.concatenate(outs, axis=-1)


def _conv(features: int, kernel: int, stride: int, dtype: Any, name: str,
          groups: int = 1) -> nn.Conv:
    pad = kernel // 2
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((pad, pad), (pad, pad)), use_bias=False, dtype=dtype,
                   feature_group_count=groups, name=name)


class ReluGate(nn.Module):
    """A ReLU position: identity when culled/thinned, (masked, reuse-aware) ReLU when kept."""

    site: ReluSite
    mask_granularity: str | None = None
    learnable_masks: bool = True

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        s = self.site
        if not s.kept:
            return x
        start, p = s.relu_start, s.active_channels
        group = x[..., start:]
        activated = relu(group)
        if self.mask_granularity is not None:
            shape = (p,) if self.mask_granularity == "channel" else (*x.shape[1:-1], p)
            if self.learnable_masks:
                mask = self.param("mask", nn.initializers.ones, shape, jnp.float32)
            else:
                mask = self.variable("relu_masks", "mask", jnp.ones, shape, jnp.float32).value
            mask = mask.astype(x.dtype)
            activated = mask * activated + (1 - mask) * group
        if start == 0:
            return activated
        return jnp.concatenate([x[..., :start], activated], axis=-1)


class Network(nn.Module):
    """The model for one :class:`NetSpec`; see the module docstring.

    Attributes:
      spec: the network description.
      dtype: compute dtype (parameters are always float32).
      mask_granularity: ``None``, ``"channel"`` or ``"pixel"`` fine-grained ReLU masks.
      learnable_masks: masks in ``params`` (True) or in the fixed ``relu_masks`` collection.
    """

    spec: NetSpec
    dtype: Any = jnp.float32
    mask_granularity: str | None = None
    learnable_masks: bool = True

    @property
    def architecture(self) -> Architecture:
        return expand(self.spec)

    def layer(self, record, train: bool) -> Callable[[jnp.ndarray], jnp.ndarray]:
        """The Flax callable for one layer record (named after it)."""
        if isinstance(record, Conv):
            if record.reuse > 1:
                raise TypeError(f"{record.name} is a ReLU-reuse conv: it runs together with its "
                                "BatchNorm (see Network.run)")
            return _conv(record.out_ch, record.kernel, record.stride, self.dtype, record.name,
                         record.feature_groups)
        if isinstance(record, BatchNorm):
            # two-pass variance: E[x^2]-E[x]^2 cancels badly in float32 and made the batch
            # statistics depend on how the batch is split over devices
            return nn.BatchNorm(use_running_average=not train, momentum=BN_MOMENTUM,
                                epsilon=BN_EPSILON, dtype=self.dtype, use_fast_variance=False,
                                name=record.name)
        if isinstance(record, ReluSite):
            return ReluGate(record, self.mask_granularity, self.learnable_masks,
                            name=record.name)
        if isinstance(record, Pool):
            if record.kind == "global":
                return lambda x: jnp.mean(x, axis=(1, 2))
            return lambda x: nn.avg_pool(x, (2, 2), strides=(2, 2))
        if isinstance(record, Dense):
            def dense(x, _record=record):
                return nn.Dense(_record.out_features, dtype=self.dtype,
                                name=_record.name)(x.reshape(x.shape[0], -1))
            return dense
        raise TypeError(f"no Flax layer for {record!r}")

    def run(self, layers, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        layers = tuple(layers)
        i = 0
        while i < len(layers):
            record = layers[i]
            if isinstance(record, Conv) and record.reuse > 1:
                bn = layers[i + 1] if i + 1 < len(layers) else None
                if not isinstance(bn, BatchNorm):
                    raise DescriptionError(f"{record.name}: a ReLU-reuse conv must be followed "
                                           "by its BatchNorm")
                norm = SlicedBatchNorm(bn.channels, self.dtype, name=bn.name)
                x = ReuseConv(record, norm, self.dtype, name=record.name)(x, train)
                i += 2
                continue
            x = self.layer(record, train)(x)
            i += 1
        return x

    def block(self, block: Block, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        if block.kind in RESIDUAL:  # wiring as ``architecture.Block`` states it
            k = block.branch_index()
            a = self.run(block.main[:k], x, train)
            s = self.run(block.shortcut, a, train) if block.shortcut else x
            return self.run(block.after_add, self.run(block.main[k:], a, train) + s, train)
        return self.run(block.main, x, train)

    @nn.compact
    def __call__(self, x: jnp.ndarray, train: bool = False) -> jnp.ndarray:
        """Logits (float32) for a batch of NHWC images."""
        x = x.astype(self.dtype)
        for block in self.architecture.blocks:
            x = self.block(block, x, train)
        return x.astype(jnp.float32)


def build_model(spec: NetSpec, dtype: Any = jnp.float32, mask_granularity: str | None = None,
                learnable_masks: bool = True) -> Network:
    """Build the Flax model a spec describes (see :class:`Network`)."""
    if mask_granularity not in MASK_GRANULARITIES:
        raise DescriptionError(f"mask_granularity={mask_granularity!r}; accepted: None, "
                               "'channel', 'pixel'")
    return Network(spec, dtype=dtype, mask_granularity=mask_granularity,
                   learnable_masks=learnable_masks)


def input_shape(spec: NetSpec, batch: int = 1) -> tuple[int, int, int, int]:
    """NHWC input shape of a spec's model."""
    return (batch, spec.input_size, spec.input_size, spec.in_channels)
