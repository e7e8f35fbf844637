"""ReLU equalization, capacity-criticality, Algorithm 2 and the criticality metric."""

from __future__ import annotations

import itertools
import json

import pytest

from hybrenet_jax.design import (_follows, _stage_weights, capacity_criticality, criticality,
                                 criticality_order, equalize_depth, equalize_width, parse_order,
                                 relu_optimization_plan)
from hybrenet_jax.errors import DesignError


def names(cands):
    return {c.name for c in cands}


def test_resnet18_order_s3_s2_s4_s1_gives_exactly_the_four_hrns():
    got = names(equalize_width((2, 2, 2, 2), "S3,S2,S4,S1"))
    assert got == {"hrn-5x5x3x", "hrn-5x7x2x", "hrn-6x6x2x", "hrn-7x5x2x"}


def test_resnet34_solutions_include_the_papers_hrns():
    got = names(equalize_width((3, 4, 6, 3), "S3>S2>S4>S1"))
    assert {"hrn-4x6x3x", "hrn-4x9x2x"} <= got


def test_altered_order_gives_smallest_beta_per_gamma():
    assert names(equalize_width((2, 2, 2, 2), "S3,S4,S2,S1")) == {"hrn-5x6x3x", "hrn-5x9x2x"}


def test_every_candidate_satisfies_the_order_strictly_and_alpha_is_smallest():
    depths, order = (3, 4, 6, 3), (3, 2, 4, 1)
    for c in equalize_width(depths, order):
        counts = c.counts.stage_relus
        # the stem is ignored by the inequalities; check the block ReLUs of each stage
        stem = 16 * 32 * 32
        block = [counts[0] - stem, *counts[1:]]
        assert all(block[a - 1] > block[b - 1] for a, b in zip(order, order[1:])), c.name
        smaller = (c.multipliers[0] - 1, *c.multipliers[1:])
        assert smaller[0] < 2 or not _follows(_stage_weights(depths, smaller), order)


def test_brute_force_agrees_on_resnet18():
    # independent check: enumerate all (alpha, beta, gamma) in 2..20 and keep, per (beta, gamma),
    # the smallest feasible alpha
    order = (3, 2, 4, 1)
    best = {}
    for a, b, g in itertools.product(range(2, 21), repeat=3):
        s = [2.0, 2 * a / 4, 2 * a * b / 16, 2 * a * b * g / 64]
        if all(s[x - 1] > s[y - 1] for x, y in zip(order, order[1:])):
            best.setdefault((b, g), a)
    expected = {f"hrn-{a}x{b}x{g}x" for (b, g), a in best.items()}
    assert names(equalize_width((2, 2, 2, 2), order)) == expected


def test_candidates_ranked_by_flops_and_carry_counts():
    cands = equalize_width((2, 2, 2, 2), "S3,S2,S4,S1")
    flops = [c.counts.flops for c in cands]
    assert flops == sorted(flops)
    assert cands[0].as_dict()["stage_relus"] == [81_920, 81_920, 102_400, 76_800]


def test_capacity_criticality_sets_alpha_2():
    cands = capacity_criticality(equalize_width((2, 2, 2, 2), "S3,S2,S4,S1"))
    assert names(cands) == {"hrn-2x5x3x", "hrn-2x7x2x", "hrn-2x6x2x", "hrn-2x5x2x"}


def test_equalize_depth_is_minimal():
    (c,) = equalize_depth((2, 2, 2), "S3,S2,S4,S1")
    assert c.depths == (1, 3, 7, 9)
    w = _stage_weights(c.depths, (2, 2, 2))
    assert w[2] > w[1] > w[3] > w[0]
    for k in range(4):  # lowering any depth breaks the order
        lower = list(c.depths)
        lower[k] -= 1
        assert lower[k] == 0 or not _follows(_stage_weights(lower, (2, 2, 2)), (3, 2, 4, 1))


def test_five_stage_equalization_works():
    cands = equalize_width((2, 2, 2, 2, 2), "S3,S2,S4,S5,S1", bound=24)
    assert cands
    for c in cands:
        w = _stage_weights(c.depths, c.multipliers)
        assert w[2] > w[1] > w[3] > w[4] > w[0]


@pytest.mark.parametrize("order,fragment", [
    ("S3,S2,S4", "must name each of the 4 stages exactly once"),
    ("S3,S3,S2,S1", "must name each of the 4 stages exactly once"),
    ("S3,S2,S9,S1", "stage 'S9' does not exist"),
])
def test_bad_orders_are_rejected(order, fragment):
    with pytest.raises(Exception) as err:
        equalize_width((2, 2, 2, 2), order)
    assert fragment in str(err.value)


def test_impossible_order_is_a_design_error():
    # S2 (1 block) > S3 (8 blocks) needs beta < 1/2: impossible with multipliers >= 2.
    with pytest.raises(DesignError, match="no integer stage multipliers"):
        equalize_width((2, 1, 8, 2), "S2,S3,S4,S1")


# -- criticality (spec §4) ----------------------------------------------------------------
def test_criticality_resnet18_example():
    c = criticality([52.67, 62.10, 64.64, 59.70], [81_920, 32_768, 16_384, 8_192])
    assert [round(x, 2) for x in c] == [0.0, 7.39, 9.84, 6.07]
    assert criticality_order(c) == (3, 2, 4, 1)


def test_criticality_hrn_example():
    c = criticality([52.41, 67.55, 70.97, 65.59], [81_920, 81_920, 102_400, 76_800])
    assert [round(x, 2) for x in c] == [0.0, 11.12, 13.42, 9.73]


def test_criticality_rejects_mismatched_inputs():
    with pytest.raises(DesignError, match="one accuracy and one ReLU count per stage"):
        criticality([1.0, 2.0], [1000])


def test_parse_order_accepts_both_separators():
    assert parse_order("S3>S2>S4>S1", 4) == parse_order("s3, s2, s4, s1", 4) == (3, 2, 4, 1)


# -- Algorithm 2 ---------------------------------------------------------------------------
def test_plan_culls_stage1_when_it_dominates():
    entries, skipped = relu_optimization_plan("hrn-2x5x3x")
    assert not skipped
    got = {e.label: (e.model, round(e.counts.relus / 1e3, 1)) for e in entries}
    assert got["culled S1, thinned"] == ("hrn-2x5x3x:cull=S1,thin=S2+S3+S4", 52.2)
    assert got["culled S1, thinned + ScaleCh 0.5"][1] == 26.1
    assert got["culled S1, thinned + Re2 4"][1] == pytest.approx(13.1, abs=0.1)
    assert got["culled S1, thinned + Re2 8"][1] == pytest.approx(6.5, abs=0.1)
    assert got["culled S1, thinned + Re2 16"][1] == pytest.approx(3.2, abs=0.1)
    assert len(entries) == 6


def test_plan_thins_every_stage_when_stage1_does_not_dominate():
    entries, _ = relu_optimization_plan("hrn-5x5x3x")
    labels = [e.label for e in entries]
    assert labels == ["base", "thinned", "thinned + ScaleCh 0.5", "thinned + Re2 4",
                      "thinned + Re2 8", "thinned + Re2 16"]
    assert round(entries[1].counts.relus / 1e3, 1) == 163.3


def test_plan_reports_variants_it_cannot_build():
    entries, skipped = relu_optimization_plan("hrn-2x5x3x:m=12")
    assert any("Re2 8" in s and "does not divide" in s for s in skipped)
    assert any(e.label.endswith("ScaleCh 0.5") for e in entries)  # m=6 is fine


def test_depth_equalization_solves_the_inequality_the_papers_fig16_tuples_break():
    """`--by depth` returns 1-3-7-9 for BaseCh; the paper's Fig. 16 tuples violate the order."""
    best = equalize_depth((2, 2, 2), "S3,S2,S4,S1")[0]
    assert best.depths == (1, 3, 7, 9)
    order = parse_order("S3,S2,S4,S1", 4)
    assert _follows(_stage_weights((1, 3, 7, 9), (2, 2, 2)), order)
    for depths in ((1, 5, 5, 3), (1, 5, 7, 2), (1, 6, 6, 2), (1, 7, 5, 2)):
        assert not _follows(_stage_weights(depths, (2, 2, 2)), order)


def test_design_by_depth_prints_the_fig16_note(capsys):
    from hybrenet_jax.cli import main

    assert main(["design", "--by", "depth", "--order", "S3,S2,S4,S1"]) == 0
    out = capsys.readouterr().out
    assert "1-3-7-9" in out and "Fig. 16" in out and "S2 = 2.5 > S3 = 1.25" in out
    assert main(["design", "--by", "depth", "--order", "S3,S2,S4,S1", "--json"]) == 0
    assert "Fig. 16" in json.loads(capsys.readouterr().out)["note"]
    assert main(["design", "--order", "S3,S2,S4,S1"]) == 0
    assert "Fig. 16" not in capsys.readouterr().out  # width equalization: no such note
