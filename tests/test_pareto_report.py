"""Pareto report files, plots and the ``pareto`` / ``plot-distribution`` CLI verbs."""

from __future__ import annotations

import csv
import json
import struct

import pytest

from hybrenet_jax.cli import main
from hybrenet_jax.cost import estimate, gc_cost
from hybrenet_jax.report import PLOT_FILES, build_report
from hybrenet_jax.report import distribution
from hybrenet_jax.report.latency import he_seconds_per_flop, point_latency
from hybrenet_jax.report.plots import figure_pixels
from hybrenet_jax.report.points import Point
from hybrenet_jax.reference_data import published_points_path


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def result_line(model, dataset, acc, **extra):
    from hybrenet_jax.counts import count
    from hybrenet_jax.model_string import spec_from_model_string

    c = count(spec_from_model_string(model, dataset))
    return json.dumps({"model": model, "dataset": dataset, "relus": c.relus, "flops": c.flops,
                       "accuracy": acc, **extra})


@pytest.fixture(scope="module")
def published_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("published")
    return out, build_report([], out, published_points_path())


def test_published_points_alone(published_report):
    out, report = published_report
    assert {p.name for p in report.files} == {"pareto.md", "pareto.csv", *PLOT_FILES.values()}
    for name in PLOT_FILES.values():
        assert png_size(out / name) == figure_pixels(2)  # cifar100 + tinyimagenet panels
    text = (out / "pareto.md").read_text()
    assert report.subjects == {"cifar100": "HybReNet", "tinyimagenet": "HybReNet"}
    for heading in ("## cifar100", "## tinyimagenet", "Accuracy vs ReLUs", "Accuracy vs FLOPs",
                    "Accuracy vs estimated Delphi latency", "vs SNL: reduction at iso-accuracy",
                    "+acc at iso-ReLU"):
        assert heading in text
    rows = list(csv.DictReader((out / "pareto.csv").open()))
    assert len(rows) == len(report.points) == 92
    assert all(float(r["latency_seconds"]) > 0 for r in rows)
    assert any(r["latency_source"] == "fallback" for r in rows)  # the 'WRN' SNL row
    assert any(r["method_frontier_relus"] == "1" for r in rows)


def test_latency_of_points():
    hrn = Point("cifar100", "published", "HybReNet", "x", "hrn-2x5x3x:cull=S1,thin=S2+S3+S4",
                "KD", relus=52_224, flops=1.78e8, accuracy=75.0)
    seconds, source, _ = point_latency(hrn)
    cost = estimate(hrn.model, "cifar100")
    assert source == "model"
    assert seconds == pytest.approx(cost.he_seconds + cost.client_he_seconds
                                    + gc_cost(52_224).seconds)
    unknown = Point("cifar100", "published", "SNL", "WRN", None, "-", relus=1000, flops=2e9,
                    accuracy=70.0)
    seconds, source, _ = point_latency(unknown)
    assert source == "fallback"
    assert seconds == pytest.approx(2e9 * he_seconds_per_flop("cifar100") + gc_cost(1000).seconds)


def test_cli_with_results_and_bad_lines(tmp_path, capsys):
    results = tmp_path / "results.jsonl"
    results.write_text("\n".join([
        result_line("hrn-2x5x3x:cull=S1,thin=S2+S3+S4", "cifar100", 77.5, distill="KD"),
        '{"model": "resnet18"',
        result_line("hrn-2x5x3x:m=8,cull=S1,thin=S2+S3+S4", "cifar100", 0.73),
        result_line("resnet18", "cifar100", 79.0, latency_seconds=400.0),
    ]) + "\n")
    out = tmp_path / "report"
    code = main(["pareto", str(results), "--out", str(out)])  # the packaged published points
    captured = capsys.readouterr()
    assert code == 0
    assert f"{results}:2: not valid JSON" in captured.err
    assert "1 bad line(s) skipped" in captured.out
    text = (out / "pareto.md").read_text()
    assert "Frontier of **ours**" in text and "vs HybReNet" in text
    rows = [r for r in csv.DictReader((out / "pareto.csv").open()) if r["source"] == "ours"]
    assert len(rows) == 3
    given = next(r for r in rows if r["model"] == "resnet18")
    assert (float(given["latency_seconds"]), given["latency_source"]) == (400.0, "given")
    assert png_size(out / "relu_accuracy.png") == figure_pixels(2)  # our cifar100 + tinyimagenet


def test_cli_no_points_and_missing_file(tmp_path, capsys):
    assert main(["pareto", "--no-published", "--out", str(tmp_path / "o")]) == 2
    assert "no usable points" in capsys.readouterr().err
    assert main(["pareto", str(tmp_path / "missing.jsonl"), "--no-published",
                 "--out", str(tmp_path / "o")]) == 2
    assert "cannot read results file" in capsys.readouterr().err
    assert main(["pareto", "--published", str(tmp_path / "nope.csv"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "--no-published" in capsys.readouterr().err


def test_plot_distribution(tmp_path, capsys):
    out = tmp_path / "dist.png"
    models = ["resnet18", "hrn-5x5x3x", "hrn-2x5x3x:cull=S1,thin=S2+S3+S4"]
    assert main(["plot-distribution", *models, "--out", str(out),
                 "--order", "S3,S2,S4,S1"]) == 0
    assert png_size(out) == distribution.figure_pixels(3)
    assert out.stat().st_size > 10_000
    relu_share, flops_share = distribution.stage_shares(["resnet18"], "cifar100")[0]
    assert relu_share == pytest.approx([58.82, 23.53, 11.76, 5.88], abs=0.01)
    assert sum(flops_share) == pytest.approx(100.0)


@pytest.mark.parametrize("order, message", [
    ("S3,S2,S1", "exactly once"), ("S3,S2,S4,S4", "exactly once"), ("S3,S2,S4,S9", "S9"),
])
def test_plot_distribution_bad_order(tmp_path, capsys, order, message):
    assert main(["plot-distribution", "resnet18", "--out", str(tmp_path / "d.png"),
                 "--order", order]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "d.png").exists()
