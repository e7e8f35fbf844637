"""hybrenet_jax.fastconv: same forward as the plain conv, gradients equal to jax.grad's."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from bench import fastconv

DN = ("NHWC", "HWIO", "NHWC")


def _plain(x, w, stride):
    k = w.shape[0]
    pad = ((k // 2, k // 2), (k // 2, k // 2))
    return lax.conv_general_dilated(x, w, (stride, stride), pad, dimension_numbers=DN)


def _inputs(kernel, cin=6, cout=5, hw=8, batch=3):
    kx, kw, kg = jax.random.split(jax.random.PRNGKey(kernel * 10 + cin), 3)
    x = jax.random.normal(kx, (batch, hw, hw, cin))
    w = jax.random.normal(kw, (kernel, kernel, cin, cout)) * 0.3
    return x, w, kg


@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("kernel", [1, 3])
def test_forward_identical_and_gradients_match(stride, kernel):
    x, w, kg = _inputs(kernel)
    y_ref = _plain(x, w, stride)
    y = fastconv.conv(x, w, (stride, stride))
    np.testing.assert_array_equal(np.asarray(y), np.asarray(y_ref))
    target = jax.random.normal(kg, y_ref.shape)

    def loss(f):
        return lambda x_, w_: jnp.sum(jnp.tanh(f(x_, w_)) * target)

    ref = jax.jit(jax.grad(loss(lambda a, b: _plain(a, b, stride)), argnums=(0, 1)))(x, w)
    got = jax.jit(jax.grad(loss(lambda a, b: fastconv.conv(a, b, (stride, stride))),
                           argnums=(0, 1)))(x, w)
    for g, r in zip(got, ref):
        np.testing.assert_allclose(np.asarray(g), np.asarray(r), rtol=1e-4, atol=1e-5)


def test_weight_gradient_odd_sizes_and_asymmetric_padding():
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 7, 9, 4))
    w = jax.random.normal(jax.random.PRNGKey(2), (3, 3, 4, 3))
    pad = ((0, 1), (2, 1))
    f_ref = lambda w_: lax.conv_general_dilated(x, w_, (2, 2), pad, dimension_numbers=DN)
    y, vjp = jax.vjp(f_ref, w)
    g = jax.random.normal(jax.random.PRNGKey(3), y.shape)
    (ref,) = vjp(g)
    got = fastconv.weight_gradient(x, g, (3, 3), (2, 2), pad)
    np.testing.assert_allclose(np.asarray(got), np.asarray(ref), rtol=1e-4, atol=1e-5)


def test_flax_conv_hook_matches_plain_conv():
    x, _, _ = _inputs(3, cin=4, cout=8)
    plain = nn.Conv(8, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=False)
    fast = nn.Conv(8, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)), use_bias=False,
                   conv_general_dilated=fastconv.conv_general_dilated)
    params = plain.init(jax.random.PRNGKey(0), x)
    np.testing.assert_array_equal(np.asarray(fast.apply(params, x)),
                                  np.asarray(plain.apply(params, x)))

    def loss(module):
        return lambda p: jnp.sum(module.apply(p, x) ** 2)

    ref = jax.grad(loss(plain))(params)
    got = jax.grad(loss(fast))(params)
    np.testing.assert_allclose(np.asarray(got["params"]["kernel"]),
                               np.asarray(ref["params"]["kernel"]), rtol=1e-4, atol=1e-4)


def test_unsupported_calls_fall_back_to_lax():
    x, w, _ = _inputs(3, cin=4, cout=4)
    grouped = w[:, :, :2, :]
    for kwargs, rhs in (({"feature_group_count": 2}, grouped), ({}, w)):
        padding = "SAME" if not kwargs else ((1, 1), (1, 1))
        got = fastconv.conv_general_dilated(x, rhs, (1, 1), padding, dimension_numbers=DN,
                                            **kwargs)
        ref = lax.conv_general_dilated(x, rhs, (1, 1), padding, dimension_numbers=DN, **kwargs)
        np.testing.assert_array_equal(np.asarray(got), np.asarray(ref))
