"""Frontier computation, iso-accuracy / iso-cost comparisons and input parsing."""

from __future__ import annotations

import json
import math

import pytest

from hybrenet_jax.report.frontier import (METRICS, accuracy_at_cost, compare, cost_at_accuracy,
                                          pareto_front)
from hybrenet_jax.reference_data import published_points_path
from hybrenet_jax.report.points import (OURS, Point, load_published, load_results,
                                        point_from_record,
                                        published_model_string)

RELUS = METRICS["relus"]


def pt(name: str, relus: float, acc: float, method: str = "base") -> Point:
    return Point(dataset="cifar100", source="published", method=method, label=name, model=None,
                 distill="-", relus=relus, flops=1e6, accuracy=acc)


HAND = [pt("A", 10, 60), pt("B", 20, 70), pt("C", 15, 55), pt("D", 20, 65), pt("E", 40, 70),
        pt("F", 50, 80)]


def test_frontier_on_hand_made_set():
    front = pareto_front(HAND, RELUS)
    # C is beaten by A, D by B (same cost), E by B (same accuracy, more ReLUs).
    assert [p.label for p in front] == ["A", "B", "F"]
    assert pareto_front(list(reversed(HAND)), RELUS) == front
    assert pareto_front([], RELUS) == []


def test_frontier_skips_points_without_the_cost():
    latency = METRICS["latency"]
    points = [pt("x", 10, 50), Point(**{**pt("y", 5, 60).__dict__, "latency_seconds": 3.0})]
    assert [p.label for p in pareto_front(points, latency)] == ["y"]


def test_interpolation_on_log_cost():
    front = pareto_front(HAND, RELUS)
    assert cost_at_accuracy(front, 65, RELUS) == pytest.approx(math.sqrt(10 * 20))
    assert accuracy_at_cost(front, math.sqrt(10 * 20), RELUS) == pytest.approx(65)
    assert cost_at_accuracy(front, 60, RELUS) == pytest.approx(10)
    assert cost_at_accuracy(front, 85, RELUS) is None  # never reached: no extrapolation
    assert cost_at_accuracy(front, 50, RELUS) is None
    assert accuracy_at_cost(front, 5, RELUS) is None
    assert accuracy_at_cost(front, 60, RELUS) is None


def test_compare_reports_reduction_and_gain():
    baseline = pareto_front(HAND, RELUS)
    subject = [pt("S", 10, 70, OURS), pt("T", 25, 80, OURS)]
    s, t = compare(subject, baseline, "base", RELUS)
    assert s.reduction == pytest.approx(2.0)  # baseline needs 20 for 70%
    assert s.gain == pytest.approx(10.0)  # baseline has 60% at 10
    assert t.reduction == pytest.approx(2.0)  # baseline needs 50 for 80%
    expected = 70 + 10 * math.log(25 / 20) / math.log(50 / 20)
    assert t.gain == pytest.approx(80 - expected)


def test_load_results_keeps_good_lines_and_reports_bad_ones(tmp_path):
    path = tmp_path / "results.jsonl"
    lines = [
        {"model": "resnet18", "dataset": "cifar100", "relus": 557056, "flops": 5.6e8,
         "accuracy": 79.0, "distill": "KD"},
        "{not json",
        {"model": "resnet18", "dataset": "cifar100", "relus": 1, "flops": 1},  # no accuracy
        {"model": "hrn-2x5x3x", "dataset": "mnist", "relus": 1, "flops": 1, "accuracy": 50},
        {"model": "hrn-2x5x3x", "dataset": "cifar100", "relus": 1, "flops": 1, "accuracy": 150},
        [1, 2],
        "",
        {"model": "hrn-2x5x3x", "dataset": "cifar10", "relus": 186368, "flops": 1.79e8,
         "test_accuracy": 0.7534, "latency_seconds": 12.5},
    ]
    path.write_text("\n".join(l if isinstance(l, str) else json.dumps(l) for l in lines))
    points, problems = load_results([path])
    assert [p.model for p in points] == ["resnet18", "hrn-2x5x3x"]
    assert points[1].accuracy == pytest.approx(75.34)
    assert points[1].latency_seconds == 12.5 and points[1].latency_source == "given"
    assert [p.split(":")[1] for p in problems] == ["2", "3", "4", "5", "6"]
    assert "not valid JSON" in problems[0]
    assert "accuracy" in problems[1]
    assert "mnist" in problems[2] and "accepted" in problems[2]
    assert "above 100" in problems[3]
    assert "JSON object" in problems[4]


def test_accuracy_scale_comes_from_the_field_name_not_the_value():
    base = {"model": "resnet18", "dataset": "cifar100", "relus": 1, "flops": 1}
    # a broken run at 0.8% top-1 stays at 0.8%, and a fraction is read as one
    assert point_from_record({**base, "accuracy": 0.8}, "x").accuracy == pytest.approx(0.8)
    assert point_from_record({**base, "test_accuracy": 0.008}, "x").accuracy == pytest.approx(0.8)
    assert point_from_record({**base, "accuracy": 1.0}, "x").accuracy == pytest.approx(1.0)
    with pytest.raises(ValueError, match="test_accuracy=80.*fraction"):
        point_from_record({**base, "test_accuracy": 80}, "x")


@pytest.mark.parametrize("backbone, config, expected", [
    ("ResNet18", "HRN-2x5x3x m=16; S1 culled; S2-S4 thinned; Re2 4",
     "hrn-2x5x3x:m=16,cull=S1,thin=S2+S3+S4,reuse=4"),
    ("ResNet34", "HRN-4x6x3x m=12; S1-S4 thinned",
     "hrn-4x6x3x:m=12,depths=3-4-6-3,thin=S1+S2+S3+S4"),
    ("ConvNeXt-P", "S1 culled; S2+S3+S4 thinned", "convnext-p:cull=S1,thin=S2+S3+S4"),
    ("WRN22x8", "thinned then SNL", "wrn22x8"),
    ("ResNet34", "-", "resnet34"),
    ("WRN", "-", None),
    ("ResNet18", "HRN-2x5x3x m=16; magic pruning", None),
    ("VGG16", "HRN-2x5x3x m=16", None),
])
def test_published_model_strings(backbone, config, expected):
    assert published_model_string(backbone, config) == expected


def test_load_published_reference():
    points, problems = load_published(published_points_path())
    assert problems == []
    assert {p.dataset for p in points} == {"cifar100", "tinyimagenet"}
    assert {"SNL", "SENet", "HybReNet"} <= {p.method for p in points}
    wrn = [p for p in points if p.label == "WRN"]
    assert wrn and all(p.model is None for p in wrn)
    hrn = [p for p in points if p.method == "HybReNet"]
    assert all(p.model and p.model.startswith("hrn-") for p in hrn)


def test_load_published_bad_rows(tmp_path):
    path = tmp_path / "pub.csv"
    path.write_text("# comment\ndataset,method,backbone,config,relus_k,flops_m,acc,distill\n"
                    "cifar100,SNL,ResNet18,-,15,559,67.17,-\n"
                    "cifar100,SNL,ResNet18,-,lots,559,67.17,-\n"
                    "cifar100,SNL,ResNet18,-,15,559\n")
    points, problems = load_published(path)
    assert len(points) == 1 and points[0].relus == 15_000
    assert [p.split(":")[1] for p in problems] == ["4", "5"]
