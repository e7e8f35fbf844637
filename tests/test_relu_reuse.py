"""ReLU-reuse (Re2) as published, and its ablations (docs/relu_reuse.md).

The structure is checked where it is computed: on the traced Flax model
(:func:`hybrenet_jax.trace.conv_sources`) and on the exported ONNX graph -- which convs'
outputs reach the input of each group's conv. Counts: the paper's Table 14 (ResNet18,
CIFAR-100, Re2 on one conv layer per BasicBlock).
"""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import tiny_config
from hybrenet_jax.architecture import expand
from hybrenet_jax.counts import count
from hybrenet_jax.export import build_onnx, fold, relu_scalars, run_onnxruntime
from hybrenet_jax.export.verify import TOLERANCE
from hybrenet_jax.model_string import spec_from_model_string
from hybrenet_jax.models import build_model, input_shape
from hybrenet_jax.trace import conv_sources, measure
from hybrenet_jax.train import train_and_evaluate
from test_export import case

#: Table 14 (paper, App. G): ResNet18 on CIFAR-100 with Re2 on alternate conv layers.
TABLE14_RELUS = {2: 434_176, 4: 372_736, 8: 342_016, 16: 326_656}  # 434.18K ... 326.66K

ABLATIONS = [f"reuse_split={s},reuse_link={k},reuse_layers={y}" for s, k, y in
             itertools.product(("three", "equal"), ("on", "off"), ("kept", "alternate"))]


def onnx_conv_sources(proto) -> dict[str, frozenset[str]]:
    """Per ``Conv`` node: the ``Conv`` nodes (or ``input``) whose outputs reach its input."""
    producer = {out: node for node in proto.graph.node for out in node.output}

    def upstream(value: str) -> frozenset[str]:
        found, stack, seen = set(), [value], set()
        while stack:
            v = stack.pop()
            if v in seen:
                continue
            seen.add(v)
            node = producer.get(v)
            if node is None:
                found.update({"input"} if v == "input" else ())
            elif node.op_type == "Conv":
                found.add(node.name)
            else:
                stack.extend(node.input)
        return frozenset(found)

    return {n.name: upstream(n.input[0]) for n in proto.graph.node if n.op_type == "Conv"}


def flat(sources: dict[str, frozenset[str]]) -> dict[str, frozenset[str]]:
    """Trace module paths (``conv/group``) in ONNX node naming (``conv_group``)."""
    return {k.replace("/", "_"): frozenset(v.replace("/", "_") for v in vs)
            for k, vs in sources.items()}


# -- the graph structure ------------------------------------------------------------------
def test_relu_group_conv_reads_its_channels_plus_the_linear_group_output():
    spec = spec_from_model_string("hrn-2x2x2x:m=8,cull=S1,thin=S2+S3+S4,reuse=4")
    src = conv_sources(spec)
    previous = {"stage3_block1_conv2", "stage3_block1_shortcut_conv"}  # the block's input
    assert src["stage3_block2_conv1/relu_group"] == previous | {"stage3_block2_conv1/linear_group"}
    # the reuse group is the identity: the linear group reads only the block input
    assert src["stage3_block2_conv1/linear_group"] == previous
    # a strided layer has no links: every group reads the previous block only
    first = {k: v for k, v in src.items() if k.startswith("stage3_block1_conv1/")}
    assert set(first) == {f"stage3_block1_conv1/{g}" for g in ("reuse", "linear_group",
                                                                 "relu_group")}
    assert all(not any(s.startswith("stage3_block1_conv1") for s in v) for v in first.values())


def test_without_the_link_the_relu_group_reads_only_its_own_channels():
    spec = spec_from_model_string("hrn-2x2x2x:m=8,cull=S1,thin=S2+S3+S4,reuse=4,reuse_link=off")
    src = conv_sources(spec)
    assert src["stage3_block2_conv1/relu_group"] == {"stage3_block1_conv2",
                                                      "stage3_block1_shortcut_conv"}


def test_equal_divisions_form_a_chain():
    src = conv_sources(spec_from_model_string("resnet18:m=16,reuse=4,reuse_split=equal"))
    layer = "stage2_block2_conv1"
    chain = [f"{layer}/linear_group{i}" for i in (1, 2, 3)] + [f"{layer}/relu_group"]
    for before, after in zip(chain, chain[1:]):
        assert before in src[after]
        assert not any(c in src[after] for c in chain if c != before)


def test_projection_reuse_group_feeds_the_linear_group():
    # VGG's first layer of a stage widens the channels at stride 1: the reuse group is a 1x1
    # projection whose (normalised) output is added onto the linear group's input.
    src = conv_sources(spec_from_model_string("vgg16:m=8,cull=S1,reuse=4", "cifar10"))
    assert "stage2_layer1_conv/reuse" in src["stage2_layer1_conv/linear_group"]
    assert "stage2_layer1_conv/linear_group" in src["stage2_layer1_conv/relu_group"]


@pytest.mark.parametrize("model", [
    "hrn-2x5x3x:m=8,cull=S1,thin=S2+S3+S4,reuse=4",
    "resnet18:m=8,reuse=8,reuse_split=equal",
    "vgg16:m=8,cull=S1,thin=S3,reuse=4",
])
def test_onnx_graph_is_wired_like_the_traced_model(model):
    spec, variables, _, _ = case(model)
    onnx_src = onnx_conv_sources(build_onnx(fold(spec, variables)))
    assert onnx_src == flat(conv_sources(spec))
    relus = [s for s in expand(spec).relu_sites() if s.kept and s.reuse > 1]
    assert relus  # the check covers Re2 layers


# -- Table 14 and the ablation grid -------------------------------------------------------
@pytest.mark.parametrize("n", sorted(TABLE14_RELUS))
@pytest.mark.parametrize("split,link", [("three", "on"), ("equal", "on"), ("equal", "off")])
def test_table14_relu_counts(n, split, link):
    model = f"resnet18:reuse={n},reuse_split={split},reuse_link={link},reuse_layers=alternate"
    relus = count(spec_from_model_string(model, "cifar100")).relus
    assert relus == TABLE14_RELUS[n] == 557_056 - 245_760 * (n - 1) // n


def test_equal_split_is_cheaper_and_n2_is_one_layer():
    flops = {s: count(spec_from_model_string(f"resnet18:reuse=8,reuse_split={s}")).flops
             for s in ("three", "equal")}
    assert flops["equal"] < flops["three"]
    two = {s: count(spec_from_model_string(f"resnet18:reuse=2,reuse_split={s}"))
           for s in ("three", "equal")}
    assert two["three"] == two["equal"]  # N = 2: the naive two-way split either way


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_every_ablation_counts_traces_and_exports(ablation):
    model = f"resnet18:m=8,reuse=4,{ablation}"
    spec, variables, x, ref = case(model)
    c, m = count(spec), measure(spec)
    assert (m.relus, m.macs, m.params) == (c.relus, c.macs, c.params)
    proto = build_onnx(fold(spec, variables))
    assert relu_scalars(proto) == c.relus
    np.testing.assert_allclose(run_onnxruntime(proto, x), ref, rtol=0, atol=TOLERANCE)


@pytest.mark.parametrize("ablation", ABLATIONS)
def test_every_ablation_trains(ablation):
    spec = spec_from_model_string(f"hrn-2x2x2x:m=8,depths=1-1-1-1,reuse=8,{ablation}", "digits")
    model = build_model(spec)
    x = jax.random.normal(jax.random.PRNGKey(1), input_shape(spec, 8))
    y = jnp.arange(8) % spec.classes
    variables = model.init(jax.random.PRNGKey(0), x[:1])

    def loss(params):
        logits, updates = model.apply({"params": params, **{"batch_stats":
                                       variables["batch_stats"]}}, x, train=True,
                                      mutable=["batch_stats"])
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean(), updates

    (value, updates), grads = jax.value_and_grad(loss, has_aux=True)(variables["params"])
    assert np.isfinite(float(value))
    for path, g in jax.tree_util.tree_leaves_with_path(grads):
        assert float(jnp.abs(g).max()) > 0, jax.tree_util.keystr(path)  # every group learns
    # running statistics move in every group's slice of every Re2 BatchNorm (a channel passed
    # on from a BatchNorm output can keep a batch mean of exactly 0, so look at the slices)
    for conv in (c for c in expand(spec).convs() if c.reuse > 1):
        bn = conv.name.replace("conv", "bn")
        moved = np.asarray(updates["batch_stats"][bn]["mean"]) != \
            np.asarray(variables["batch_stats"][bn]["mean"])
        assert all(moved[g.out_start:g.out_stop].any() for g in conv.groups()), bn


def test_a_re2_ablation_trains_end_to_end(tmp_path):
    model = "hrn-2x2x2x:m=8,reuse=4,reuse_split=equal,reuse_link=off,reuse_layers=alternate"
    summary = train_and_evaluate(tiny_config(model=model, total_steps=3), tmp_path)
    assert summary["steps"] == 3
    assert summary["relus"] == count(spec_from_model_string(model, "digits")).relus
