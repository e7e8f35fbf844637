"""The ``hybrenet`` CLI end to end: count, design, plan, help and errors."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from hybrenet_jax.cli import VERBS, main

ROOT = pathlib.Path(__file__).resolve().parents[1]


def run_cli(capsys, *argv):
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def json_lines(text):
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_count_json_has_required_fields(capsys):
    code, out, _ = run_cli(capsys, "count", "resnet18", "hrn-5x5x3x", "--json")
    assert code == 0
    recs = json_lines(out)
    assert [r["model"] for r in recs] == ["resnet18", "hrn-5x5x3x"]
    for key in ("model", "dataset", "relus", "stage_relus", "flops", "macs", "params"):
        assert key in recs[0]
    assert recs[0]["relus"] == 557_056 and recs[0]["stage_relus"][0] == 327_680
    assert recs[1]["dataset"] == "cifar100"


def test_count_table_shows_shares_and_mflops(capsys):
    code, out, _ = run_cli(capsys, "count", "resnet18:m=32", "--dataset", "cifar100")
    assert code == 0
    assert "58.8/23.5/11.8/5.9" in out
    assert "139.91" in out  # FLOPs in M
    assert "278.53" in out  # ReLUs in K


def test_count_tinyimagenet(capsys):
    _, out, _ = run_cli(capsys, "count", "resnet18", "--dataset", "tinyimagenet", "--json")
    (rec,) = json_lines(out)
    assert rec["relus"] == 4 * 557_056 and rec["dataset"] == "tinyimagenet"


def test_design_json(capsys):
    code, out, _ = run_cli(capsys, "design", "--depths", "2-2-2-2", "--order", "S3,S2,S4,S1",
                           "--json")
    assert code == 0
    data = json.loads(out)
    cands = data["candidates"]
    assert {c["name"] for c in cands} == {"hrn-5x5x3x", "hrn-5x7x2x", "hrn-6x6x2x",
                                          "hrn-7x5x2x"}
    top = next(c for c in cands if c["name"] == "hrn-5x5x3x")
    assert (top["alpha"], top["beta"], top["gamma"]) == (5, 5, 3)
    assert top["stage_relus"] == [81_920, 81_920, 102_400, 76_800]
    assert [c["flops"] for c in cands] == sorted(c["flops"] for c in cands)
    assert {c["name"] for c in data["capacity_criticality"]} == {
        "hrn-2x5x3x", "hrn-2x7x2x", "hrn-2x6x2x", "hrn-2x5x2x"}


def test_design_table_and_depth_mode(capsys):
    code, out, _ = run_cli(capsys, "design", "--order", "S3,S2,S4,S1")
    assert code == 0 and "hrn-5x5x3x" in out and "capacity-criticality" in out
    code, out, _ = run_cli(capsys, "design", "--by", "depth", "--order", "S3,S2,S4,S1",
                           "--json")
    assert code == 0
    assert json.loads(out)["candidates"][0]["depths"] == [1, 3, 7, 9]


def test_plan_json(capsys):
    code, out, _ = run_cli(capsys, "plan", "hrn-2x5x3x", "--json")
    assert code == 0
    recs = json_lines(out)
    assert [round(r["relus"] / 1e3, 1) for r in recs] == [186.4, 52.2, 26.1, 13.1, 6.5, 3.3]
    assert recs[1]["model"] == "hrn-2x5x3x:cull=S1,thin=S2+S3+S4"


@pytest.mark.parametrize("argv,fragment", [
    (["count", "resnet18:m=0"], "m='0' must be a positive integer"),
    (["count", "hrn-2x5x3x:bogus=1"], "unknown key 'bogus'"),
    (["design", "--order", "S3,S2"], "must name each of the 4 stages exactly once"),
    (["design", "--depths", "2-1-8-2", "--order", "S2,S3,S4,S1"], "no integer stage multipliers"),
    (["plan", "nonet"], "unknown network name 'nonet'"),
])
def test_user_errors_exit_2_with_one_clear_message(capsys, argv, fragment):
    code, out, err = run_cli(capsys, *argv)
    assert code == 2
    assert fragment in err
    assert "Traceback" not in err and out == ""


def test_argparse_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["count", "resnet18", "--dataset", "imagenet"])
    assert exc.value.code == 2
    assert "invalid choice: 'imagenet'" in capsys.readouterr().err


def test_module_entry_point_help_lists_every_verb():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "hybrenet_jax", "--help"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0
    for verb in VERBS:
        assert verb.replace("_", "-") in proc.stdout
    assert "examples:" in proc.stdout


def test_module_entry_point_error_exit_code():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-m", "hybrenet_jax", "count", "resnet18:cull=S9"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "does not exist in a 4-stage network" in proc.stderr


def test_count_measure_adds_traced_counts(capsys):
    code, out, _ = run_cli(capsys, "count", "hrn-2x5x3x:cull=S1,thin=S2+S3+S4,reuse=4",
                           "--measure", "--json")
    assert code == 0
    (rec,) = json_lines(out)
    assert rec["measured_relus"] == rec["relus"] == 13_056
    assert rec["measured_macs"] == rec["macs"] and rec["measured_params"] == rec["params"]


def test_summary_lists_layers_with_relu_states(capsys):
    code, out, _ = run_cli(capsys, "summary", "resnet20:thin=S1", "--relus-only", "--json")
    assert code == 0
    rows = json_lines(out)
    assert rows[0]["layer"] == "stem_relu" and rows[0]["state"] == "thinned"
    assert sum(r["relus"] for r in rows) == 16_384 * 3 + 49_152 + 24_576
    code, out, _ = run_cli(capsys, "summary", "hrn-2x5x3x:cull=S1,thin=S2+S3+S4,reuse=4")
    assert "Re2-4" in out and "culled" in out and "kept (1/4)" in out
    assert "13,056 ReLUs kept" in out
