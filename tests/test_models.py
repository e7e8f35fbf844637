"""Flax models built from the description: traced counts equal analytic counts, forward passes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hybrenet_jax.counts import count
from hybrenet_jax.errors import DescriptionError
from hybrenet_jax.model_string import spec_from_model_string
from hybrenet_jax.models import build_model, input_shape
from hybrenet_jax.trace import measure

FAMILY_MODELS = [
    ("resnet18", "cifar100"), ("resnet34", "cifar100"), ("resnet20", "cifar10"),
    ("resnet32", "cifar100"), ("resnet56", "cifar100"), ("wrn22x8", "cifar100"),
    ("wrn16x4", "tinyimagenet"), ("vgg16", "cifar10"), ("vgg16", "tinyimagenet"),
    ("resnet18:m=16", "cifar100"), ("stagech-4x4x4x", "cifar100"), ("hrn-5x5x3x", "cifar100"),
    ("hrn-2x6x3x:depths=3-4-6-3", "tinyimagenet"), ("convnext-p", "tinyimagenet"),
    ("regnetx-200mf", "cifar100"), ("resnet18:widths=16-32-160-480", "cifar100"),
]
VARIANTS = [
    "hrn-5x5x3x:thin=S1+S2+S3+S4",
    "hrn-2x5x3x:cull=S1,thin=S2+S3+S4",
    "hrn-2x5x3x:cull=S1,thin=S2+S3+S4,reuse=4",
    "hrn-2x5x3x:cull=S1,thin=S2+S3+S4,reuse=8",
    "hrn-2x5x3x:cull=S1,thin=S2+S3+S4,reuse=16",
    "resnet18:m=16,reuse=2",
    "resnet18:m=32,reuse=4",
    "wrn16x2:cull=S1,thin=S2+S3",
    "vgg16:thin=S1+S2+S3+S4+S5",
    "vgg16:cull=S1,reuse=4",
    "vgg16:cull=S1,reuse=8,reuse_split=equal,reuse_layers=alternate",
    "resnet18:m=16,reuse=16,reuse_split=equal,reuse_link=off",
    "resnet20:cull=S3",
]


def assert_traced_equals_analytic(spec):
    measured, analytic = measure(spec), count(spec)
    assert (measured.relus, measured.macs, measured.params) == (
        analytic.relus, analytic.macs, analytic.params), spec.name


@pytest.mark.parametrize("model,dataset", FAMILY_MODELS)
def test_every_family_traced_counts_equal_analytic(model, dataset):
    assert_traced_equals_analytic(spec_from_model_string(model, dataset))


@pytest.mark.parametrize("model", VARIANTS)
def test_relu_optimized_variants_traced_counts_equal_analytic(model):
    assert_traced_equals_analytic(spec_from_model_string(model))


@st.composite
def random_hrn(draw):
    stages = draw(st.integers(2, 4))
    mult = draw(st.lists(st.integers(1, 6), min_size=stages - 1, max_size=stages - 1))
    depths = draw(st.lists(st.integers(1, 3), min_size=stages, max_size=stages))
    reuse = draw(st.sampled_from([1, 2, 4, 8]))
    m = draw(st.sampled_from([8, 16, 24])) if reuse < 8 else draw(st.sampled_from([8, 16]))
    names = [f"S{i}" for i in range(1, stages + 1)]
    chosen = draw(st.lists(st.sampled_from(names), unique=True, max_size=stages))
    split = draw(st.integers(0, len(chosen)))
    cull, thin = chosen[:split], chosen[split:]
    opts = [f"m={m}", "depths=" + "-".join(map(str, depths))]
    if cull:
        opts.append("cull=" + "+".join(cull))
    if thin:
        opts.append("thin=" + "+".join(thin))
    if reuse > 1:
        opts.append(f"reuse={reuse}")
    dataset = draw(st.sampled_from(["cifar100", "tinyimagenet"]))
    return "hrn-" + "".join(f"{x}x" for x in mult) + ":" + ",".join(opts), dataset


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_hrn())
def test_random_hrns_traced_counts_equal_analytic(case):
    model, dataset = case
    try:
        spec = spec_from_model_string(model, dataset)
    except DescriptionError:  # e.g. a reuse factor that does not divide a width
        return
    assert_traced_equals_analytic(spec)


# -- forward passes ------------------------------------------------------------------------
SMALL = [
    ("resnet18:m=4", "cifar100"), ("resnet18:m=4", "tinyimagenet"), ("resnet20:m=4", "cifar10"),
    ("wrn10x1:m=4", "cifar100"), ("wrn10x1:m=4", "tinyimagenet"), ("vgg16:m=4", "cifar10"),
    ("hrn-2x2x2x:m=8,cull=S1,thin=S2+S3+S4,reuse=4", "cifar100"),
    ("hrn-2x2x2x:m=8,thin=S1+S2,reuse=8", "tinyimagenet"), ("convnext-a:m=4", "cifar100"),
]


@pytest.mark.parametrize("model,dataset", SMALL)
def test_forward_pass_jits_runs_and_is_deterministic(model, dataset):
    spec = spec_from_model_string(model, dataset)
    net = build_model(spec)
    x = jax.random.normal(jax.random.PRNGKey(1), input_shape(spec, 2))
    variables = jax.jit(net.init)(jax.random.PRNGKey(0), x)
    apply = jax.jit(lambda v, x: net.apply(v, x, train=False))
    y1, y2 = apply(variables, x), apply(variables, x)
    assert y1.shape == (2, spec.classes) and y1.dtype == jnp.float32
    assert bool(jnp.all(jnp.isfinite(y1)))
    np.testing.assert_array_equal(np.asarray(y1), np.asarray(y2))
    logits, updates = jax.jit(lambda v, x: net.apply(v, x, train=True, mutable=["batch_stats"]))(
        variables, x)
    assert bool(jnp.all(jnp.isfinite(logits)))
    assert jax.tree.structure(updates["batch_stats"]) == jax.tree.structure(
        variables["batch_stats"])


def test_bfloat16_compute_keeps_float32_params():
    spec = spec_from_model_string("hrn-2x2x:m=8,depths=1-1-1,reuse=4")
    net = build_model(spec, dtype=jnp.bfloat16)
    x = jnp.ones(input_shape(spec, 2))
    variables = jax.jit(net.init)(jax.random.PRNGKey(0), x)
    assert {leaf.dtype for leaf in jax.tree.leaves(variables["params"])} == {jnp.dtype("float32")}
    y = jax.jit(net.apply)(variables, x)
    assert y.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(y)))
    ref = jax.jit(build_model(spec).apply)(variables, x)
    np.testing.assert_allclose(np.asarray(y), np.asarray(ref), rtol=0.1, atol=0.1)


def test_parameter_paths_use_layer_names():
    spec = spec_from_model_string("hrn-2x2x2x:m=8,cull=S1,thin=S2+S3+S4,reuse=4")
    variables = jax.eval_shape(build_model(spec).init, jax.random.PRNGKey(0),
                               jnp.ones(input_shape(spec)))
    params = variables["params"]
    assert params["stage2_block1_shortcut_conv"]["kernel"].shape == (1, 1, 8, 16)
    reuse = params["stage3_block2_conv1"]
    assert set(reuse) == {"relu_group", "linear_group"}  # same shape: reuse group is identity
    assert reuse["relu_group"]["kernel"].shape == (3, 3, 8, 8)
    assert reuse["linear_group"]["kernel"].shape == (3, 3, 16, 16)
    assert "reuse" in params["stage3_block1_conv1"]  # shape change: 1x1 projection
    # the BatchNorm after a Re2 conv keeps its own name and all C channels
    assert variables["batch_stats"]["stage3_block2_bn1"]["mean"].shape == (32,)
    assert params["stage3_block2_bn1"]["scale"].shape == (32,)
    equal = jax.eval_shape(build_model(spec.replace(reuse_split="equal")).init,
                           jax.random.PRNGKey(0), jnp.ones(input_shape(spec)))["params"]
    assert set(equal["stage3_block2_conv1"]) == {"linear_group1", "linear_group2",
                                                 "linear_group3", "relu_group"}


# -- fine-grained masks --------------------------------------------------------------------
def _init(net, spec):
    x = jax.random.normal(jax.random.PRNGKey(3), input_shape(spec, 2))
    return x, jax.jit(net.init)(jax.random.PRNGKey(0), x)


@pytest.mark.parametrize("granularity,shape", [("channel", (16,)), ("pixel", (32, 32, 16))])
def test_mask_shapes_and_collections(granularity, shape):
    spec = spec_from_model_string("resnet18:m=16,thin=S2")
    x = jnp.ones(input_shape(spec))
    learn = jax.eval_shape(build_model(spec, mask_granularity=granularity).init,
                           jax.random.PRNGKey(0), x)
    assert learn["params"]["stem_relu"]["mask"].shape == shape
    assert "stage2_block1_relu2" not in learn["params"]  # thinned: no ReLU, no mask
    fixed = jax.eval_shape(build_model(spec, mask_granularity=granularity,
                                       learnable_masks=False).init, jax.random.PRNGKey(0), x)
    assert "stem_relu" not in fixed["params"]
    assert fixed["relu_masks"]["stem_relu"]["mask"].shape == shape


def test_all_ones_mask_equals_plain_relu_and_zero_mask_equals_culling():
    spec = spec_from_model_string("resnet20:m=4")
    masked = build_model(spec, mask_granularity="channel", learnable_masks=False)
    x, variables = _init(masked, spec)
    plain = {"params": variables["params"], "batch_stats": variables["batch_stats"]}
    y_plain = build_model(spec).apply(plain, x)
    np.testing.assert_allclose(masked.apply(variables, x), y_plain, rtol=1e-6, atol=1e-6)
    zeros = jax.tree.map(jnp.zeros_like, variables["relu_masks"])
    y_zero = masked.apply({**variables, "relu_masks": zeros}, x)
    culled = spec_from_model_string("resnet20:m=4,cull=S1+S2+S3")
    y_culled = build_model(culled).apply(plain, x)
    np.testing.assert_allclose(y_zero, y_culled, rtol=1e-5, atol=1e-5)


def test_unknown_mask_granularity_is_rejected():
    with pytest.raises(DescriptionError, match="accepted: None, 'channel', 'pixel'"):
        build_model(spec_from_model_string("resnet20"), mask_granularity="layer")


def test_culled_model_is_linear_in_eval_mode():
    spec = spec_from_model_string("resnet20:m=4,cull=S1+S2+S3")
    net = build_model(spec)
    x, variables = _init(net, spec)
    variables = {**variables, "batch_stats": jax.tree.map(lambda a: a + 0.5,
                                                          variables["batch_stats"])}
    f = jax.jit(lambda x: net.apply(variables, x))
    zero = f(jnp.zeros_like(x))
    lhs = f(2.0 * x) - zero
    rhs = 2.0 * (f(x) - zero)
    np.testing.assert_allclose(lhs, rhs, rtol=1e-4, atol=1e-4)
