"""Pure-functional Flax (linen) models generated from the network description.

:func:`build_model` turns a :class:`~hybrenet_jax.netspec.NetSpec` into one generic module
tree: :class:`Network` walks the blocks of :func:`~hybrenet_jax.architecture.expand` and maps
every layer record to a Flax layer of the same name, so parameter paths read
``params/stage2_block1_conv1/kernel``. There is no per-family model code: the block kinds
(``stem``, ``basic``, ``preact``, ``plain``, ``head``) only decide how the residual sum is wired.

ReLU placement comes from the description: culled and thinned sites are the identity, kept
sites apply ``max(x, 0)`` (only to the relu group under ReLU-reuse, see
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

from hybrenet_jax.architecture import (Architecture, BatchNorm, Block, Conv, Dense, Pool,
                                       ReluSite, expand, reuse_split)
from hybrenet_jax.errors import DescriptionError
from hybrenet_jax.netspec import NetSpec

MASK_GRANULARITIES = (None, "channel", "pixel")
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def relu(x: jnp.ndarray) -> jnp.ndarray:
    """The ReLU used everywhere: ``max(x, 0)`` (what :mod:`hybrenet_jax.trace` counts)."""
    return jnp.maximum(x, 0)


class ReuseConv(nn.Module):
    """A ReLU-reuse grouped conv (:class:`~hybrenet_jax.architecture.Conv` with ``reuse > 1``).

    Output channels are ``[reuse | relu | linear]`` (N >= 4) or ``[relu | linear]`` (N = 2);
    each group convolves only its own input channels; the reuse group is the identity or a
    strided 1x1 projection.
    """

    layer: Conv
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        c = self.layer
        r_in, p_in, _ = reuse_split(c.in_ch, c.reuse)
        r_out, p_out, l_out = reuse_split(c.out_ch, c.reuse)
        xr, xp, xl = x[..., :r_in], x[..., r_in:r_in + p_in], x[..., r_in + p_in:]
        parts = []
        if r_out:
            if c.reuse_needs_projection:
                parts.append(_conv(r_out, 1, c.stride, self.dtype, "reuse")(xr))
            else:
                parts.append(xr)
        parts.append(_conv(p_out, c.kernel, c.stride, self.dtype, "relu_group")(xp))
        parts.append(_conv(l_out, c.kernel, c.stride, self.dtype, "linear_group")(xl))
        return jnp.concatenate(parts, axis=-1)


def _conv(features: int, kernel: int, stride: int, dtype: Any, name: str) -> nn.Conv:
    pad = kernel // 2
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((pad, pad), (pad, pad)), use_bias=False, dtype=dtype, name=name)


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
        r, p, _ = reuse_split(s.channels, s.reuse)
        group = x[..., r:r + p]
        activated = relu(group)
        if self.mask_granularity is not None:
            shape = (p,) if self.mask_granularity == "channel" else (*x.shape[1:-1], p)
            if self.learnable_masks:
                mask = self.param("mask", nn.initializers.ones, shape, jnp.float32)
            else:
                mask = self.variable("relu_masks", "mask", jnp.ones, shape, jnp.float32).value
            mask = mask.astype(x.dtype)
            activated = mask * activated + (1 - mask) * group
        if s.reuse == 1:
            return activated
        # Res2Net-style link: the ReLU group's output feeds the first p linear channels.
        linear = x[..., r + p:]
        linear = jnp.concatenate([linear[..., :p] + activated, linear[..., p:]], axis=-1)
        return jnp.concatenate([x[..., :r], activated, linear], axis=-1)


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
                return ReuseConv(record, self.dtype, name=record.name)
            return _conv(record.out_ch, record.kernel, record.stride, self.dtype, record.name)
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
        for record in layers:
            x = self.layer(record, train)(x)
        return x

    def block(self, block: Block, x: jnp.ndarray, train: bool) -> jnp.ndarray:
        if block.kind == "basic":
            y = self.run(block.main, x, train)
            s = self.run(block.shortcut, x, train)
            return self.run(block.after_add, y + s, train)
        if block.kind == "preact":
            a = self.run(block.main[:2], x, train)  # bn1, relu1
            s = self.run(block.shortcut, a, train) if block.shortcut else x
            return self.run(block.main[2:], a, train) + s
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
