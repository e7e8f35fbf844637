"""KD and DKD losses against hand computations in numpy, and the optimizer recipe."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from hybrenet_jax.train.losses import cross_entropy, dkd_loss, kd_loss, topk_correct
from hybrenet_jax.train.state import learning_rate_schedule

S = np.array([[2.0, 0.5, -1.0, 0.0], [0.1, 0.2, 3.0, -0.5]], np.float32)
T = np.array([[1.5, 1.0, -0.5, 0.2], [-1.0, 0.5, 2.0, 0.3]], np.float32)
Y = np.array([0, 2])


def softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_cross_entropy_matches_numpy():
    expected = -np.log(softmax(S)[np.arange(2), Y])
    np.testing.assert_allclose(cross_entropy(jnp.array(S), jnp.array(Y)), expected, rtol=1e-6)
    smoothed = cross_entropy(jnp.array(S), jnp.array(Y), label_smoothing=0.1)
    targets = np.full((2, 4), 0.1 / 4) + 0.9 * np.eye(4)[Y]
    np.testing.assert_allclose(smoothed, -(targets * np.log(softmax(S))).sum(-1), rtol=1e-6)


def test_kd_loss_matches_hinton_formula():
    t = 4.0
    p, q = softmax(T / t), softmax(S / t)
    expected = (p * np.log(p / q)).sum(-1) * t * t
    np.testing.assert_allclose(kd_loss(jnp.array(S), jnp.array(T), t), expected, rtol=1e-5)
    assert float(kd_loss(jnp.array(S), jnp.array(S), t).max()) == pytest.approx(0, abs=1e-6)


def test_dkd_loss_matches_decoupled_formula():
    t, alpha, beta = 4.0, 1.0, 8.0
    ps, pt = softmax(S / t), softmax(T / t)
    out = []
    for i, y in enumerate(Y):
        bs, bt = ps[i, y], pt[i, y]
        tckd = bt * np.log(bt / bs) + (1 - bt) * np.log((1 - bt) / (1 - bs))
        keep = np.arange(4) != y
        qs, qt = softmax(S[i, keep] / t), softmax(T[i, keep] / t)
        nckd = (qt * np.log(qt / qs)).sum()
        out.append((alpha * tckd + beta * nckd) * t * t)
    got = dkd_loss(jnp.array(S), jnp.array(T), jnp.array(Y), alpha, beta, t)
    np.testing.assert_allclose(got, np.array(out), rtol=1e-4, atol=1e-6)


def test_dkd_default_weights_are_the_papers_not_the_dkd_authors():
    """Target weight 1, non-target weight 1 (the paper sweeps 0.8/1/2/6; 8 is DKD's own)."""
    s, t, y = jnp.array(S), jnp.array(T), jnp.array(Y)
    np.testing.assert_allclose(dkd_loss(s, t, y), dkd_loss(s, t, y, 1.0, 1.0, 4.0), rtol=1e-6)
    assert not np.allclose(dkd_loss(s, t, y), dkd_loss(s, t, y, 1.0, 8.0, 4.0))


def test_topk_correct():
    np.testing.assert_array_equal(topk_correct(jnp.array(S), jnp.array([1, 2]), 1), [0, 1])
    np.testing.assert_array_equal(topk_correct(jnp.array(S), jnp.array([1, 2]), 2), [1, 1])


def test_cosine_schedule_with_warmup():
    lr = learning_rate_schedule(0.1, total_steps=110, warmup_steps=10)
    assert float(lr(0)) == 0.0
    assert float(lr(10)) == pytest.approx(0.1)
    assert float(lr(60)) == pytest.approx(0.05, rel=1e-3)
    assert float(lr(110)) == pytest.approx(0.0, abs=1e-7)
