"""The PyTorch reference of the benchmark (skipped without torch, the optional bench extra)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from bench.torch_reference import (ReferenceNet, ReuseConv2d, TorchStep,  # noqa: E402
                                   count_parameters, load_flax_variables)
from hybrenet_jax.counts import count  # noqa: E402
from hybrenet_jax.model_string import spec_from_model_string  # noqa: E402
from hybrenet_jax.models import build_model, input_shape  # noqa: E402

NETWORKS = ["resnet18", "hrn-5x5x3x", "hrn-2x5x3x:m=16", "hrn-2x5x3x:m=16,cull=S1,thin=S2+S3+S4",
            "hrn-2x5x3x:m=16,cull=S1,thin=S2+S3+S4,reuse=4", "wrn22x8", "hrn-2x2x2x:m=8,reuse=2",
            "resnet18:reuse=8,reuse_split=equal,reuse_link=off",
            "resnet18:m=16,reuse=16,reuse_layers=alternate"]


@pytest.mark.parametrize("network", NETWORKS)
def test_parameter_count_equals_counts(network):
    spec = spec_from_model_string(network)
    assert count_parameters(ReferenceNet(spec)) == count(spec).params


def test_reuse_variant_uses_the_grouped_layout():
    spec = spec_from_model_string("hrn-2x5x3x:m=16,cull=S1,thin=S2+S3+S4,reuse=4")
    model = ReferenceNet(spec)
    grouped = [m for m in model.modules() if isinstance(m, ReuseConv2d)]
    assert grouped  # every conv feeding a kept ReLU of a reuse stage
    assert sum(m.weight.numel() for g in grouped for m in g.modules()
               if isinstance(m, torch.nn.Conv2d)) > 0


@pytest.mark.parametrize("network", [
    "hrn-2x2x2x:m=4,cull=S1,thin=S2,reuse=4", "wrn10x1",
    "hrn-2x2x2x:m=8,reuse=4,reuse_split=equal,reuse_layers=alternate",
    "hrn-2x2x2x:m=8,reuse=8,reuse_link=off"])
def test_same_function_as_our_model(network):
    spec = spec_from_model_string(network)
    ours = build_model(spec)
    variables = ours.init(jax.random.PRNGKey(0), jnp.zeros(input_shape(spec, 1)))
    # random BatchNorm scales, shifts and statistics: each Re2 group must use its own slice
    rng = np.random.default_rng(1)
    variables = jax.tree_util.tree_map_with_path(
        lambda path, v: rng.uniform(0.5, 1.5, v.shape).astype(np.float32)
        if jax.tree_util.keystr(path).endswith(("['scale']", "['var']"))
        else (rng.normal(0.0, 0.3, v.shape).astype(np.float32)
              if jax.tree_util.keystr(path).endswith(("['bias']", "['mean']")) else v),
        variables)
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
    ref = np.asarray(ours.apply(variables, x, train=False))
    model = ReferenceNet(spec)
    load_flax_variables(model, variables)
    model.eval()
    with torch.no_grad():
        got = model(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())


def test_torch_step_trains():
    step = TorchStep(spec_from_model_string("hrn-2x2x2x:m=4"), 8)
    before = [p.detach().clone() for p in step.model.parameters()]
    step.run()
    step.run()
    assert np.isfinite(step.loss())
    assert any(not torch.equal(a, b) for a, b in zip(before, step.model.parameters()))
