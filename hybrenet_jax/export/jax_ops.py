"""JAX back end of the folded graph: evaluates a :class:`FoldedNetwork` on NHWC images.

Used to check folding on its own (folded vs. unfolded Flax model) and to verify the folded
weights of a bundle without ONNX.
"""

from __future__ import annotations

from typing import Sequence

import jax.numpy as jnp
import numpy as np
from jax import lax

from hybrenet_jax.export.folding import FoldedNetwork
from hybrenet_jax.export.graph import run_folded


class JaxOps:
    """:class:`~hybrenet_jax.export.graph.Ops` on NHWC ``jnp`` arrays (float32)."""

    def conv(self, x, name: str, kernel: np.ndarray, bias: np.ndarray | None, stride: int,
             groups: int = 1):
        pad = kernel.shape[0] // 2
        y = lax.conv_general_dilated(x, jnp.asarray(kernel), (stride, stride),
                                     ((pad, pad), (pad, pad)),
                                     dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                     feature_group_count=groups,
                                     precision=lax.Precision.HIGHEST)
        return y if bias is None else y + jnp.asarray(bias)

    def channels(self, x, start: int, stop: int, name: str):
        return x[..., start:stop]

    def concat(self, xs: Sequence, name: str):
        return jnp.concatenate(list(xs), axis=-1)

    def affine(self, x, name: str, scale: np.ndarray, shift: np.ndarray):
        return x * jnp.asarray(scale) + jnp.asarray(shift)

    def relu(self, x, name: str):
        return jnp.maximum(x, 0)

    def add(self, a, b, name: str):
        return a + b

    def pool(self, x, name: str, kind: str):
        if kind == "global":
            return jnp.mean(x, axis=(1, 2))
        n, h, w, c = x.shape
        return x.reshape(n, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))

    def dense(self, x, name: str, kernel: np.ndarray, bias: np.ndarray, in_hwc):
        x = x.reshape(x.shape[0], -1)
        return jnp.dot(x, jnp.asarray(kernel), precision=lax.Precision.HIGHEST) + \
            jnp.asarray(bias)


def apply_folded(net: FoldedNetwork, images: np.ndarray) -> np.ndarray:
    """Logits of the folded network for a batch of NHWC float32 images."""
    return np.asarray(run_folded(net, JaxOps(), jnp.asarray(images, jnp.float32)))
