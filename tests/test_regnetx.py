"""The native RegNet-X family (Radosavovic et al. 2020): structure, published counts, trace,
export, training, cost and the ReLU knobs that do or do not apply to X blocks."""

from __future__ import annotations

import math

import jax
import numpy as np
import pytest

from hybrenet_jax import data as data_lib
from hybrenet_jax import families
from hybrenet_jax.architecture import (CULLED, KEPT, THINNED, BatchNorm, Conv, ReluSite,
                                       expand)
from hybrenet_jax.cli import main
from hybrenet_jax.cost import estimate
from hybrenet_jax.cost.network import linear_cost
from hybrenet_jax.cost.constants import load_calibration
from hybrenet_jax.counts import count
from hybrenet_jax.errors import DescriptionError
from hybrenet_jax.export import apply_folded, build_onnx, fold, relu_scalars, run_onnxruntime
from hybrenet_jax.export.verify import TOLERANCE, jax_logits
from hybrenet_jax.model_string import spec_from_model_string
from hybrenet_jax.models import build_model
from hybrenet_jax.netspec import NetSpec
from hybrenet_jax.trace import measure
from conftest import sgd_step_setup
from test_export import random_variables

#: The RegNet paper's parameters (d, w_0, w_a, w_m, g) of each preset, as listed in pycls's
#: configs/dds_baselines/regnetx/RegNetX-*MF_dds_8gpu.yaml, and the published widths, depths.
PUBLISHED = {
    "regnetx-200mf": ((13, 24, 36.44, 2.49, 8), (24, 56, 152, 368), (1, 1, 4, 7)),
    "regnetx-400mf": ((22, 24, 24.48, 2.54, 16), (32, 64, 160, 384), (1, 2, 7, 12)),
    "regnetx-600mf": ((16, 48, 36.97, 2.24, 24), (48, 96, 240, 528), (1, 3, 5, 7)),
    "regnetx-800mf": ((16, 56, 35.73, 2.28, 16), (64, 128, 288, 672), (1, 3, 7, 5)),
}
#: ImageNet complexity at 224x224, 1000 classes: the rounded model-zoo figures (GF, M params)
#: and pycls's exact counts (dev/model_complexity.json; its "flops" are multiply-adds plus the
#: classifier's bias adds).
PUBLISHED_COUNTS = {
    "regnetx-200mf": (0.2, 2.7, 199_040_872, 2_684_792),
    "regnetx-400mf": (0.4, 5.2, 397_678_568, 5_157_512),
    "regnetx-600mf": (0.6, 6.2, 600_891_112, 6_196_040),
    "regnetx-800mf": (0.8, 7.3, 799_700_712, 7_259_656),
}
SMALL = "regnetx-200mf:m=8,depths=1-1-2-1"


def regnet_widths(d: int, w0: int, wa: float, wm: float, g: int, q: int = 8):
    """The paper's quantized linear parameterization (Sec. 3.3), then widths rounded to
    multiples of the group width: per-stage widths and depths."""
    per_block = []
    for j in range(d):
        u = w0 + wa * j
        s = round(math.log(u / w0) / math.log(wm))
        per_block.append(int(round(w0 * wm**s / q)) * q)
    widths = sorted(set(per_block))
    depths = [per_block.count(w) for w in widths]
    adjusted = [max(min(g, w), int(round(w / min(g, w))) * min(g, w)) for w in widths]
    return tuple(adjusted), tuple(depths)


@pytest.mark.parametrize("name", PUBLISHED)
def test_presets_are_the_published_regnetx_configurations(name):
    (d, w0, wa, wm, g), widths, depths = PUBLISHED[name]
    assert regnet_widths(d, w0, wa, wm, g) == (widths, depths)
    spec = spec_from_model_string(name)
    assert (spec.family, spec.widths, spec.depths, spec.group_width, spec.stem_width) == (
        "regnetx", widths, depths, g, 32)


def test_x_block_structure():
    spec = spec_from_model_string("regnetx-400mf")
    arch = expand(spec)
    stem = arch.blocks[0]
    assert [type(l) for l in stem.main] == [Conv, BatchNorm, ReluSite]
    assert (stem.main[0].kernel, stem.main[0].stride, stem.main[0].out_ch) == (3, 1, 32)
    blocks = [b for b in arch.blocks if b.kind == "bottleneck"]
    assert len(blocks) == sum(spec.depths)
    cin, hw = 32, 32
    for b in blocks:
        width = spec.widths[b.stage - 1]
        convs = [l for l in b.main if isinstance(l, Conv)]
        assert [(c.kernel, c.in_ch, c.out_ch) for c in convs] == [
            (1, cin, width), (3, width, width), (1, width, width)]
        assert [c.feature_groups for c in convs] == [1, width // 16, 1]
        first = b.name.endswith("block1")
        stride = 2 if first and b.stage > 1 else 1
        assert [c.stride for c in convs] == [1, stride, 1]  # stride on the 3x3 only
        assert [type(l).__name__ for l in b.main] == [
            "Conv", "BatchNorm", "ReluSite", "Conv", "BatchNorm", "ReluSite", "Conv",
            "BatchNorm"]
        # projection shortcut exactly where the shape changes, ReLU after the add
        assert bool(b.shortcut) == (stride != 1 or cin != width)
        if b.shortcut:
            assert (b.shortcut[0].kernel, b.shortcut[0].stride) == (1, stride)
        assert [type(l) for l in b.after_add] == [ReluSite]
        cin, hw = width, hw // stride
    assert arch.blocks[-1].main[0].in_hw == hw == 4  # CIFAR geometry: 32 -> 4


def test_imagenet_geometry_strides_the_stem_and_every_stage():
    spec = families.imagenet_geometry(spec_from_model_string("regnetx-200mf"))
    arch = expand(spec)
    stem = arch.blocks[0].main[0]
    assert (stem.kernel, stem.stride, stem.out_ch, stem.out_hw) == (3, 2, 32, 112)
    firsts = [b for b in arch.blocks if b.name.endswith("block1") and b.kind == "bottleneck"]
    assert [b.main[3].stride for b in firsts] == [2, 2, 2, 2]
    assert arch.blocks[-1].main[0].in_hw == 7
    assert arch.blocks[-1].main[-1].out_features == 1000
    with pytest.raises(DescriptionError, match="only regnetx"):
        families.imagenet_geometry(spec_from_model_string("resnet18"))


@pytest.mark.parametrize("name", PUBLISHED_COUNTS)
def test_counts_match_the_published_imagenet_numbers(name):
    gf, mparams, exact_flops, exact_params = PUBLISHED_COUNTS[name]
    spec = families.imagenet_geometry(spec_from_model_string(name))
    c = count(spec)
    assert c.params == exact_params
    assert c.macs + spec.classes == exact_flops  # pycls adds the classifier's bias adds
    assert round(c.macs / 1e9, 1) == gf and round(c.params / 1e6, 1) == mparams


@pytest.mark.parametrize("model,dataset", [
    ("regnetx-200mf", "cifar100"), ("regnetx-600mf:thin=S2+S3,cull=S1", "cifar10"),
    (SMALL, "tinyimagenet")])
def test_traced_counts_equal_analytic(model, dataset):
    spec = spec_from_model_string(model, dataset)
    measured, analytic = measure(spec), count(spec)
    assert (measured.relus, measured.macs, measured.params) == (
        analytic.relus, analytic.macs, analytic.params)


def test_traced_imagenet_macs_equal_published():
    spec = families.imagenet_geometry(spec_from_model_string("regnetx-200mf"))
    measured = measure(spec)
    assert measured.macs + 1000 == PUBLISHED_COUNTS["regnetx-200mf"][2]
    assert measured.params == PUBLISHED_COUNTS["regnetx-200mf"][3]


def test_thinning_keeps_the_inner_relu_and_culling_removes_all():
    arch = expand(spec_from_model_string("regnetx-400mf:cull=S1,thin=S2+S3+S4"))
    states = {s.name: s.state for s in arch.relu_sites()}
    assert states["stem_relu"] == CULLED
    assert {states[f"stage1_block1_relu{i}"] for i in (1, 2, 3)} == {CULLED}
    assert [states[f"stage3_block2_relu{i}"] for i in (1, 2, 3)] == [THINNED, KEPT, THINNED]
    spec = spec_from_model_string("regnetx-400mf:thin=S1")
    assert {s.state for s in expand(spec).relu_sites() if s.name == "stem_relu"} == {THINNED}


@pytest.mark.parametrize("model,fragment", [
    ("regnetx-200mf:reuse=4", "ReLU-reuse is not defined for RegNet-X"),
    ("regnetx-400mf:reuse=8,reuse_split=equal", "ReLU-reuse is not defined for RegNet-X"),
])
def test_relu_reuse_is_rejected_with_one_line(model, fragment, capsys):
    with pytest.raises(DescriptionError, match=fragment):
        spec_from_model_string(model)
    assert main(["count", model]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1


def test_invalid_descriptions_are_rejected():
    with pytest.raises(DescriptionError, match="does not divide"):
        families.regnetx((24, 56), (1, 1), group_width=16)
    with pytest.raises(DescriptionError, match="only the regnetx family"):
        NetSpec("resnet", 16, (16, 32), (1, 1), group_width=8)
    with pytest.raises(DescriptionError, match="geometry"):
        NetSpec("resnet", 16, (16, 32), (1, 1), geometry="imagenet")
    with pytest.raises(DescriptionError, match="positive group width"):
        NetSpec("regnetx", 32, (16, 32), (1, 1))


def test_m_scales_stem_widths_and_group_width():
    half = spec_from_model_string("regnetx-400mf:m=16")
    assert (half.stem_width, half.widths, half.group_width) == (16, (16, 32, 80, 192), 8)
    groups = [c.feature_groups for c in expand(half).convs() if c.feature_groups > 1]
    full = [c.feature_groups for c in expand(spec_from_model_string("regnetx-400mf")).convs()
            if c.feature_groups > 1]
    assert groups == full  # ScaleCh keeps the number of groups
    small = spec_from_model_string(SMALL)
    assert all(w % small.group_width == 0 for w in small.widths)


def test_onnx_and_folded_graph_match_the_jax_model():
    spec = spec_from_model_string(SMALL + ",thin=S3", "cifar10")
    variables = random_variables(spec)
    x = np.random.default_rng(1).standard_normal((2, 32, 32, 3), dtype=np.float32)
    ref = jax_logits(spec, variables, x)
    assert np.max(np.abs(ref)) > 0.1
    folded = fold(spec, variables)
    np.testing.assert_allclose(apply_folded(folded, x), ref, rtol=0, atol=TOLERANCE)
    proto = build_onnx(folded, batch=2)
    assert np.max(np.abs(run_onnxruntime(proto, x) - ref)) <= TOLERANCE
    assert relu_scalars(proto) == count(spec).relus
    groups = {n.name: {a.name: a.i for a in n.attribute}.get("group", 1)
              for n in proto.graph.node if n.op_type == "Conv"}
    expected = {c.name: c.feature_groups for c in expand(spec).convs()}
    assert groups == expected and max(groups.values()) > 1
    assert "BatchNormalization" not in {n.op_type for n in proto.graph.node}


def test_a_training_step_runs_and_learns():
    spec = spec_from_model_string(SMALL, "digits")
    mesh, state, step = sgd_step_setup(spec)
    before = jax.device_get(state.params)
    train = data_lib.load_dataset("digits", "train")
    losses = []
    for _, batch in zip(range(3), data_lib.train_batches(train, 32, seed=0, epoch=0)):
        state, metrics = step(state, data_lib.shard_batch(batch, mesh))
        losses.append(float(metrics["loss"]))
    assert int(state.step) == 3 and all(np.isfinite(losses))
    after = jax.device_get(state.params)
    kernel = "stage3_block1_conv2"
    assert after[kernel]["kernel"].shape == (3, 3, spec.group_width, spec.widths[2])
    assert not np.array_equal(before[kernel]["kernel"], after[kernel]["kernel"])


def test_cost_model_charges_grouped_convs_per_group():
    spec = spec_from_model_string("regnetx-200mf")
    cal = load_calibration()
    conv = next(c for c in expand(spec).convs() if c.feature_groups > 1)
    per_group = linear_cost(Conv("g", 1, conv.in_ch // conv.feature_groups,
                                 conv.out_ch // conv.feature_groups, 3, conv.stride,
                                 conv.in_hw), cal)
    grouped = linear_cost(conv, cal)
    assert grouped.groups == ((conv.in_ch // conv.feature_groups,
                               conv.out_ch // conv.feature_groups, 3),) * conv.feature_groups
    assert grouped.he_seconds == pytest.approx(conv.feature_groups * per_group.he_seconds)
    dense = estimate(spec, dense_grouped=True)
    assert estimate(spec).he_seconds < dense.he_seconds
    assert estimate(spec).relus == count(spec).relus


def test_torch_reference_matches():
    torch = pytest.importorskip("torch")
    from bench.torch_reference import ReferenceNet, count_parameters, load_flax_variables

    spec = spec_from_model_string(SMALL + ",thin=S2", "cifar10")
    model = ReferenceNet(spec)
    assert count_parameters(model) == count(spec).params
    assert any(isinstance(m, torch.nn.Conv2d) and m.groups > 1 for m in model.modules())
    variables = random_variables(spec, seed=3)
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
    ref = np.asarray(build_model(spec).apply(variables, x, train=False))
    load_flax_variables(model, variables)
    model.eval()
    with torch.no_grad():
        got = model(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4 * np.abs(ref).max())
