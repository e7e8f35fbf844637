"""The network description: families, model strings and clear errors for bad input."""

from __future__ import annotations

import dataclasses

import pytest

from hybrenet_jax import families
from hybrenet_jax.architecture import CULLED, KEPT, THINNED, expand, reuse_split
from hybrenet_jax.counts import count
from hybrenet_jax.errors import DescriptionError, HybrenetError, ModelStringError
from hybrenet_jax.model_string import (model_string_with, parse_model_string,
                                       spec_from_model_string)
from hybrenet_jax.netspec import NetSpec


@pytest.mark.parametrize("model,widths,depths,family", [
    ("resnet18", (64, 128, 256, 512), (2, 2, 2, 2), "resnet"),
    ("resnet34", (64, 128, 256, 512), (3, 4, 6, 3), "resnet"),
    ("resnet20", (16, 32, 64), (3, 3, 3), "resnet"),
    ("resnet32", (16, 32, 64), (5, 5, 5), "resnet"),
    ("resnet56", (16, 32, 64), (9, 9, 9), "resnet"),
    ("wrn22x8", (128, 256, 512), (3, 3, 3), "wrn"),
    ("wrn16x4", (64, 128, 256), (2, 2, 2), "wrn"),
    ("vgg16", (64, 128, 256, 512, 512), (2, 2, 3, 3, 3), "vgg"),
    ("resnet18:m=16", (16, 32, 64, 128), (2, 2, 2, 2), "resnet"),
    ("stagech-3x3x3x", (16, 48, 144, 432), (2, 2, 2, 2), "resnet"),
    ("hrn-2x6x3x:m=16,depths=3-4-6-3", (16, 32, 192, 576), (3, 4, 6, 3), "resnet"),
    ("hrn-4x4x", (16, 64, 256), (2, 2, 2), "resnet"),
    ("convnext-t", (96, 192, 384, 768), (3, 3, 9, 3), "resnet"),
    ("convnext-p", (64, 128, 256, 512), (2, 2, 6, 2), "resnet"),
    ("convnext-f", (48, 96, 192, 384), (2, 2, 6, 2), "resnet"),
    ("convnext-a", (40, 80, 160, 320), (2, 2, 6, 2), "resnet"),
    ("regnetx-400mf", (32, 64, 160, 384), (1, 2, 7, 12), "regnetx"),
    ("resnet18:widths=16-32-160-480", (16, 32, 160, 480), (2, 2, 2, 2), "resnet"),
])
def test_every_family_builds_from_a_model_string(model, widths, depths, family):
    spec = spec_from_model_string(model)
    assert (spec.widths, spec.depths, spec.family) == (widths, depths, family)
    assert spec.name == model
    assert count(spec).relus > 0


def test_dataset_sets_input_size_and_classes():
    tiny = spec_from_model_string("resnet18", "tinyimagenet")
    assert (tiny.input_size, tiny.classes) == (64, 200)
    assert spec_from_model_string("resnet18:classes=10").classes == 10
    assert count(tiny).relus == 4 * count(spec_from_model_string("resnet18")).relus


def test_layer_names_are_stable_and_readable():
    arch = expand(spec_from_model_string("resnet18"))
    names = [l.name for l in arch.layers()]
    assert names[:3] == ["stem_conv", "stem_bn", "stem_relu"]
    assert "stage2_block1_shortcut_conv" in names
    assert "stage1_block1_shortcut_conv" not in names  # identity shortcut
    assert names[-1] == "head_fc"
    assert len(names) == len(set(names))


def test_thinning_keeps_inner_relu_and_drops_stem():
    arch = expand(spec_from_model_string("resnet18:thin=S1"))
    state = {r.name: r.state for r in arch.relu_sites()}
    assert state["stem_relu"] == THINNED
    assert state["stage1_block1_relu1"] == KEPT
    assert state["stage1_block1_relu2"] == THINNED
    assert state["stage2_block1_relu2"] == KEPT


def test_thinning_halves_block_relus_culling_zeroes_a_stage():
    base = count(spec_from_model_string("hrn-5x5x3x")).stage_relus
    thin = count(spec_from_model_string("hrn-5x5x3x:thin=S2+S3")).stage_relus
    cull = count(spec_from_model_string("hrn-5x5x3x:cull=S1+S4")).stage_relus
    assert thin[1] * 2 == base[1] and thin[2] * 2 == base[2]
    assert thin[0] == base[0] and thin[3] == base[3]
    assert cull[0] == 0 and cull[3] == 0 and cull[1:3] == base[1:3]
    sites = expand(spec_from_model_string("hrn-5x5x3x:cull=S1")).relu_sites()
    assert {r.state for r in sites if r.stage == 1} == {CULLED}


def test_culled_relus_still_count_in_flops():
    base = count(spec_from_model_string("resnet18"))
    culled = count(spec_from_model_string("resnet18:cull=S1+S2+S3+S4"))
    assert culled.relus == 0
    assert culled.flops == base.flops and culled.relu_positions == base.relu_positions


def test_wrn_thinning_keeps_inner_relu_and_drops_final():
    spec = spec_from_model_string("wrn16x2:thin=S1+S2+S3")
    state = {r.name: r.state for r in expand(spec).relu_sites()}
    assert state["stage1_block1_relu1"] == THINNED
    assert state["stage1_block1_relu2"] == KEPT
    assert state["final_relu"] == THINNED


@pytest.mark.parametrize("n,split,widths", [
    (1, "three", (64,)), (2, "three", (32, 32)), (4, "three", (16, 32, 16)),
    (8, "three", (16, 40, 8)), (16, "three", (16, 44, 4)), (2, "equal", (32, 32)),
    (4, "equal", (16,) * 4), (8, "equal", (8,) * 8)])
def test_reuse_split_puts_the_relu_group_last(n, split, widths):
    assert reuse_split(64, n, split) == widths


def test_reuse_makes_convs_grouped_and_divides_relus():
    spec = spec_from_model_string("hrn-2x5x3x:cull=S1,thin=S2+S3+S4,reuse=4")
    arch = expand(spec)
    conv = next(c for c in arch.convs() if c.name == "stage3_block2_conv1")
    # [reuse 40 (identity) | linear 80 | relu 40]; the relu group reads the linear output
    assert conv.reuse == 4 and conv.group_convs() == ((80, 80, 3), (40, 40, 3))
    assert [(g.name, g.in_start, g.out_stop, g.kernel, g.link) for g in conv.groups()] == [
        ("reuse", 0, 40, 0, 0), ("linear_group", 40, 120, 3, 40), ("relu_group", 120, 160, 3, 40)]
    first = next(c for c in arch.convs() if c.name == "stage3_block1_conv1")
    assert first.group_convs()[0] == (8, 40, 1)  # reuse path needs a strided 1x1 projection
    assert all(g.link == 0 for g in first.groups())  # strided: no links across resolutions
    assert all(c.reuse == 1 for c in arch.convs() if c.stage == 1)  # culled stage
    relu = next(r for r in arch.relu_sites() if r.name == "stage3_block2_relu1")
    assert relu.relus == 160 * 8 * 8 // 4 and relu.relu_start == 120


def test_reuse_ablation_options_shape_the_groups():
    def groups(opts):
        arch = expand(spec_from_model_string(f"resnet18:m=16,reuse=4{opts}"))
        return next(c for c in arch.convs() if c.name == "stage2_block2_conv1").groups()

    equal = groups(",reuse_split=equal")
    assert [(g.name, g.in_ch, g.link) for g in equal] == [
        ("linear_group1", 8, 0), ("linear_group2", 8, 8), ("linear_group3", 8, 8),
        ("relu_group", 8, 8)]
    assert all(g.link == 0 for g in groups(",reuse_split=equal,reuse_link=off"))
    assert all(g.link == 0 for g in groups(",reuse_link=off"))
    two = [(g.name, g.in_ch, g.link) for g in expand(spec_from_model_string(
        "resnet18:m=16,reuse=2")).convs()[3].groups()]
    assert two == [("linear_group", 8, 0), ("relu_group", 8, 8)]  # the naive two-way split


def test_alternate_reuse_layers_are_conv1_of_each_block():
    arch = expand(spec_from_model_string("resnet18:m=16,reuse=4,reuse_layers=alternate"))
    reused = {c.name for c in arch.convs() if c.reuse > 1}
    assert reused == {f"stage{s}_block{b}_conv1" for s in range(1, 5) for b in (1, 2)}
    assert arch.relu_sites()[0].reuse == 1  # the stem is untouched


@pytest.mark.parametrize("text,fragment", [
    ("resnet18:reuse_split=equal", "give reuse=N too"),
    ("resnet18:reuse=4,reuse_link=maybe", "reuse_link='maybe'; accepted: on, off"),
    ("resnet18:reuse=4,reuse_layers=every", "accepted: kept, alternate"),
    ("resnet18:m=12,reuse=8,reuse_split=equal", "with reuse_split=equal every affected width"),
])
def test_reuse_ablation_errors(text, fragment):
    with pytest.raises(HybrenetError) as err:
        spec_from_model_string(text)
    assert fragment in str(err.value)


# -- model-string syntax -------------------------------------------------------------------
def test_parse_and_format_round_trip():
    text = "hrn-2x6x3x:m=16,depths=3-4-6-3,cull=S1,thin=S2+S3+S4,reuse=4"
    assert str(parse_model_string(text)) == text
    assert model_string_with("hrn-2x5x3x", reuse="8", thin="S2") == "hrn-2x5x3x:thin=S2,reuse=8"
    assert model_string_with("hrn-2x5x3x:reuse=8", reuse=None) == "hrn-2x5x3x"


@pytest.mark.parametrize("text,fragment,pointer", [
    ("hrn-2x6x3x:m=16,dpeths=3-4-6-3", "unknown key 'dpeths'", "                ^^^^^^"),
    ("resnet19", "unknown network name 'resnet19'", "^^^^^^^^"),
    ("resnet18:m", "not of the form key=value", "         ^"),
    ("resnet18:m=abc", "m='abc' must be a positive integer", "         ^^^^^"),
    ("resnet18:depths=2-x-2-2", "must be positive integers joined by '-'", None),
    ("resnet18:cull=S7", "stage 'S7' does not exist in a 4-stage network", None),
    ("resnet18:thin=X1", "unknown stage name 'X1'", None),
    ("resnet18:m=8,m=16", "key 'm' given twice", None),
    ("stagech-2x3x2x", "needs equal multipliers", None),
    ("", "empty model string", None),
])
def test_malformed_model_strings_point_at_the_bad_part(text, fragment, pointer):
    with pytest.raises(ModelStringError) as err:
        spec_from_model_string(text)
    assert fragment in str(err.value)
    if pointer:
        assert str(err.value).splitlines()[-1] == "  " + pointer


@pytest.mark.parametrize("text,fragment", [
    ("resnet18:depths=2-2-2", "widths has 4 stages but depths has 3"),
    ("hrn-0x5x3x", "alpha=0: stage multipliers must be integers >= 1"),
    ("hrn-2x6x3x:m=12,reuse=8", "reuse=8 does not divide the 12 channels"),
    ("resnet18:reuse=3", "accepted ReLU-reuse factors are 1, 2, 4, 8, 16, 32, 64"),
    ("wrn22x8:reuse=4", "pre-activation WideResNet blocks are not supported"),
    ("wrn20x8", "depth = 6n + 4"),
    ("resnet18:cull=S1,thin=S1", "both culled and thinned"),
])
def test_invalid_descriptions_name_the_field(text, fragment):
    with pytest.raises(DescriptionError) as err:
        spec_from_model_string(text)
    assert fragment in str(err.value)


@pytest.mark.parametrize("kwargs,fragment", [
    (dict(widths=(16, -32), depths=(2, 2)), "widths[S2]=-32"),
    (dict(widths=(16, 32), depths=(2, 0)), "depths[S2]=0"),
    (dict(widths=(16, 32), depths=(2, 2), family="mlp"), "family='mlp' is unknown"),
    (dict(widths=(16, 32), depths=(2, 2), culled=frozenset({3})), "culled names stage(s) S3"),
    (dict(widths=(16, 32), depths=(2, 2), input_size=31), "input_size=31"),
    (dict(widths=(16, 32), depths=(2, 2), classes=0), "classes=0"),
])
def test_netspec_validation(kwargs, fragment):
    kwargs = {"family": "resnet", "stem_width": 16, **kwargs}
    with pytest.raises(DescriptionError) as err:
        NetSpec(**kwargs)
    assert fragment in str(err.value)


def test_unknown_dataset_lists_accepted_names():
    with pytest.raises(DescriptionError, match="accepted: cifar100, cifar10, tinyimagenet"):
        spec_from_model_string("resnet18", "imagenet")


def test_spec_is_immutable_and_replace_revalidates():
    spec = families.hrn((5, 5, 3))
    with pytest.raises(Exception):
        spec.reuse = 4  # type: ignore[misc]
    with pytest.raises(DescriptionError):
        spec.replace(reuse=5)


def test_the_branch_point_is_part_of_the_description():
    """Pre-activation blocks name where their projection shortcut branches off (after the
    first BN-ReLU); post-activation ones branch at the block input. The model, the export and
    the PyTorch reference read it from there (their equivalence tests cover the wiring)."""
    from hybrenet_jax.architecture import RESIDUAL, expand

    wrn = [b for b in expand(spec_from_model_string("wrn16x2")).blocks if b.kind == "preact"]
    assert wrn and all(b.branch_after == f"{b.name}_relu1" and b.branch_index() == 2
                       for b in wrn)
    resnet = [b for b in expand(spec_from_model_string("resnet18:m=8")).blocks
              if b.kind in RESIDUAL]
    assert resnet and all(b.branch_after == "" and b.branch_index() == 0 for b in resnet)
    with pytest.raises(DescriptionError, match="not a main-path layer"):
        dataclasses.replace(wrn[0], branch_after="nowhere").branch_index()
