"""A benchmark experiment: a convolution with a hand-written backward pass for XLA:CPU (issue 8).

:func:`conv_general_dilated` is a drop-in replacement for ``lax.conv_general_dilated`` that
Flax's ``nn.Conv`` accepts through its ``conv_general_dilated=`` field. For the case the
models use -- 2-D NHWC/HWIO convolutions with explicit non-negative padding, unit dilation and
no feature groups -- it calls :func:`conv`, a ``jax.custom_vjp`` whose

* forward is ``lax.conv_general_dilated`` exactly as ``nn.Conv`` calls it (so outputs are
  bit-identical to the plain conv);
* input gradient is the transposed convolution, obtained with ``jax.linear_transpose`` of the
  forward (the same HLO that JAX's own rule produces);
* weight gradient is one matrix product per kernel tap:
  ``dW[i, j] = X_ij^T @ G`` where ``X_ij`` is the (strided) shifted window of the padded input
  flattened to ``[N*Ho*Wo, C_in]`` and ``G`` the output gradient as ``[N*Ho*Wo, C_out]``.

XLA:CPU lowers the weight gradient of a convolution to a convolution whose window is the whole
feature map (after transposing both operands to channel-major layouts); the per-tap products
avoid that. Any other call (strings as padding, dilation, grouped convolutions, other layouts)
falls back to ``lax.conv_general_dilated`` unchanged.

Whether this is faster depends on the backend and on the layer; ``docs/benchmarks.md``
records what it measured (mixed: not faster on this project's CPUs, so no model uses it).
``bench.throughput --fast-conv`` times our step with it (``bench/ours.py:fast_conv_patch``).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax import lax

__all__ = ["conv", "conv_general_dilated", "weight_gradient"]

_NHWC = ("NHWC", "HWIO", "NHWC")
_NHWC_NUMBERS = lax.conv_dimension_numbers((1, 1, 1, 1), (1, 1, 1, 1), _NHWC)


def _plain(x, w, strides, padding):
    return lax.conv_general_dilated(x, w, strides, padding, dimension_numbers=_NHWC)


def weight_gradient(x: jnp.ndarray, g: jnp.ndarray, kernel: tuple[int, int],
                    strides: tuple[int, int], padding: tuple[tuple[int, int], ...],
                    dtype: Any = None) -> jnp.ndarray:
    """Gradient of a NHWC/HWIO convolution with respect to its kernel, tap by tap.

    Args:
      x: the convolution's input ``[N, H, W, C_in]``.
      g: the gradient of its output ``[N, Ho, Wo, C_out]``.
      kernel: ``(KH, KW)``.
      strides: ``(SH, SW)``.
      padding: ``((top, bottom), (left, right))``, non-negative.
      dtype: result dtype (default: ``x.dtype``).

    Returns:
      ``[KH, KW, C_in, C_out]``; products are accumulated in float32.
    """
    n, _, _, cin = x.shape
    _, ho, wo, cout = g.shape
    kh, kw = kernel
    sh, sw = strides
    if any(p for pair in padding for p in pair):
        x = jnp.pad(x, ((0, 0), tuple(padding[0]), tuple(padding[1]), (0, 0)))
    g2 = g.reshape(n * ho * wo, cout)
    taps = []
    for i in range(kh):
        for j in range(kw):
            window = lax.slice(x, (0, i, j, 0), (n, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1,
                                                 cin), (1, sh, sw, 1))
            taps.append(lax.dot_general(window.reshape(n * ho * wo, cin), g2,
                                        (((0,), (0,)), ((), ())),
                                        preferred_element_type=jnp.float32))
    return jnp.stack(taps).reshape(kh, kw, cin, cout).astype(dtype or x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv(x, w, strides, padding):
    return _plain(x, w, strides, padding)


def _conv_fwd(x, w, strides, padding):
    return _plain(x, w, strides, padding), (x, w)


def _conv_bwd(strides, padding, residuals, g):
    x, w = residuals
    (dx,) = jax.linear_transpose(lambda x_: _plain(x_, w, strides, padding), x)(g)
    dw = weight_gradient(x, g, w.shape[:2], strides, padding, dtype=w.dtype)
    return dx, dw


_conv.defvjp(_conv_fwd, _conv_bwd)


def conv(x: jnp.ndarray, w: jnp.ndarray, strides: Sequence[int] = (1, 1),
         padding: Sequence[Sequence[int]] | None = None) -> jnp.ndarray:
    """NHWC/HWIO convolution with the per-tap weight gradient.

    ``padding=None`` means symmetric ``k // 2`` (what the models use).
    """
    if padding is None:
        padding = tuple((k // 2, k // 2) for k in w.shape[:2])
    strides = tuple(int(s) for s in strides)
    padding = tuple((int(lo), int(hi)) for lo, hi in padding)
    return _conv(x, w, strides, padding)


def _is_nhwc(dimension_numbers) -> bool:
    if dimension_numbers is None:
        return False
    if isinstance(dimension_numbers, lax.ConvDimensionNumbers):
        return dimension_numbers == _NHWC_NUMBERS
    try:
        return tuple(dimension_numbers) == _NHWC
    except TypeError:
        return False


def _unit(values) -> bool:
    return values is None or all(int(v) == 1 for v in values)


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None, feature_group_count=1,
                         batch_group_count=1, precision=None, preferred_element_type=None):
    """``lax.conv_general_dilated`` with :func:`conv`'s backward pass where it applies.

    Pass it to Flax: ``nn.Conv(..., conv_general_dilated=fastconv.conv_general_dilated)``.
    """
    explicit = not isinstance(padding, str) and all(
        len(pair) == 2 and min(pair) >= 0 for pair in padding)
    if (jnp.ndim(lhs) == 4 and _is_nhwc(dimension_numbers) and explicit
            and _unit(lhs_dilation) and _unit(rhs_dilation) and feature_group_count == 1
            and batch_group_count == 1 and precision is None and preferred_element_type is None
            and lhs.dtype == rhs.dtype):
        return conv(lhs, rhs, window_strides, padding)
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation,
                                    rhs_dilation, dimension_numbers, feature_group_count,
                                    batch_group_count, precision, preferred_element_type)
