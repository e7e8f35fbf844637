"""Analytic counts against the DeepReShape paper's tables (spec §3 and §6)."""

from __future__ import annotations

import csv
import re

import pytest

from hybrenet_jax.counts import count
from hybrenet_jax.model_string import spec_from_model_string
from hybrenet_jax.reference_data import published_points_path


def counts(model: str, dataset: str = "cifar100"):
    return count(spec_from_model_string(model, dataset))


def test_resnet18_stage_relus_exact():
    c = counts("resnet18")
    assert c.relus == 557_056
    assert c.stage_relus == (327_680, 131_072, 65_536, 32_768)


def test_wrn22x8_relus_and_stage1_share():
    c = counts("wrn22x8")
    assert c.relus == 1_392_640
    assert round(c.stage_relu_share[0], 1) == 48.2


def test_resnet32_relus():
    assert counts("resnet32").relus == 303_104


def test_resnet18_params_match_the_standard_cifar100_model():
    # The widely used CIFAR ResNet18 (1x1 conv shortcuts, 100 classes) has 11,220,132 params.
    assert counts("resnet18").params == 11_220_132


# (model, FLOPs M, ReLUs K, stage shares %) from spec §3, CIFAR-100.
SPEC_TABLE_3 = [
    ("wrn22x8", 2461, 1393, None),
    ("resnet18", 559, 557, None),
    ("hrn-5x5x3x", 1055, 343, None),
    ("hrn-5x7x2x", 1273, 379, None),
    ("hrn-6x6x2x", 1368, 401, None),
    ("hrn-7x5x2x", 1328, 412, None),
    ("hrn-2x5x3x", 179, 186, None),
    ("hrn-2x7x2x", 213, 201, None),
    ("hrn-2x6x2x", 163, 188, None),
    ("hrn-2x5x2x", 119, 176, None),
    ("resnet18:m=32", 141, 279, (58.82, 23.53, 11.76, 5.88)),
    ("stagech-4x4x4x", 661, 279, (29.41, 23.53, 23.53, 23.53)),
    ("hrn-3x7x2x", 466, 260, (31.50, 18.90, 33.07, 16.54)),
]


@pytest.mark.parametrize("model,flops_m,relus_k,shares", SPEC_TABLE_3)
def test_spec_section3_table(model, flops_m, relus_k, shares):
    c = counts(model)
    assert round(c.relus / 1e3) == relus_k
    assert c.flops / 1e6 == pytest.approx(flops_m, rel=0.01)
    if shares:
        assert [round(s, 2) for s in c.stage_relu_share] == list(shares)


# (model, ReLUs K, FLOPs M) from spec §6 (ReLU-optimized HRNs, CIFAR-100).
SPEC_TABLE_6 = [
    ("hrn-5x5x3x:m=16,thin=S1+S2+S3+S4", 163.3, 1055.4),
    ("hrn-2x5x3x:m=32,cull=S1,thin=S2+S3+S4", 104.4, 714.1),
    ("hrn-2x5x3x:m=16,cull=S1,thin=S2+S3+S4", 52.2, 178.5),
    ("hrn-2x5x3x:m=8,cull=S1,thin=S2+S3+S4", 26.1, 44.6),
]


@pytest.mark.parametrize("model,relus_k,flops_m", SPEC_TABLE_6)
def test_spec_section6_table(model, relus_k, flops_m):
    c = counts(model)
    assert round(c.relus / 1e3, 1) == relus_k
    assert c.flops / 1e6 == pytest.approx(flops_m, rel=0.01)


@pytest.mark.parametrize("reuse,relus_k", [(4, 13.1), (8, 6.5), (16, 3.2)])
def test_spec_section6_reuse_relus(reuse, relus_k):
    c = counts(f"hrn-2x5x3x:cull=S1,thin=S2+S3+S4,reuse={reuse}")
    assert c.relus / 1e3 == pytest.approx(relus_k, abs=0.1)  # the paper truncates 3.264 to 3.2
    assert c.relus * reuse == counts("hrn-2x5x3x:cull=S1,thin=S2+S3+S4").relus


def test_reuse_flops_fall_below_base_and_rise_with_n():
    base = counts("hrn-2x5x3x:cull=S1,thin=S2+S3+S4").flops
    flops = [counts(f"hrn-2x5x3x:cull=S1,thin=S2+S3+S4,reuse={n}").flops for n in (4, 8, 16)]
    assert flops[0] < flops[1] < flops[2] < base


# Re2 FLOPs: (dataset, model, paper M, ours M) for the paper's Re2 rows (Tables 5, 11, 12).
# docs/relu_reuse.md discusses the gap: the ResNet34-based rows agree within 1.5%; the
# ResNet18-based rows are 4.9-9.5% above the paper (the paper saves ~1.26x more there).
R18, R34 = "hrn-2x5x3x:cull=S1,thin=S2+S3+S4", "hrn-2x6x3x:depths=3-4-6-3,cull=S1,thin=S2+S3+S4"
PAPER_RE2_FLOPS = [
    ("cifar100", f"{R18},reuse=4", 121.6, 133.1),
    ("cifar100", f"{R18},reuse=8", 130.5, 139.3),
    ("cifar100", f"{R18},reuse=16", 137.2, 143.9),
    ("tinyimagenet", f"{R18},reuse=4", 486.3, 532.5),
    ("cifar100", f"{R34},reuse=4", 370.1, 369.8),
    ("cifar100", f"{R34},reuse=8", 394.8, 391.3),
    ("cifar100", f"{R34},reuse=16", 413.4, 407.4),
    ("tinyimagenet", f"{R34},reuse=4", 1480.1, 1478.9),
    ("tinyimagenet", f"{R34},reuse=8", 1579.2, 1564.9),
    ("tinyimagenet", f"{R34},reuse=16", 1653.5, 1629.5),
]


@pytest.mark.parametrize("dataset,model,paper_m,ours_m", PAPER_RE2_FLOPS)
def test_re2_flops_against_the_paper(dataset, model, paper_m, ours_m):
    flops = counts(model, dataset).flops / 1e6
    assert round(flops, 1) == ours_m  # the documented value
    gap = flops / paper_m - 1
    if "3-4-6-3" in model:
        assert -0.016 < gap < 0.001
    else:
        assert 0.048 < gap < 0.096
    # the Res2Net links cost nothing: with or without them, the same FLOPs
    assert counts(f"{model},reuse_link=off", dataset).flops == counts(model, dataset).flops


@pytest.mark.parametrize("model,dataset,flops_m", [
    ("resnet18", "tinyimagenet", 2227),
    ("resnet34", "cifar100", 1162),
    ("resnet34", "tinyimagenet", 4646),
])
def test_base_network_flops_within_0_1_percent(model, dataset, flops_m):
    assert counts(model, dataset).flops / 1e6 == pytest.approx(flops_m, rel=0.001)


def test_criticality_example_relu_counts():
    # Spec §4: ResNet18(m=16) stage ReLUs 81.92K / 32.77K / 16.38K / 8.19K;
    # HRN-5x5x3x 81.92K / 81.92K / 102.40K / 76.80K.
    assert counts("resnet18:m=16").stage_relus == (81_920, 32_768, 16_384, 8_192)
    assert counts("hrn-5x5x3x").stage_relus == (81_920, 81_920, 102_400, 76_800)


def test_channel_lists_of_named_hrns():
    assert spec_from_model_string("hrn-5x5x3x").widths == (16, 80, 400, 1200)
    assert spec_from_model_string("hrn-2x5x3x").widths == (16, 32, 160, 480)
    assert spec_from_model_string("hrn-2x6x3x:m=16").widths == (16, 32, 192, 576)


# -- the published points CSV (HybReNet and ConvNeXt rows) ---------------------------------
def _model_from_config(backbone: str, config: str) -> str:
    """Turn a CSV config like 'HRN-2x5x3x m=16; S1 culled; S2-S4 thinned; Re2 4' into a string."""
    opts = []
    if backbone.startswith("ConvNeXt"):
        name = backbone.lower()
    else:
        name = re.search(r"HRN-(\S+)", config).group(1).lower()
        name = "hrn-" + name
        if m := re.search(r"m=(\d+)", config):
            opts.append(f"m={m.group(1)}")
        if backbone == "ResNet34":
            opts.append("depths=3-4-6-3")
    if "S1 culled" in config:
        opts.append("cull=S1")
    if thin := re.search(r"(S\d)[-+](?:S\d\+)*(S\d) thinned", config):
        lo, hi = int(thin.group(1)[1]), int(thin.group(2)[1])
        opts.append("thin=" + "+".join(f"S{s}" for s in range(lo, hi + 1)))
    if re2 := re.search(r"Re2 (\d+)", config):
        opts.append(f"reuse={re2.group(1)}")
    return name + (":" + ",".join(opts) if opts else "")


# The paper prints 16.6K for ResNet34 HRN-2x6x3x Re2 8, but its own base row (134.1K) divided
# by 8 is 16.8K, as its Re2 4 (33.5K) and Re2 16 (8.3K) rows confirm: a typo in the paper.
PAPER_TYPOS = {("cifar100", "hrn-2x6x3x:m=16,depths=3-4-6-3,cull=S1,thin=S2+S3+S4,reuse=8"): 16.8}


def test_published_hybrenet_and_convnext_points():
    rows = [r for r in csv.DictReader(
        (line for line in open(published_points_path())
         if not line.startswith("#")))
        if r["method"] in ("HybReNet", "ConvNeXt")]
    assert len(rows) >= 40
    for r in rows:
        model = _model_from_config(r["backbone"], r["config"])
        c = counts(model, r["dataset"])
        expected_k = PAPER_TYPOS.get((r["dataset"], model), float(r["relus_k"]))
        # within one unit of the printed precision (the paper rounds or truncates)
        text = r["relus_k"]
        unit = 10.0 ** -(len(text.partition(".")[2]))
        assert c.relus / 1e3 == pytest.approx(expected_k, abs=unit), model
        if "Re2" in r["config"]:
            continue  # Re2 FLOPs: test_re2_flops_against_the_paper (docs/relu_reuse.md)
        tight = r["dataset"] == "tinyimagenet" or r["backbone"] != "ResNet18"
        rel = 0.001 if tight else 0.01
        assert c.flops / 1e6 == pytest.approx(float(r["flops_m"]), rel=rel), model
