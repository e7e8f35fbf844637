"""Whole-network Delphi cost, GC model and the ``hybrenet cost`` CLI."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from hybrenet_jax.architecture import Conv, Dense, expand
from hybrenet_jax.cli import main
from hybrenet_jax.counts import count
from hybrenet_jax.cost import (CostModelError, HeOps, conv_ops, estimate, gc_cost,
                               load_calibration)
from hybrenet_jax.cost.gc import DEVICE_NAMES
from hybrenet_jax.cost.network import LinearCost, ReluCost
from hybrenet_jax.model_string import spec_from_model_string

ROOT = pathlib.Path(__file__).resolve().parents[1]
REUSE = "hrn-2x5x3x:cull=S1,thin=S2+S3+S4,reuse=4"


def test_gc_is_linear_in_relus_and_divided_by_threads():
    one, two = gc_cost(10_000), gc_cost(20_000)
    for field in ("garble_seconds", "evaluate_seconds", "storage_bytes", "offline_bytes",
                  "online_bytes"):
        assert getattr(two, field) == pytest.approx(2 * getattr(one, field))
    assert gc_cost(0).seconds == 0.0
    assert gc_cost(1000, threads=1).seconds == pytest.approx(4 * gc_cost(1000, threads=4).seconds)


def test_device_names_match_calibration():
    assert sorted(load_calibration().devices) == sorted(DEVICE_NAMES)


def test_gc_per_relu_matches_paper_setup():
    # Server garbling on the EPYC + client evaluation on the Atom, 4 threads: ~112 us per ReLU.
    per_relu = gc_cost(1_000_000, threads=4, client_device="atom").seconds / 1e6
    assert per_relu == pytest.approx(112e-6, rel=0.02)
    assert gc_cost(1000, client_device="epyc").seconds < gc_cost(1000).seconds


@pytest.mark.parametrize("kwargs, match", [
    ({"threads": 0}, "threads"), ({"threads": 2.5}, "threads"),
    ({"client_device": "phone"}, "accepted: atom, epyc"),
])
def test_gc_bad_arguments(kwargs, match):
    with pytest.raises(CostModelError, match=match):
        gc_cost(100, **kwargs)
    with pytest.raises(CostModelError, match="relus"):
        gc_cost(-1)


def test_resnet18_totals_are_consistent():
    cost = estimate("resnet18", "cifar100")
    counts = count(spec_from_model_string("resnet18"))
    assert (cost.relus, cost.flops) == (counts.relus, counts.flops)
    linear = [r for r in cost.layers if isinstance(r, LinearCost)]
    relus = [r for r in cost.layers if isinstance(r, ReluCost)]
    arch = expand(spec_from_model_string("resnet18"))
    assert len(linear) == sum(isinstance(l, (Conv, Dense)) for l in arch.layers())
    assert cost.he_seconds == pytest.approx(sum(r.he_seconds for r in linear))
    assert sum(r.relus for r in relus) == cost.relus
    assert sum(cost.stage_he_seconds) == pytest.approx(cost.he_seconds)
    assert cost.total_seconds == pytest.approx(
        cost.he_seconds + cost.client_he_seconds + cost.gc_seconds)
    assert cost.offline_seconds + cost.online_seconds == pytest.approx(cost.total_seconds)
    assert cost.gc_storage_bytes == pytest.approx(cost.relus * 17072, rel=1e-3)


def test_strided_conv_costs_the_stride_one_conv_at_input_resolution():
    cost = estimate("resnet18", "cifar100")
    layer = next(r for r in cost.layers if r.name == "stage2_block1_conv1")
    assert (layer.stride, layer.in_hw) == (2, 32)
    assert layer.ops == conv_ops(64, 128, 3, 32)
    assert layer.he_seconds == pytest.approx(load_calibration().he_seconds(layer.ops))


def test_grouped_convs_switch():
    grouped = estimate(REUSE)
    dense = estimate(REUSE, dense_grouped=True)
    assert grouped.relus == dense.relus
    layer = next(r for r in grouped.layers if isinstance(r, LinearCost) and len(r.groups) > 1)
    dense_layer = next(r for r in dense.layers if r.name == layer.name)
    assert dense_layer.groups == ((layer.in_ch, layer.out_ch, layer.kernel),)
    assert layer.ops == sum((conv_ops(ci, co, k, layer.in_hw) for ci, co, k in layer.groups),
                            HeOps())
    assert dense_layer.ops == conv_ops(layer.in_ch, layer.out_ch, layer.kernel, layer.in_hw)
    assert grouped.he_seconds != pytest.approx(dense.he_seconds)


def test_estimate_rejects_bad_requests():
    with pytest.raises(CostModelError, match="threads"):
        estimate("resnet18", threads=0)
    with pytest.raises(CostModelError, match="accepted"):
        estimate("resnet18", client_device="laptop")


def test_cli_json_and_per_layer(capsys):
    assert main(["cost", "resnet18", REUSE, "--json", "--per-layer", "--threads", "2"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    records = [json.loads(line) for line in lines]
    for rec in records:
        for field in ("he_seconds", "gc_seconds", "total_seconds", "relus", "flops"):
            assert field in rec
        assert rec["threads"] == 2
        kinds = {layer["kind"] for layer in rec["layers"]}
        assert kinds == {"conv", "fc", "relu"}
    assert records[0]["relus"] == 557056


def test_cli_text_table_and_errors(capsys):
    assert main(["cost", "resnet18", "--dense-grouped"]) == 0
    out = capsys.readouterr().out
    assert "resnet18" in out and "HE (s)" in out and "dense" in out
    assert main(["cost", "resnet99"]) == 2
    assert "unknown network name" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["cost", "resnet18", "--threads", "zero"])
    assert exc.value.code == 2


def test_module_entry_point():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "hybrenet_jax", "cost", "resnet32",
                           "--dataset", "cifar10", "--json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, check=True, timeout=120)
    rec = json.loads(proc.stdout)
    assert rec["model"] == "resnet32" and rec["relus"] == 303104
    assert rec["total_seconds"] > rec["he_seconds"] > 0
